//! `stowage serve` when things go wrong: the distribution spec's errors, the first ref
//! winning a clash, SIGTERM letting a download finish, and the library server never
//! completing a corrupt blob and closing its port on stop.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::fixtures::{gzip_zstd_image, run_output, sha256_digest, skopeo, tagged_image};
use crate::support::pulling::{big_image, Env, MIB};
use crate::support::serving::{curl, layout_digest, Served};
use stowage::{ServeOptions, Server};
use stowage_store::Store;

#[test]
fn errors_are_the_specs_and_the_first_ref_wins_a_clash() {
    let env = Env::new();
    // Two refs for clash/x:1: through the proxy first (image a), then straight from
    // the registry after the tag moved (image b).
    let a = gzip_zstd_image(&env.fixtures, "amd64");
    env.push(&a.descriptor, "clash/x:1");
    env.pull(&[&env.via_proxy("clash/x:1")]);
    let b = gzip_zstd_image(&env.fixtures, "arm64");
    env.push(&b.descriptor, "clash/x:1");
    env.pull(&[&format!("{}/clash/x:1", env.registry.addr())]);
    let served = Served::start(&env.store());

    let base = curl(&[&served.url("/v2/")]);
    assert_eq!(base.status, 200);
    assert_eq!(
        base.header("docker-distribution-api-version"),
        "registry/2.0"
    );

    let first = curl(&["-I", &served.url("/v2/clash/x/manifests/1")]);
    assert_eq!(
        first.header("docker-content-digest"),
        a.descriptor.digest().to_string()
    );
    let second = curl(&[&served.url(&format!("/v2/clash/x/manifests/{}", b.descriptor.digest()))]);
    assert_eq!(
        second.status, 200,
        "the later ref stays reachable by digest"
    );

    let unknown_tag = curl(&[&served.url("/v2/clash/x/manifests/nope")]);
    assert_eq!(unknown_tag.status, 404);
    assert_eq!(unknown_tag.error_code(), "MANIFEST_UNKNOWN");
    let missing = sha256_digest(b"not stored");
    let unknown_digest = curl(&[&served.url(&format!("/v2/clash/x/manifests/{missing}"))]);
    assert_eq!(unknown_digest.status, 404);
    assert_eq!(unknown_digest.error_code(), "MANIFEST_UNKNOWN");
    let layer = a.layers[0].descriptor.digest();
    let not_a_manifest = curl(&[&served.url(&format!("/v2/clash/x/manifests/{layer}"))]);
    assert_eq!(not_a_manifest.status, 404);
    assert_eq!(not_a_manifest.error_code(), "MANIFEST_UNKNOWN");
    let unknown_blob = curl(&[&served.url(&format!("/v2/clash/x/blobs/{missing}"))]);
    assert_eq!(unknown_blob.status, 404);
    assert_eq!(unknown_blob.error_code(), "BLOB_UNKNOWN");
    let unknown_name = curl(&[&served.url(&format!("/v2/no/such/blobs/{layer}"))]);
    assert_eq!(unknown_name.status, 404);
    assert_eq!(unknown_name.error_code(), "NAME_UNKNOWN");
    let unknown_tags = curl(&[&served.url("/v2/no/such/tags/list")]);
    assert_eq!(unknown_tags.error_code(), "NAME_UNKNOWN");

    for (method, path) in [
        ("PUT", "/v2/clash/x/manifests/2".to_string()),
        ("POST", "/v2/clash/x/blobs/uploads/".to_string()),
        ("DELETE", format!("/v2/clash/x/blobs/{layer}")),
        ("DELETE", "/v2/clash/x/manifests/1".to_string()),
        ("PATCH", "/v2/clash/x/blobs/uploads/1234".to_string()),
    ] {
        let reply = curl(&["-X", method, "--data-binary", "{}", &served.url(&path)]);
        assert_eq!(reply.status, 405, "{method} {path}");
        assert_eq!(reply.error_code(), "UNSUPPORTED", "{method} {path}");
    }
    // Nothing was written: the tag still names image a.
    let after = curl(&["-I", &served.url("/v2/clash/x/manifests/1")]);
    assert_eq!(
        after.header("docker-content-digest"),
        a.descriptor.digest().to_string()
    );
}

#[test]
fn sigterm_lets_a_download_finish_then_the_port_closes() {
    // A blob far larger than the socket buffers and the server's read-ahead, so a
    // download cut off at SIGTERM cannot have been written out already.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let big = big_image(&store, 96 * MIB, 11);
    store
        .set_ref("127.0.0.1:5000/big/noise:1", &big.descriptor)
        .unwrap();
    let mut served = Served::start(store.root());
    let layer = &big.layers[0];
    let url = served.url(&format!(
        "/v2/big/noise/blobs/{}",
        layer.descriptor.digest()
    ));
    // About 4 s at this rate; SIGTERM arrives during it. (To a file: a pipe nobody
    // reads until the server has stopped would stall the download.)
    let download = dir.path().join("download");
    let slow = Command::new("curl")
        .args(["-sS", "--fail", "--limit-rate", "24M", "-o"])
        .arg(&download)
        .arg(&url)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let status = served.stop();
    assert!(status.success(), "serve exited with {status}");
    let output = slow.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the download in flight failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        std::fs::read(&download).unwrap() == layer.blob,
        "the download in flight differs"
    );
    assert!(
        TcpStream::connect(&served.addr).is_err(),
        "the port still accepts connections"
    );
}

#[test]
fn the_library_server_starts_on_port_0_and_never_completes_a_corrupt_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let image = tagged_image(&store, "docker.io/library/alpine:latest", "amd64");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = ServeOptions {
        verify_blobs: true,
        ..ServeOptions::default()
    };
    let server = runtime
        .block_on(Server::start(store.clone(), "127.0.0.1:0", options))
        .unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    // docker.io names are served without the host, and `alpine` finds `library/alpine`.
    for name in ["library/alpine", "alpine"] {
        let reply = curl(&["-I", &format!("http://{addr}/v2/{name}/manifests/latest")]);
        assert_eq!(reply.status, 200, "{name}");
        assert_eq!(
            reply.header("docker-content-digest"),
            image.descriptor.digest().to_string()
        );
    }
    // skopeo reads it through the library server too.
    let copied = dir.path().join("copy");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{addr}/library/alpine:latest"),
        &format!("oci:{}:x", copied.display()),
    ]);
    assert_eq!(
        layout_digest(&copied),
        image.descriptor.digest().to_string()
    );

    // Flip the last byte of a stored layer: a whole GET fails rather than completing,
    // a range before the damage is still served.
    let layer = &image.layers[0];
    let path = store.blob_path(layer.descriptor.digest());
    let mut bytes = std::fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() ^= 0xff;
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    let url = format!(
        "http://{addr}/v2/library/alpine/blobs/{}",
        layer.descriptor.digest()
    );
    let whole = run_output("curl", &["-sS", "--fail", "-o", "/dev/null", &url]);
    assert!(!whole.status.success(), "a corrupt blob was served whole");
    let part = curl(&["-r", "0-9", &url]);
    assert_eq!(part.status, 206);
    assert_eq!(part.body, layer.blob[..10]);

    runtime.block_on(server.stop()).unwrap();
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after stop"
    );
}
