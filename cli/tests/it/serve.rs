//! `stowage serve` against real clients: a store filled by `stowage pull` from the real
//! registry is served, and skopeo, podman and curl pull from it.
//! Errors, clashes and shutdown are in `serve_errors.rs`.

use std::path::Path;
use std::process::Command;

use crate::support::fixtures::{
    gzip_zstd_image, sha256_digest, skopeo, tagged_index, Image, Index,
};
use crate::support::pulling::{big_image, Env, MIB};
use crate::support::serving::{curl, layout_digest, Served};
use serde_json::Value;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// What `fill` pulled into the store, as the fixtures built it.
struct Filled {
    /// A two-platform index, pulled with `--all-platforms`, as `multi/arch:1`.
    index: Index,
    /// A gzip + zstd image as `tools/gz:1`.
    image: Image,
    /// One layer of 3 MiB and a bit of noise (several read chunks) as `big/noise:2`.
    big: Image,
}

/// Pushes the fixtures to the real registry and pulls them into the env's store
/// with the stowage binary.
fn fill(env: &Env) -> Filled {
    let index = tagged_index(&env.fixtures, "multi/arch:1");
    env.push(&index.descriptor, "multi/arch:1");
    let image = gzip_zstd_image(&env.fixtures, "amd64");
    env.push(&image.descriptor, "tools/gz:1");
    let big = big_image(&env.fixtures, 3 * MIB + 12_345, 7);
    env.push(&big.descriptor, "big/noise:2");
    let registry = env.registry.addr();
    env.pull(&["--all-platforms", &format!("{registry}/multi/arch:1")]);
    env.pull(&[&format!("{registry}/tools/gz:1")]);
    env.pull(&[&format!("{registry}/big/noise:2")]);
    Filled { index, image, big }
}

/// `podman pull` into a private root; returns the image ID podman reports.
fn podman_pull(root: &Path, args: &[&str]) -> String {
    let output = Command::new("podman")
        .arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args([
            "--storage-driver",
            "vfs",
            "pull",
            "-q",
            "--tls-verify=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "podman pull {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn skopeo_and_podman_pull_what_the_registry_had() {
    let env = Env::new();
    let filled = fill(&env);
    let served = Served::start(&env.store());
    let registry = env.registry.addr();

    // The index, byte for byte as the registry had it (so the same digest).
    let original = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{registry}/multi/arch:1"),
    ]);
    let from_serve = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &served.docker("multi/arch:1"),
    ]);
    assert_eq!(from_serve, original);
    assert_eq!(
        sha256_digest(from_serve.as_bytes()),
        *filled.index.descriptor.digest()
    );

    // skopeo copies the whole index, and one image with a gzip and a zstd layer.
    let all = env.dir.path().join("copy-all");
    skopeo(&[
        "copy",
        "--all",
        "--quiet",
        "--src-tls-verify=false",
        &served.docker("multi/arch:1"),
        &format!("oci:{}:x", all.display()),
    ]);
    assert_eq!(
        layout_digest(&all),
        filled.index.descriptor.digest().to_string()
    );
    let one = env.dir.path().join("copy-one");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &served.docker("tools/gz:1"),
        &format!("oci:{}:x", one.display()),
    ]);
    assert_eq!(
        layout_digest(&one),
        filled.image.descriptor.digest().to_string()
    );
    for layer in &filled.image.layers {
        let blob = one
            .join("blobs/sha256")
            .join(layer.descriptor.digest().digest());
        assert_eq!(std::fs::read(blob).unwrap(), layer.blob);
    }
    // ...and a platform manifest by digest.
    let arm64 = &filled.index.images[1];
    let by_digest = env.dir.path().join("copy-digest");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &served.docker(&format!("multi/arch@{}", arm64.descriptor.digest())),
        &format!("oci:{}:x", by_digest.display()),
    ]);
    assert_eq!(
        layout_digest(&by_digest),
        arm64.descriptor.digest().to_string()
    );

    // podman: the image ID is the config's digest, for a plain image and for the
    // platform it picks from the served index.
    let podman = env.dir.path().join("podman");
    let id = podman_pull(&podman, &[&format!("{}/tools/gz:1", served.addr)]);
    assert_eq!(id, filled.image.config.digest().digest());
    let id = podman_pull(
        &podman,
        &[
            "--platform",
            "linux/arm64",
            &format!("{}/multi/arch:1", served.addr),
        ],
    );
    assert_eq!(id, arm64.config.digest().digest());
}

#[test]
fn blobs_come_whole_or_in_ranges_and_heads_describe_them() {
    let env = Env::new();
    let filled = fill(&env);
    let served = Served::start(&env.store());
    let layer = &filled.big.layers[0];
    let blob = &layer.blob;
    let size = blob.len();
    let digest = layer.descriptor.digest().to_string();
    let url = served.url(&format!("/v2/big/noise/blobs/{digest}"));

    let whole = curl(&[&url]);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-length"), size.to_string());
    assert_eq!(whole.header("docker-content-digest"), digest);
    assert!(whole.body == *blob, "the whole blob differs");

    let head = curl(&["-I", &url]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), size.to_string());
    assert_eq!(head.header("docker-content-digest"), digest);
    assert!(head.body.is_empty());

    for (range, start, end) in [
        ("100-199", 100, 199),
        // Across the server's 1 MiB read chunks.
        ("1048000-2097999", 1_048_000, 2_097_999),
        (&format!("{}-", size - 10), size - 10, size - 1),
    ] {
        let part = curl(&["-r", range, &url]);
        assert_eq!(part.status, 206, "range {range}");
        assert_eq!(
            part.header("content-range"),
            format!("bytes {start}-{end}/{size}")
        );
        assert_eq!(part.header("content-length"), (end + 1 - start).to_string());
        assert!(part.body == blob[start..=end], "range {range}: wrong bytes");
    }
    let past = curl(&["-H", &format!("Range: bytes={size}-"), &url]);
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), format!("bytes */{size}"));

    // Any blob under any served name.
    let config = filled.image.config.digest();
    let elsewhere = curl(&[&served.url(&format!("/v2/big/noise/blobs/{config}"))]);
    assert_eq!(elsewhere.status, 200);
    assert_eq!(elsewhere.body, filled.image.config_bytes);

    // Manifests: their own type, digest and length, by tag (HEAD) and digest (GET).
    let manifest = curl(&["-I", &served.url("/v2/big/noise/manifests/2")]);
    assert_eq!(manifest.status, 200);
    assert_eq!(manifest.header("content-type"), OCI_MANIFEST);
    assert_eq!(
        manifest.header("docker-content-digest"),
        filled.big.descriptor.digest().to_string()
    );
    assert_eq!(
        manifest.header("content-length"),
        filled.big.manifest.len().to_string()
    );
    let by_digest = curl(&[&served.url(&format!(
        "/v2/big/noise/manifests/{}",
        filled.big.descriptor.digest()
    ))]);
    assert_eq!(by_digest.status, 200);
    assert_eq!(by_digest.body, filled.big.manifest);

    // Asked by tag for a single-platform type, the index is what there is to serve.
    let index = curl(&[
        "-H",
        "Accept: application/vnd.docker.distribution.manifest.v2+json",
        &served.url("/v2/multi/arch/manifests/1"),
    ]);
    assert_eq!(index.status, 200);
    assert_eq!(index.header("content-type"), OCI_INDEX);
    assert_eq!(index.body, filled.index.bytes);

    let tags = curl(&[&served.url("/v2/multi/arch/tags/list")]);
    let tags: Value = serde_json::from_slice(&tags.body).unwrap();
    assert_eq!(
        tags,
        serde_json::json!({"name": "multi/arch", "tags": ["1"]})
    );
}
