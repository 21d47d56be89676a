//! `stowage pull` against the real registry, through a counting proxy: what is
//! fetched, which platform, pinned digests, offline and the tag TTL.

use std::process::Command;

use crate::support::fixtures::{
    gzip_zstd_image, put_image, put_layer, sample_tree, skopeo_json, tagged_index, Compression,
};
use crate::support::pulling::*;
use crate::support::push::push_docker_manifest_list;

#[test]
fn cold_then_warm_then_a_sibling_fetches_only_new_layers() {
    let env = Env::new();
    let base = put_layer(&env.fixtures, &sample_tree("base"), Compression::Gzip);
    let only_a = put_layer(&env.fixtures, &sample_tree("a"), Compression::Zstd);
    let only_b = put_layer(&env.fixtures, &sample_tree("b"), Compression::Gzip);
    let a = put_image(&env.fixtures, "amd64", vec![base.clone(), only_a]);
    let b = put_image(&env.fixtures, "amd64", vec![base.clone(), only_b.clone()]);
    env.push(&a.descriptor, "tools/a:1");
    env.push(&b.descriptor, "tools/b:1");

    let cold = env.pull(&[&env.via_proxy("tools/a:1")]);
    assert_eq!(cold["manifest_digest"], a.descriptor.digest().to_string());
    assert_eq!(cold["blobs_fetched"], 3, "{cold}");
    assert_eq!(env.proxy.blob_gets().len(), 3);

    env.proxy.reset_log();
    let warm = env.pull(&[&env.via_proxy("tools/a:1")]);
    assert_eq!(warm["blobs_fetched"], 0);
    assert_eq!(warm["bytes_fetched"], 0);
    assert!(env.proxy.blob_gets().is_empty(), "{:?}", env.proxy.log());

    env.proxy.reset_log();
    let sibling = env.pull(&[&env.via_proxy("tools/b:1")]);
    let fetched: Vec<String> = env.blob_get_paths();
    assert_eq!(
        fetched.len(),
        2,
        "config and the one new layer: {fetched:?}"
    );
    assert!(fetched
        .iter()
        .any(|p| p.ends_with(&only_b.descriptor.digest().to_string())));
    assert!(!fetched
        .iter()
        .any(|p| p.ends_with(&base.descriptor.digest().to_string())));
    assert_eq!(
        sibling["bytes_present"].as_u64().unwrap(),
        base.blob.len() as u64
    );

    // What stowage wrote is an OCI layout skopeo reads.
    let name = env.via_proxy("tools/b:1");
    let oci = format!("oci:{}:{name}", env.store().display());
    let inspected = skopeo_json(&["inspect", &oci]);
    assert_eq!(inspected["Digest"], b.descriptor.digest().to_string());
    // ...and so does podman: the image ID it reports is the config's digest. (podman
    // names the image after the layout's path, which must be lowercase.)
    let lower = std::env::temp_dir().join(format!("stowage-podman-{}", std::process::id()));
    let _ = std::fs::remove_file(&lower);
    std::os::unix::fs::symlink(env.store(), &lower).unwrap();
    let oci = format!("oci:{}:{name}", lower.display());
    let podman = env.dir.path().join("podman");
    let root = podman.join("root");
    let runroot = podman.join("run");
    let output = Command::new("podman")
        .arg("--root")
        .arg(&root)
        .arg("--runroot")
        .arg(&runroot)
        .args(["--storage-driver", "vfs", "pull", "-q", &oci])
        .output()
        .unwrap();
    assert!(output.status.success(), "podman: {}", stderr(&output));
    let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
    std::fs::remove_file(&lower).unwrap();
    assert_eq!(id, b.config.digest().digest());
    assert!(env.stowage(&["verify"]).status.success());
}

#[test]
fn an_index_resolves_to_the_requested_platform_and_a_docker_list_works_too() {
    let env = Env::new();
    let index = tagged_index(&env.fixtures, "multi/arch:1");
    crate::support::fixtures::push_with_skopeo(
        env.fixtures.root(),
        "multi/arch:1",
        &env.registry,
        "multi/arch:1",
    );
    let arm = env.pull(&["--platform", "linux/arm64", &env.via_proxy("multi/arch:1")]);
    let arm64 = &index.images[1];
    assert_eq!(
        arm["manifest_digest"],
        arm64.descriptor.digest().to_string()
    );
    assert_eq!(arm["index_digest"], index.descriptor.digest().to_string());
    assert!(blob_present(
        &env.store(),
        arm64.layers[0].descriptor.digest()
    ));
    assert!(!blob_present(
        &env.store(),
        index.images[0].layers[0].descriptor.digest()
    ));

    let missing = env.stowage(&[
        "pull",
        "--platform",
        "linux/s390x",
        &env.via_proxy("multi/arch:1"),
    ]);
    assert!(!missing.status.success());
    let message = stderr(&missing);
    assert!(
        message.contains("linux/s390x") && message.contains("linux/amd64, linux/arm64"),
        "{message}"
    );

    let (list, children) = push_docker_manifest_list(&env.registry, "docker/list", "2");
    for (arch, digest) in &children {
        let platform = format!("linux/{arch}");
        let pulled = env.pull(&["--platform", &platform, &env.via_proxy("docker/list:2")]);
        assert_eq!(pulled["manifest_digest"], digest.to_string());
        assert_eq!(pulled["index_digest"], list.to_string());
    }
    let all = env.pull(&["--all-platforms", &env.via_proxy("docker/list:2")]);
    assert_eq!(all["manifest_digest"], list.to_string());
    // Offline, a platform the store does not hold is not passed off as another.
    let amd64_only = env.dir.path().join("amd64-only");
    let arm_ref = env.via_proxy("multi/arch:1");
    let pulled = stowage_in(
        &amd64_only,
        &["pull", "--platform", "linux/amd64", &arm_ref],
    );
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    let offline = stowage_in(
        &amd64_only,
        &["pull", "--offline", "--platform", "linux/arm64", &arm_ref],
    );
    assert!(!offline.status.success(), "served amd64 for arm64");
    assert!(
        stderr(&offline).contains("linux/amd64"),
        "{}",
        stderr(&offline)
    );
    // An offline pull for one platform leaves the recorded index as it is.
    let offline = env.pull(&["--offline", &env.via_proxy("docker/list:2")]);
    assert_eq!(offline["manifest_digest"], list.to_string());
    let listed = env.json(&["ls"]);
    assert!(listed.to_string().contains(&list.to_string()), "{listed}");
    assert!(env.stowage(&["verify"]).status.success());
}

#[test]
fn pinned_pulls_refuse_another_digest_and_record_nothing() {
    let env = Env::new();
    let image = gzip_zstd_image(&env.fixtures, "amd64");
    env.push(&image.descriptor, "pin/one:1");
    let reference = env.via_proxy("pin/one:1");
    let wrong = format!("sha256:{}", "0".repeat(64));

    let output = env.stowage(&["pull", "--digest", &wrong, &reference]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(&wrong) && message.contains(&image.descriptor.digest().to_string()),
        "{message}"
    );
    let output = env.stowage(&["pull", &format!("{reference}@{wrong}")]);
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&env.stowage(&["ls"]).stdout).trim(),
        "[]"
    );

    let right = image.descriptor.digest().to_string();
    env.pull(&["--digest", &right, &reference]);
    let by_digest = env.pull(&[&format!("{}/pin/one@{right}", env.proxy.addr())]);
    assert_eq!(by_digest["blobs_fetched"], 0);
}

#[test]
fn offline_uses_only_the_store_and_ttl_skips_the_registry() {
    let mut env = Env::new();
    let image = gzip_zstd_image(&env.fixtures, "amd64");
    env.push(&image.descriptor, "off/line:1");
    let reference = env.via_proxy("off/line:1");

    let output = env.stowage(&["pull", "--offline", &reference]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("not in the store"), "{message}");
    assert!(env.proxy.log().is_empty(), "offline reached the network");

    env.pull(&["--ttl", "3600", &reference]);
    env.proxy.reset_log();
    env.pull(&["--ttl", "3600", &reference]);
    assert!(
        env.proxy.log().is_empty(),
        "a fresh cached tag asked the registry"
    );
    env.pull(&["--ttl", "0", &reference]);
    assert!(!env.proxy.log().is_empty(), "ttl 0 must ask the registry");

    // A moved tag is seen with ttl 0.
    let moved = put_image(
        &env.fixtures,
        "amd64",
        vec![put_layer(
            &env.fixtures,
            &sample_tree("moved"),
            Compression::Gzip,
        )],
    );
    env.push(&moved.descriptor, "off/line:1");
    let again = env.pull(&["--ttl", "0", &reference]);
    assert_eq!(
        again["manifest_digest"],
        moved.descriptor.digest().to_string()
    );

    env.registry.stop();
    let offline = env.pull(&["--offline", &reference]);
    assert_eq!(
        offline["manifest_digest"],
        moved.descriptor.digest().to_string()
    );
    assert_eq!(offline["bytes_fetched"], 0);
}

#[test]
fn many_layers_are_opened_only_as_they_download() {
    // Each blob waiting for a download slot used to hold its ingest (a data file and a
    // lock) open from the start: 80 layers at --concurrency 2 ran out of descriptors.
    let env = Env::new();
    let layers = (0..80)
        .map(|i| {
            put_layer(
                &env.fixtures,
                &sample_tree(&format!("l{i}")),
                Compression::Gzip,
            )
        })
        .collect();
    let image = put_image(&env.fixtures, "amd64", layers);
    env.push(&image.descriptor, "tools/many:1");
    let name = env.via_proxy("tools/many:1");
    let store = env.store();
    let output = Command::new("prlimit")
        .args(["--nofile=48:48", "--", BIN, "--json", "--store"])
        .arg(&store)
        .args(["pull", "--concurrency", "2", &name])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["blobs_fetched"], 81, "{report}");
}
