//! Refs, gc and verify on a store written in-process.

use std::io::Read;

use stowage_store::{Descriptor, Digest, MediaType, Store, StoreError};

fn descriptor(media_type: MediaType, digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(media_type, size, digest.clone())
}

/// Stores a one-layer image and returns its manifest descriptor and layer digest.
fn small_image(store: &Store, content: &[u8]) -> (Descriptor, Digest) {
    let layer = store.put(content).unwrap();
    let config = store
        .put(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#)
        .unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{}}}]}}"#,
        store.stat(&config).unwrap().unwrap(),
        content.len()
    );
    let digest = store.put(manifest.as_bytes()).unwrap();
    (
        descriptor(MediaType::ImageManifest, &digest, manifest.len() as u64),
        layer,
    )
}

#[test]
fn setting_a_ref_to_what_it_names_leaves_index_json_alone() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, _) = small_image(&store, b"layer a");
    let (b, _) = small_image(&store, b"layer b");
    store.set_ref("a:1", &a).unwrap();
    store.set_ref("b:1", &b).unwrap();
    let inode = || {
        std::fs::metadata(dir.path().join("index.json"))
            .unwrap()
            .ino()
    };
    let before = inode();
    // A warm pull of the first of several refs: nothing to rewrite or fsync.
    store.set_ref("a:1", &a).unwrap();
    assert_eq!(
        inode(),
        before,
        "index.json was rewritten for an unchanged ref"
    );
    store.set_ref("a:1", &b).unwrap();
    assert_ne!(inode(), before);
    let names: Vec<String> = store.refs().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["a:1", "b:1"], "a changed ref keeps its place");
}

#[test]
fn refs_add_resolve_remove() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (image, _) = small_image(&store, b"layer one");
    store.set_ref("localhost:5000/a/b:1", &image).unwrap();
    let got = store.resolve_ref("localhost:5000/a/b:1").unwrap().unwrap();
    assert_eq!(got.digest(), image.digest());
    let (other, _) = small_image(&store, b"layer two");
    store.set_ref("localhost:5000/a/b:1", &other).unwrap();
    assert_eq!(
        store.refs().unwrap().len(),
        1,
        "a ref is replaced, not duplicated"
    );
    assert!(store.remove_ref("localhost:5000/a/b:1").unwrap());
    assert!(!store.remove_ref("localhost:5000/a/b:1").unwrap());

    let missing = Descriptor::new(
        MediaType::ImageManifest,
        3,
        stowage_store::sha256_of(b"nope"),
    );
    assert!(matches!(
        store.set_ref("x", &missing),
        Err(StoreError::BlobNotFound(_))
    ));
}

#[test]
fn concurrent_ref_updates_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (image, _) = small_image(&store, b"shared");
    std::thread::scope(|s| {
        for t in 0..8 {
            let store = Store::open(dir.path()).unwrap();
            let image = image.clone();
            s.spawn(move || {
                for i in 0..10 {
                    store.set_ref(&format!("r/{t}:{i}"), &image).unwrap();
                }
            });
        }
    });
    assert_eq!(store.refs().unwrap().len(), 80);
}

#[test]
fn gc_sweeps_what_no_ref_reaches() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (kept, kept_layer) = small_image(&store, b"kept layer");
    let (dropped, dropped_layer) = small_image(&store, b"dropped layer, a bit longer");
    store.set_ref("kept", &kept).unwrap();
    store.set_ref("dropped", &dropped).unwrap();
    assert!(store.gc(&[], false).unwrap().removed.is_empty());

    store.remove_ref("dropped").unwrap();
    let dry = store.gc(&[], true).unwrap();
    assert_eq!(
        dry.removed.len(),
        2,
        "manifest and layer; the config is shared"
    );
    assert!(store.has(&dropped_layer), "a dry run removes nothing");
    let report = store.gc(&[], false).unwrap();
    assert_eq!(report.bytes_freed, dry.bytes_freed);
    assert!(!store.has(&dropped_layer));
    assert!(!store.has(dropped.digest()));
    assert!(store.has(&kept_layer));
    assert!(store.verify(None).unwrap().is_clean());
}

#[test]
fn corruption_is_caught_on_read_and_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (image, layer) = small_image(&store, b"precious bytes");
    store.set_ref("img", &image).unwrap();
    let path = store.blob_path(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[3] ^= 1;
    std::fs::write(&path, bytes).unwrap();

    let mut sink = Vec::new();
    let err = store
        .open_blob(&layer)
        .unwrap()
        .read_to_end(&mut sink)
        .unwrap_err();
    assert!(err.to_string().contains(&layer.to_string()), "{err}");

    let report = store.verify(None).unwrap();
    assert_eq!(report.corrupt.len(), 1);
    assert_eq!(report.corrupt[0].digest, layer);
    assert!(!store.has(&layer), "a corrupt blob stays under blobs/");
    assert_eq!(report.missing.len(), 1, "the ref now lacks its layer");
    assert_eq!(report.missing[0].referenced_by, "img");
}

#[test]
fn many_refs_are_set_with_one_rewrite_and_all_or_nothing() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, _) = small_image(&store, b"layer a");
    let (b, _) = small_image(&store, b"layer b");
    store.set_ref("a:1", &a).unwrap();
    let index = dir.path().join("index.json");
    let inode = || std::fs::metadata(&index).unwrap().ino();
    let before = inode();
    let batch: Vec<(String, Descriptor)> = (0..100)
        .map(|i| (format!("many:{i}"), b.clone()))
        .chain([("a:1".to_string(), b.clone())])
        .collect();
    store.set_refs(&batch).unwrap();
    assert_ne!(inode(), before);
    let refs = store.refs().unwrap();
    assert_eq!(refs.len(), 101);
    assert_eq!(refs[0].name, "a:1", "a replaced ref keeps its place");
    assert_eq!(refs[0].descriptor.digest(), b.digest());
    assert_eq!(
        store.resolve_ref("many:99").unwrap().unwrap().digest(),
        b.digest()
    );

    // One image not whole: nothing of the batch is recorded.
    let absent = descriptor(
        MediaType::ImageManifest,
        &stowage_store::sha256_of(b"not stored"),
        10,
    );
    let refused = vec![
        ("new:1".to_string(), a.clone()),
        ("new:2".to_string(), absent.clone()),
    ];
    let err = store.set_refs(&refused).unwrap_err();
    assert!(
        matches!(err, StoreError::BlobNotFound(ref d) if d == absent.digest()),
        "{err}"
    );
    assert!(store.resolve_ref("new:1").unwrap().is_none());
    assert_eq!(store.refs().unwrap().len(), 101);
}

#[test]
fn another_process_s_rewrite_of_index_json_is_seen_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let here = Store::open(dir.path()).unwrap();
    let there = Store::open(dir.path()).unwrap();
    let (a, _) = small_image(&here, b"layer a");
    assert!(here.resolve_ref("a:1").unwrap().is_none());
    // `there` has its own cache, as another process would.
    there.set_ref("a:1", &a).unwrap();
    assert_eq!(
        here.resolve_ref("a:1").unwrap().unwrap().digest(),
        a.digest()
    );
    there.remove_ref("a:1").unwrap();
    assert!(here.resolve_ref("a:1").unwrap().is_none());
}

#[test]
fn eviction_takes_the_least_recently_used_first_and_never_a_kept_one() {
    use stowage_store::EvictOptions;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, layer_a) = small_image(&store, &[b'a'; 1000]);
    let (b, layer_b) = small_image(&store, &[b'b'; 2000]);
    let (c, layer_c) = small_image(&store, &[b'c'; 4000]);
    for (name, image) in [("a:1", &a), ("b:1", &b), ("c:1", &c)] {
        store.set_ref(name, image).unwrap();
    }
    // Used in this order: c longest ago, then a, then b.
    for name in ["c:1", "a:1", "b:1"] {
        store.record_use(&[name]).unwrap();
    }
    let used = store.last_used().unwrap();
    assert!(
        used["c:1"] <= used["a:1"] && used["a:1"] <= used["b:1"],
        "{used:?}"
    );

    // Room for about one image: c goes first, then a; b, the newest, stays.
    let options = EvictOptions {
        max_size: Some(3000),
        dry_run: true,
        ..EvictOptions::default()
    };
    let planned = store.evict(&options).unwrap();
    let names: Vec<&str> = planned.evicted.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["c:1", "a:1"]);
    assert!(planned.evicted[0].bytes_freed >= 4000);
    assert_eq!(store.refs().unwrap().len(), 3, "a dry run removes nothing");

    // Keeping c: a goes, and b; c stays though it is the oldest.
    let options = EvictOptions {
        max_size: Some(5000),
        keep_names: ["c:1".to_string()].into(),
        ..EvictOptions::default()
    };
    let report = store.evict(&options).unwrap();
    let names: Vec<&str> = report.evicted.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a:1", "b:1"]);
    assert!(
        report.live_bytes_after <= 5000,
        "{}",
        report.live_bytes_after
    );
    let left: Vec<String> = store.refs().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(left, ["c:1"]);
    assert!(!store.has(&layer_a) && !store.has(&layer_b) && store.has(&layer_c));
    assert!(!store.last_used().unwrap().contains_key("a:1"));

    // max_age 0: everything not kept is too old.
    let options = EvictOptions {
        max_age: Some(std::time::Duration::ZERO),
        keep_digests: [c.digest().clone()].into(),
        ..EvictOptions::default()
    };
    assert!(store.evict(&options).unwrap().evicted.is_empty());
}

#[test]
fn a_ref_is_reverted_only_while_it_names_what_was_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (old, _) = small_image(&store, b"before");
    let (mine, _) = small_image(&store, b"recorded");
    let (theirs, _) = small_image(&store, b"another process");
    let digest_of = |name: &str| store.resolve_ref(name).unwrap().map(|d| d.digest().clone());

    // Put back to what it named before.
    store.set_ref("a:1", &old).unwrap();
    store.set_ref("a:1", &mine).unwrap();
    assert!(store
        .revert_ref("a:1", &[mine.digest().clone()], Some(&old))
        .unwrap());
    assert_eq!(digest_of("a:1").as_ref(), Some(old.digest()));

    // Made by the command: removed.
    store.set_ref("new:1", &mine).unwrap();
    assert!(store
        .revert_ref("new:1", &[mine.digest().clone()], None)
        .unwrap());
    assert_eq!(digest_of("new:1"), None);

    // Changed by another process meanwhile: left as that one set it.
    store.set_ref("b:1", &mine).unwrap();
    store.set_ref("b:1", &theirs).unwrap();
    assert!(!store
        .revert_ref("b:1", &[mine.digest().clone()], Some(&old))
        .unwrap());
    assert_eq!(digest_of("b:1").as_ref(), Some(theirs.digest()));
    assert!(!store
        .revert_ref("gone:1", &[mine.digest().clone()], None)
        .unwrap());

    // What it named before is no longer whole (a gc took it): an error naming it, and
    // the ref is left alone.
    let (lost, lost_layer) = small_image(&store, b"swept");
    std::fs::remove_file(store.blob_path(&lost_layer)).unwrap();
    store.set_ref("c:1", &mine).unwrap();
    let err = store
        .revert_ref("c:1", &[mine.digest().clone()], Some(&lost))
        .unwrap_err();
    assert!(matches!(err, StoreError::RefIncomplete { .. }), "{err}");
    assert_eq!(digest_of("c:1").as_ref(), Some(mine.digest()));
}
