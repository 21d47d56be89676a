//! Runnable test images: busybox plus a script that prints a known line, with a
//! nonce in every layer so no runtime holds them from an earlier run.

use std::path::Path;

use oci_spec::image::{Descriptor, MediaType};
use serde_json::{json, Value};
use stowage_store::Store;

use crate::support::fixtures::{put_blob, put_layer, Compression, Entry, Layer};
use crate::support::pulling::Env;

/// A runnable image in the fixture store: its manifest and config descriptors, and
/// the line its default command prints.
pub struct Runnable {
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub line: String,
}

/// A base layer of Debian's busybox-static (`/bin/busybox`, `/bin/sh` -> busybox) and
/// a layer whose `/usr/bin/hello` script prints a line naming `nonce`; both layers
/// hold the nonce, so their diff_ids are new to every runtime.
pub fn runnable(store: &Store, nonce: &str, base: Compression, top: Compression) -> Runnable {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let base = put_layer(
        store,
        &[
            Entry::dir("bin"),
            Entry::file("bin/busybox", busybox, 0o755),
            Entry::symlink("bin/sh", "busybox"),
            Entry::dir("etc"),
            Entry::file("etc/nonce", nonce, 0o644),
        ],
        base,
    );
    let line = format!("hello from stowage {nonce}");
    let script = put_layer(
        store,
        &[
            Entry::dir("usr"),
            Entry::dir("usr/bin"),
            Entry::file("usr/bin/hello", format!("#!/bin/sh\necho {line}\n"), 0o755),
        ],
        top,
    );
    let (manifest, config) = put_runnable_image(store, &[base, script]);
    Runnable {
        manifest,
        config,
        line,
    }
}

/// Stores a config whose default command is `/usr/bin/hello`, and a manifest.
pub fn put_runnable_image(store: &Store, layers: &[Layer]) -> (Descriptor, Descriptor) {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/usr/bin/hello"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config = Descriptor::new(
        MediaType::ImageConfig,
        config.len() as u64,
        put_blob(store, &config),
    );
    let layers: Vec<&Descriptor> = layers.iter().map(|l| &l.descriptor).collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MediaType::ImageManifest,
        "config": config,
        "layers": layers,
    }))
    .unwrap();
    let manifest = Descriptor::new(
        MediaType::ImageManifest,
        manifest.len() as u64,
        put_blob(store, &manifest),
    );
    (manifest, config)
}

/// A nonce unique to this test run.
pub fn nonce(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{}-{nanos}", std::process::id())
}

/// Pushes `image` as `repo:tag`, pulls it into the env's store, returns its ref.
pub fn push_and_pull(env: &Env, image: &Runnable, repo_tag: &str) -> String {
    env.push(&image.manifest, repo_tag);
    let reference = env.via_proxy(repo_tag);
    let pulled = env.pull(&[&reference]);
    assert_eq!(
        pulled["manifest_digest"],
        image.manifest.digest().to_string()
    );
    reference
}

/// The layer hex digests of the stored image `name`, in order.
pub fn layer_digests(store: &Path, name: &str) -> Vec<String> {
    let store = Store::open(store).unwrap();
    let manifest = store.resolve_ref(name).unwrap().unwrap();
    let bytes = store.read_blob(manifest.digest(), 1 << 20).unwrap();
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap()["sha256:".len()..].to_string())
        .collect()
}
