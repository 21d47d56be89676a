//! Many refs in one store (issue #16): eight processes each syncing a lockfile of
//! 500 images into one store record all 4000 refs, none lost to a concurrent rewrite
//! of index.json, though each sync writes its refs as one batch and each has read
//! index.json long before (for the images already stored).

use std::collections::HashSet;
use std::process::{Command, Stdio};

use crate::support::fixtures::{put_image, put_layer, Compression, Entry, Image, Layer};
use crate::support::pulling::*;
use crate::support::push::tag_many;
use stowage::store::Store;

const PROCESSES: usize = 8;
const IMAGES_EACH: usize = 500;
/// Images every process's lockfile also pins, synced before they start.
const SHARED: usize = 20;

fn lockfile(
    registry: &str,
    tags: impl Iterator<Item = String>,
    image: &Image,
    layer: &Layer,
) -> String {
    let mut lock = String::from("version = 1\n");
    for tag in tags {
        lock.push_str(&format!(
            "\n[[image]]\nreference = \"{registry}/scale/img:{tag}\"\n\
             digest = \"{}\"\nplatform = \"linux/amd64\"\nkind = \"oci\"\n\
             [[image.layer]]\ndigest = \"{}\"\nsize = {}\nmedia_type = \"{}\"\n",
            image.descriptor.digest(),
            layer.descriptor.digest(),
            layer.descriptor.size(),
            layer.descriptor.media_type(),
        ));
    }
    lock
}

#[test]
fn eight_syncs_of_500_images_each_record_all_4000_refs() {
    let env = Env::new();
    let layer = put_layer(
        &env.fixtures,
        &[Entry::file("hello.txt", b"hello\n".to_vec(), 0o644)],
        Compression::Gzip,
    );
    let image = put_image(&env.fixtures, "amd64", vec![layer.clone()]);
    env.push(&image.descriptor, "scale/img:base");
    let shared: Vec<String> = (0..SHARED).map(|i| format!("shared-{i}")).collect();
    let tags: Vec<String> = (0..PROCESSES)
        .flat_map(|p| (0..IMAGES_EACH).map(move |i| format!("p{p}-{i}")))
        .chain(shared.iter().cloned())
        .collect();
    tag_many(
        &env.registry,
        "scale/img",
        image.descriptor.media_type().as_ref(),
        &image.manifest,
        &tags,
    );

    // Through the counting proxy, to see what crossed the network.
    let registry = env.proxy.addr();
    let shared_lock = env.dir.path().join("shared.lock");
    let text = lockfile(&registry, shared.iter().cloned(), &image, &layer);
    std::fs::write(&shared_lock, text).unwrap();
    env.json(&["sync", shared_lock.to_str().unwrap()]);

    let mut children = Vec::new();
    for p in 0..PROCESSES {
        // The shared images first: with --ttl, a sync finds them in the store, so it
        // reads index.json right at its start.
        let own = (0..IMAGES_EACH).map(|i| format!("p{p}-{i}"));
        let text = lockfile(&registry, shared.iter().cloned().chain(own), &image, &layer);
        let path = env.dir.path().join(format!("p{p}.lock"));
        std::fs::write(&path, text).unwrap();
        let child = Command::new(BIN)
            .arg("--store")
            .arg(env.store())
            .args(["--json", "sync", "--ttl", "3600"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.push(child);
    }
    for (p, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "sync {p}: {}", stderr(&output));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let images = report["images"].as_array().expect("images");
        assert_eq!(images.len(), SHARED + IMAGES_EACH, "sync {p}: {report}");
    }

    let store = Store::open(env.store()).unwrap();
    let names: HashSet<String> = store.refs().unwrap().into_iter().map(|r| r.name).collect();
    let missing: Vec<&String> = tags
        .iter()
        .filter(|t| !names.contains(&format!("{registry}/scale/img:{t}")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} refs lost, first {:?}",
        missing.len(),
        tags.len(),
        missing.first()
    );
    assert_eq!(names.len(), PROCESSES * IMAGES_EACH + SHARED);
    // The image's layer crossed the network once, whatever the 4000 pins and the 8
    // processes.
    assert_eq!(env.gets_of(layer.descriptor.digest()).len(), 1);
    // A warm sync within the TTL of images whole in the store asks the registry nothing.
    env.proxy.reset_log();
    let warm = env.json(&[
        "sync",
        "--ttl",
        "3600",
        env.dir.path().join("p0.lock").to_str().unwrap(),
    ]);
    assert_eq!(
        warm["images"].as_array().map_or(0, Vec::len),
        SHARED + IMAGES_EACH
    );
    let requests = env.proxy.log();
    assert!(
        requests.is_empty(),
        "{} requests, first {:?}",
        requests.len(),
        requests.first()
    );
    let verify = env.json(&["verify"]);
    assert_eq!(
        verify["missing"].as_array().map_or(0, Vec::len),
        0,
        "{verify}"
    );
}
