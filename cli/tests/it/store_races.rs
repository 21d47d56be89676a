//! Refs under concurrency and hostile names: an image is named only when the store
//! holds all of it, even while `gc` sweeps, and a ref name that would break paths or
//! listings is refused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::support::fixtures::{
    gzip_image, put_image, put_layer, sample_tree, set_ref, Compression,
};
use stowage::store::{Store, StoreError};
use stowage::{assemble_image, AssembleLayer, RunConfig};

#[test]
fn assemble_racing_gc_never_records_a_broken_ref() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    // The layers are kept alive by a base image; what assemble writes (a config and a
    // manifest) is referenced by nothing until its ref is set.
    let layer = put_layer(&store, &sample_tree("base"), Compression::Gzip);
    let base = put_image(&store, "amd64", vec![layer.clone()]);
    set_ref(&store, "base", &base.descriptor);

    let stop = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut sweeps = 0;
            while !stop.load(Ordering::Relaxed) {
                store.gc(&[], false).unwrap();
                sweeps += 1;
            }
            sweeps
        })
    };
    let layers = [AssembleLayer {
        descriptor: layer.descriptor.clone(),
        diff_id: None,
    }];
    let mut named = Vec::new();
    for i in 0..60 {
        let run = RunConfig {
            os: "linux".into(),
            architecture: "amd64".into(),
            // A new config (and so a new manifest) every time.
            env: vec![format!("ROUND={i}")],
            ..RunConfig::default()
        };
        let name = format!("assembled:{i}");
        let descriptor = assemble_image(&store, &name, &run, &layers)
            .unwrap_or_else(|e| panic!("assemble {name}: {e}"));
        named.push((name, descriptor));
    }
    stop.store(true, Ordering::Relaxed);
    let sweeps = sweeper.join().unwrap();
    assert!(sweeps > 0);
    for (name, descriptor) in &named {
        let named = store
            .resolve_ref(name)
            .unwrap()
            .expect("the ref is recorded");
        assert_eq!(named.digest(), descriptor.digest());
        let missing = store.missing(descriptor).unwrap();
        assert!(
            missing.is_empty(),
            "{name} lacks {missing:?} after {sweeps} sweeps"
        );
    }
}

#[test]
fn set_ref_refuses_an_image_the_store_does_not_hold_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let image = gzip_image(&store, "amd64");
    let layer = image.layers[0].descriptor.digest();
    std::fs::remove_file(store.blob_path(layer)).unwrap();
    let err = store.set_ref("app:1", &image.descriptor).unwrap_err();
    assert!(
        matches!(&err, StoreError::RefIncomplete { name, digest } if name == "app:1" && digest == layer),
        "{err}"
    );
    assert!(err.to_string().contains(&layer.to_string()), "{err}");
    assert!(store.refs().unwrap().is_empty());
}

#[test]
fn ref_names_that_break_paths_or_listings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let image = gzip_image(&store, "amd64");
    let long = "a".repeat(5000);
    for bad in [
        "",
        "app/../../etc:1",
        "app:1\nfake 0 B",
        "app 1",
        long.as_str(),
        "app:\u{7f}",
    ] {
        let err = store.set_ref(bad, &image.descriptor).unwrap_err();
        assert!(
            matches!(err, StoreError::BadRefName { .. }),
            "{:?}: {err}",
            &bad[..bad.len().min(40)]
        );
        assert!(err.to_string().len() < 300, "{err}");
    }
    assert!(store.refs().unwrap().is_empty());
    for good in [
        "127.0.0.1:5000/tools/samtools:1.20",
        "ghcr.io/channel/linux-64/tool:1.0__p__2-h0_0",
        "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "localhost/app",
    ] {
        store.set_ref(good, &image.descriptor).unwrap();
    }
    assert_eq!(store.refs().unwrap().len(), 4);
}
