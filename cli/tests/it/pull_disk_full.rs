//! The disk fills mid-pull: the store sits on a size-limited tmpfs the test mounts
//! (the tests run as root, as CI does). The pull fails naming the lack of room, no
//! ref or unverified blob is visible, and once there is room the next pull succeeds
//! without fetching again what was already stored.

use std::process::Command;

use crate::support::fixtures::{put_image, Compression, Entry};
use crate::support::pulling::*;
use crate::support::tmpfs::Tmpfs;

#[test]
fn a_full_disk_fails_clearly_and_the_next_pull_resumes() {
    let env = Env::new();
    let layers: Vec<_> = (0..3)
        .map(|i| {
            crate::support::fixtures::put_layer(
                &env.fixtures,
                &[Entry::file("data.bin", noise(9 * MIB, 40 + i), 0o644)],
                Compression::Zstd,
            )
        })
        .collect();
    let image = put_image(&env.fixtures, "amd64", layers.clone());
    env.push(&image.descriptor, "full/three:1");

    // What the registry serves (skopeo may have recompressed the layers on push).
    let probe = env.dir.path().join("probe");
    let probed = stowage_in(&probe, &["pull", &env.via_proxy("full/three:1")]);
    assert!(probed.status.success(), "{}", stderr(&probed));
    let served: serde_json::Value = serde_json::from_slice(&probed.stdout).unwrap();
    let total = served["bytes_fetched"].as_u64().unwrap();
    // Room for about two of the three layers, not all of them.
    let room = (2 * total / 3 + MIB as u64 / 2).div_ceil(MIB as u64);
    let mount = env.dir.path().join("small");
    let tmpfs = Tmpfs::mount(&mount, room);
    let store = mount.join("store");
    let reference = env.via_proxy("full/three:1");
    let output = stowage_in(&store, &["pull", &reference, "--concurrency", "1"]);
    let df = Command::new("df").arg(&mount).output().unwrap();
    assert!(
        !output.status.success(),
        "the pull fitted: {}\n{}\n{}",
        String::from_utf8_lossy(&df.stdout),
        String::from_utf8_lossy(&output.stdout),
        stderr(&output)
    );
    let message = stderr(&output);
    assert!(
        message.contains("free") || message.contains("No space left"),
        "{message}"
    );
    let index = std::fs::read_to_string(store.join("index.json")).unwrap_or_default();
    assert!(
        !index.contains("full/three"),
        "a ref after a failed pull: {index}"
    );
    let verify = stowage_in(&store, &["verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    let stored = layers
        .iter()
        .filter(|l| blob_present(&store, l.descriptor.digest()))
        .count();
    assert!(stored < 3, "all three layers fitted: the disk was not full");

    env.proxy.reset_log();
    tmpfs.resize(64);
    let output = stowage_in(&store, &["pull", &reference]);
    assert!(output.status.success(), "{}", stderr(&output));
    let sent: u64 = env.proxy.blob_gets().iter().map(|r| r.body_bytes).sum();
    assert!(
        sent < total,
        "the second pull fetched {sent} bytes of {total}: nothing was resumed"
    );
    assert!(layers
        .iter()
        .all(|l| blob_present(&store, l.descriptor.digest())));
    assert!(stowage_in(&store, &["verify"]).status.success());
    drop(tmpfs);
}
