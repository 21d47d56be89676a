//! Air-gapped transfer: `stowage export` writes an OCI layout (tar or directory) with
//! only the blobs the images need; `stowage import` puts it into another store, every
//! blob verified, refs only at the end. Images are pulled from the real registry first;
//! afterwards the registry is stopped and nothing may reach the network. skopeo and
//! podman read the archives, and the same images export to the same bytes. The
//! archives that are refused are in `archive_refused.rs`.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::archive_check::{
    assert_no_temp_files, dir_blobs, fails, image_blobs, index_blobs, listed, ok, path_str, pulled,
    tar_blobs, tar_entries,
};
use crate::support::fixtures::{
    put_image, put_layer, sample_tree, skopeo, skopeo_json, Compression,
};
use crate::support::pulling::*;

#[test]
fn export_holds_only_what_the_images_need_and_imports_into_a_new_store_offline() {
    let mut p = pulled();
    let source = p.env.store();
    let work = p.env.dir.path().to_path_buf();
    let tar = work.join("x.tar");
    let dir = work.join("x-layout");
    let args = |out: &Path| {
        vec![
            "export".to_string(),
            "--all-platforms".into(),
            p.ref_a.clone(),
            p.ref_index.clone(),
            "-o".into(),
            path_str(out).to_string(),
        ]
    };
    let exported = ok(
        &source,
        &args(&tar).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    ok(
        &source,
        &args(&dir).iter().map(String::as_str).collect::<Vec<_>>(),
    );

    // Exactly the blobs of the two images (the shared base layer once), nothing of
    // the third image the store also holds.
    let mut wanted = image_blobs(&p.a);
    wanted.extend(index_blobs(&p.index));
    assert!(wanted.contains(&p.a.layers[0].descriptor.digest().to_string()));
    assert_eq!(tar_blobs(&tar), wanted);
    assert_eq!(dir_blobs(&dir), wanted);
    assert_eq!(exported["blobs"], wanted.len());
    assert_eq!(exported["format"], "oci-archive");
    let other_layer = p.other.layers[0].descriptor.digest().to_string();
    assert!(!tar_blobs(&tar).contains(&other_layer));
    assert!(
        dir_blobs(&source).contains(&other_layer),
        "the fixture is wrong"
    );

    p.env.registry.stop();
    p.env.proxy.reset_log();
    let expected = {
        let mut refs = vec![
            (p.ref_a.clone(), p.a.descriptor.digest().to_string()),
            (p.ref_index.clone(), p.index.descriptor.digest().to_string()),
        ];
        refs.sort();
        refs
    };
    for (label, layout) in [("tar", &tar), ("dir", &dir)] {
        let target = work.join(format!("imported-{label}"));
        let imported = ok(&target, &["import", path_str(layout)]);
        assert_eq!(imported["blobs_added"], wanted.len(), "{label}: {imported}");
        assert_eq!(imported["images"].as_array().unwrap().len(), 2);
        assert_eq!(listed(&target), expected, "{label}");
        assert_eq!(dir_blobs(&target), wanted, "{label}");
        let verified = ok(&target, &["verify"]);
        assert_eq!(verified["checked"], wanted.len(), "{label}: {verified}");
        let offline = ok(&target, &["pull", "--offline", &p.ref_a]);
        assert_eq!(
            offline["manifest_digest"],
            p.a.descriptor.digest().to_string()
        );
        let offline = ok(
            &target,
            &["pull", "--offline", "--all-platforms", &p.ref_index],
        );
        assert_eq!(
            offline["manifest_digest"],
            p.index.descriptor.digest().to_string()
        );
        // The third image never travelled.
        assert!(!stowage_in(&target, &["pull", "--offline", &p.ref_other])
            .status
            .success());
        // The imported image loads into podman (a storage of its own).
        let podman = work.join(format!("podman-{label}"));
        let podman_args = format!(
            "--root {} --runroot {} --storage-driver vfs",
            podman.join("root").display(),
            podman.join("run").display()
        );
        let loaded = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"))
            .arg("--store")
            .arg(&target)
            .args(["--json", "load", &p.ref_a, "--into", "podman"])
            .env("STOWAGE_PODMAN_ARGS", &podman_args)
            .output()
            .unwrap();
        assert!(
            loaded.status.success(),
            "{label}: load --into podman: {}",
            String::from_utf8_lossy(&loaded.stderr)
        );
        // Importing again adds nothing.
        let again = ok(&target, &["import", path_str(layout)]);
        assert_eq!(again["blobs_added"], 0);
        assert_eq!(again["blobs_present"], wanted.len());
    }
    assert!(
        p.env.proxy.log().is_empty(),
        "something reached the network after the export: {:?}",
        p.env.proxy.log()
    );
}

#[test]
fn a_ref_naming_an_index_exports_this_machine_s_platform_unless_all_platforms() {
    let p = pulled();
    let out = p.env.dir.path().join("host.tar");
    let exported = ok(
        &p.env.store(),
        &["export", &p.ref_index, "-o", path_str(&out)],
    );
    let amd64 = &p.index.images[0];
    assert_eq!(
        exported["images"][0]["digest"],
        amd64.descriptor.digest().to_string()
    );
    assert_eq!(tar_blobs(&out), image_blobs(amd64));
}

#[test]
fn skopeo_and_podman_read_the_archive_and_skopeo_s_archive_imports() {
    let p = pulled();
    let store = p.env.store();
    let work = p.env.dir.path().to_path_buf();
    let both = work.join("both.tar");
    ok(
        &store,
        &[
            "export",
            "--all-platforms",
            &p.ref_a,
            &p.ref_index,
            "-o",
            path_str(&both),
        ],
    );
    let archive_ref = |path: &Path, name: &str| format!("oci-archive:{}:{name}", path.display());
    let inspected = skopeo_json(&["inspect", &archive_ref(&both, &p.ref_a)]);
    assert_eq!(inspected["Digest"], p.a.descriptor.digest().to_string());
    let raw = skopeo(&["inspect", "--raw", &archive_ref(&both, &p.ref_index)]);
    assert_eq!(
        raw.trim_end().as_bytes(),
        &p.index.bytes[..],
        "skopeo saw another index"
    );

    // podman loads an archive of one image under its name; the image ID is the config
    // digest.
    let single = work.join("a.tar");
    ok(&store, &["export", &p.ref_a, "-o", path_str(&single)]);
    let podman = |args: &[&str]| {
        let output = Command::new("podman")
            .arg("--root")
            .arg(work.join("podman/root"))
            .arg("--runroot")
            .arg(work.join("podman/run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "podman {args:?}: {}",
            stderr(&output)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    let loaded = podman(&["load", "-i", path_str(&single)]);
    assert!(loaded.contains(&p.ref_a), "{loaded}");
    let id = podman(&["image", "inspect", "--format", "{{.Id}}", &p.ref_a]);
    assert_eq!(id, p.a.config.digest().digest());

    // And the other way: an archive skopeo writes (blobs before index.json) imports.
    let written = work.join("skopeo.tar");
    let source = format!("oci:{}:{}", store.display(), p.ref_a);
    skopeo(&["copy", "--quiet", &source, &archive_ref(&written, &p.ref_a)]);
    let target = work.join("from-skopeo");
    let imported = ok(&target, &["import", path_str(&written)]);
    assert_eq!(imported["images"][0]["name"], p.ref_a.as_str());
    assert_eq!(
        listed(&target),
        vec![(p.ref_a.clone(), p.a.descriptor.digest().to_string())]
    );
    ok(&target, &["verify"]);
}

#[test]
fn the_same_images_export_to_the_same_bytes_from_any_store() {
    let p = pulled();
    let work = p.env.dir.path().to_path_buf();
    let export = |store: &Path, out: &Path| {
        ok(
            store,
            &[
                "export",
                "--all-platforms",
                &p.ref_index,
                &p.ref_a,
                "-o",
                path_str(out),
            ],
        );
        fs::read(out).unwrap()
    };
    let first = export(&p.env.store(), &work.join("1.tar"));
    let second = export(&p.env.store(), &work.join("2.tar"));
    assert!(first == second, "two exports of one store differ");
    // A store that got the images another way (files with other times and owners)
    // exports the same bytes.
    let other_store = work.join("other-store");
    ok(&other_store, &["import", path_str(&work.join("1.tar"))]);
    let third = export(&other_store, &work.join("3.tar"));
    assert!(first == third, "the export of an imported store differs");

    let entries = tar_entries(&work.join("1.tar"));
    let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        names[..4],
        ["oci-layout", "index.json", "blobs/", "blobs/sha256/"]
    );
    let blobs: Vec<&str> = names[4..].to_vec();
    let mut sorted = blobs.clone();
    sorted.sort();
    assert_eq!(blobs, sorted, "blobs are not in digest order");
    for entry in &entries {
        let mode = if entry.kind.is_dir() { 0o755 } else { 0o644 };
        assert_eq!(
            (entry.mode, entry.uid, entry.gid, entry.mtime),
            (mode, 0, 0, 0),
            "{}",
            entry.path
        );
    }
}

#[test]
fn a_lockfile_exports_its_pins_and_a_missing_image_is_named() {
    let p = pulled();
    let store = p.env.store();
    let work = p.env.dir.path().to_path_buf();
    let lockfile = work.join("stowage.lock");
    ok(
        &store,
        &["lock", "-o", path_str(&lockfile), &p.ref_a, &p.ref_index],
    );
    let out = work.join("locked.tar");
    let exported = ok(
        &store,
        &[
            "export",
            "--lock",
            path_str(&lockfile),
            "-o",
            path_str(&out),
        ],
    );
    let amd64 = &p.index.images[0];
    let mut wanted = image_blobs(&p.a);
    wanted.extend(image_blobs(amd64));
    assert_eq!(tar_blobs(&out), wanted, "{exported}");
    let target = work.join("target");
    ok(&target, &["import", path_str(&out)]);
    ok(&target, &["verify", "--lock", path_str(&lockfile)]);
    ok(&target, &["sync", "--offline", path_str(&lockfile)]);

    // An image pinned but never pulled: the export names what is missing and how to
    // get it, and writes nothing.
    let late_layer = put_layer(&p.env.fixtures, &sample_tree("late"), Compression::Zstd);
    let late = put_image(&p.env.fixtures, "amd64", vec![late_layer]);
    p.env.push(&late.descriptor, "tools/late:1");
    let ref_late = p.env.via_proxy("tools/late:1");
    ok(&store, &["lock", "-o", path_str(&lockfile), &ref_late]);
    let missing_out = work.join("missing.tar");
    let message = fails(
        &store,
        &[
            "export",
            "--lock",
            path_str(&lockfile),
            "-o",
            path_str(&missing_out),
        ],
    );
    for needle in [
        late.descriptor.digest().to_string(),
        ref_late.clone(),
        "stowage sync".to_string(),
    ] {
        assert!(message.contains(&needle), "{needle} not in: {message}");
    }
    assert!(!missing_out.exists());
    assert_no_temp_files(&work);
}
