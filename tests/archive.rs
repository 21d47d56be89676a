//! Air-gapped transfer: `stowage export` writes an OCI layout (tar or directory) with
//! only the blobs the images need; `stowage import` puts it into another store, every
//! blob verified, refs only at the end. Images are pulled from the real registry first;
//! afterwards the registry is stopped and nothing may reach the network. skopeo and
//! podman read the archives; corrupt, truncated and escaping archives are refused and
//! leave the target store as it was.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::fixtures::{
    gzip_zstd_image, put_image, put_layer, sample_tree, sha256_digest, skopeo, skopeo_json,
    two_platform_index, Compression, Image, Index,
};
use support::pulling::*;

/// Two images pulled into `env.store()`: a gzip+zstd image and (all platforms) a
/// two-platform index, plus a third image that no export asks for.
struct Pulled {
    env: Env,
    a: Image,
    index: Index,
    other: Image,
    ref_a: String,
    ref_index: String,
    ref_other: String,
}

fn pulled() -> Pulled {
    let env = Env::new();
    let a = gzip_zstd_image(&env.fixtures, "amd64");
    let index = two_platform_index(&env.fixtures);
    let other_layer = put_layer(&env.fixtures, &sample_tree("other"), Compression::Gzip);
    let other = put_image(&env.fixtures, "amd64", vec![other_layer]);
    env.push(&a.descriptor, "tools/a:1");
    env.push(&index.descriptor, "multi/arch:1");
    env.push(&other.descriptor, "tools/other:1");
    let (ref_a, ref_index, ref_other) = (
        env.via_proxy("tools/a:1"),
        env.via_proxy("multi/arch:1"),
        env.via_proxy("tools/other:1"),
    );
    env.pull(&[&ref_a]);
    env.pull(&["--all-platforms", &ref_index]);
    env.pull(&[&ref_other]);
    Pulled {
        env,
        a,
        index,
        other,
        ref_a,
        ref_index,
        ref_other,
    }
}

/// Digests of an image's manifest, config and layers.
fn image_blobs(image: &Image) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = [image.descriptor.digest(), image.config.digest()]
        .into_iter()
        .map(ToString::to_string)
        .collect();
    set.extend(
        image
            .layers
            .iter()
            .map(|l| l.descriptor.digest().to_string()),
    );
    set
}

fn index_blobs(index: &Index) -> BTreeSet<String> {
    let mut set = BTreeSet::from([index.descriptor.digest().to_string()]);
    for image in &index.images {
        set.extend(image_blobs(image));
    }
    set
}

/// Runs stowage on `store` and returns the JSON summary; panics with stderr on failure.
fn ok(store: &Path, args: &[&str]) -> Value {
    let output = stowage_in(store, args);
    assert!(
        output.status.success(),
        "stowage {args:?} failed: {}",
        stderr(&output)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stowage {args:?} printed bad JSON ({e})"))
}

/// Runs stowage on `store`, expects failure, and returns stderr.
fn fails(store: &Path, args: &[&str]) -> String {
    let output = stowage_in(store, args);
    assert!(
        !output.status.success(),
        "stowage {args:?} succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr(&output)
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The digests of the blobs a tar archive holds.
fn tar_blobs(path: &Path) -> BTreeSet<String> {
    tar_entries(path)
        .into_iter()
        .filter_map(|e| {
            e.path
                .strip_prefix("blobs/sha256/")
                .map(|h| format!("sha256:{h}"))
        })
        .filter(|d| d.len() > "sha256:".len())
        .collect()
}

fn dir_blobs(root: &Path) -> BTreeSet<String> {
    match fs::read_dir(root.join("blobs/sha256")) {
        Ok(dir) => dir
            .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// One tar entry as the test sees it.
#[derive(Debug)]
struct TarEntry {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    /// Where its data starts in the file, and how long it is.
    data_at: u64,
    size: u64,
}

fn tar_entries(path: &Path) -> Vec<TarEntry> {
    let mut archive = tar::Archive::new(fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            TarEntry {
                path: e.path().unwrap().to_string_lossy().into_owned(),
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                data_at: e.raw_file_position(),
                size: e.size(),
            }
        })
        .collect()
}

/// What a store holds: its blob files, its index.json, and partial ingests.
fn snapshot(store: &Path) -> (BTreeSet<String>, Vec<u8>, u64) {
    (
        dir_blobs(store),
        fs::read(store.join("index.json")).unwrap(),
        partial_bytes(store),
    )
}

/// `ls` as (name, digest) pairs, sorted.
fn listed(store: &Path) -> Vec<(String, String)> {
    let mut refs: Vec<(String, String)> = ok(store, &["ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    refs.sort();
    refs
}

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

/// Replaces the byte at `at` with its complement.
fn flip(path: &Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= 0xff;
    fs::write(path, bytes).unwrap();
}

#[test]
fn corrupt_truncated_and_escaping_archives_leave_the_store_as_it_was() {
    let p = pulled();
    let store = p.env.store();
    let work = p.env.dir.path().to_path_buf();
    let full = work.join("full.tar");
    ok(
        &store,
        &[
            "export",
            "--all-platforms",
            &p.ref_a,
            &p.ref_index,
            "-o",
            path_str(&full),
        ],
    );
    // The target already holds image a (which shares a layer with the index).
    let only_a = work.join("a.tar");
    ok(&store, &["export", &p.ref_a, "-o", path_str(&only_a)]);
    let target = work.join("target");
    ok(&target, &["import", path_str(&only_a)]);
    let before = snapshot(&target);
    let held = before.0.clone();
    let check_unchanged = |what: &str| {
        assert_eq!(snapshot(&target), before, "{what} changed the store");
        ok(&target, &["verify"]);
    };
    let entries = tar_entries(&full);
    let new_blobs: Vec<&TarEntry> = entries
        .iter()
        .filter(|e| {
            let digest = e.path.replace("blobs/sha256/", "sha256:");
            e.path.starts_with("blobs/sha256/") && e.size > 0 && !held.contains(&digest)
        })
        .collect();
    assert!(new_blobs.len() >= 2, "{new_blobs:?}");

    // One flipped byte in a layer: refused, naming the layer, expected and actual.
    let arm64_layer = p.index.images[1].layers[0].descriptor.clone();
    let hex = arm64_layer.digest().digest();
    let layer = new_blobs
        .iter()
        .find(|e| e.path.ends_with(hex))
        .expect("the arm64 layer is in the archive");
    let flipped = work.join("flipped.tar");
    fs::copy(&full, &flipped).unwrap();
    flip(&flipped, layer.data_at + layer.size / 2);
    let mut bad = p.index.images[1].layers[0].blob.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    let message = fails(&target, &["import", path_str(&flipped)]);
    for needle in [
        arm64_layer.digest().to_string(),
        sha256_digest(&bad).to_string(),
        format!("{} bytes", arm64_layer.size()),
    ] {
        assert!(message.contains(&needle), "{needle} not in: {message}");
    }
    check_unchanged("a flipped byte");

    // Truncated inside the last new blob, after every other new blob went in.
    let last = new_blobs.last().unwrap();
    let cut = last.data_at + last.size / 2;
    let truncated = work.join("truncated.tar");
    fs::write(&truncated, &fs::read(&full).unwrap()[..cut as usize]).unwrap();
    let message = fails(&target, &["import", path_str(&truncated)]);
    let digest = last.path.replace("blobs/sha256/", "sha256:");
    for needle in [
        digest.clone(),
        format!("expected {} bytes", last.size),
        format!("holds {}", last.size / 2),
    ] {
        assert!(message.contains(&needle), "{needle} not in: {message}");
    }
    check_unchanged("a truncated archive");

    // An entry that escapes the root, after the blobs: refused, nothing extracted.
    for evil in ["../evil", "/tmp/stowage-evil"] {
        let escaping = work.join("escaping.tar");
        with_extra_entry(&full, &escaping, evil);
        let message = fails(&target, &["import", path_str(&escaping)]);
        assert!(
            message.contains(evil) && message.contains("escapes"),
            "{message}"
        );
        check_unchanged(evil);
    }
    assert!(!work.join("evil").exists() && !Path::new("/tmp/stowage-evil").exists());

    // The intact archive still imports.
    ok(&target, &["import", path_str(&full)]);
    assert_eq!(listed(&target).len(), 2);
}

/// Copies the archive at `from` to `to` with one more regular file, named `name`
/// byte for byte (the tar crate refuses to write such names itself), at the end.
fn with_extra_entry(from: &Path, to: &Path, name: &str) {
    let mut builder = tar::Builder::new(fs::File::create(to).unwrap());
    let mut archive = tar::Archive::new(fs::File::open(from).unwrap());
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header().clone();
        builder.append(&header, entry).unwrap();
    }
    let data = b"pwned\n";
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, &data[..]).unwrap();
    builder.finish().unwrap();
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

/// No half-written export is left beside the outputs.
fn assert_no_temp_files(dir: &Path) {
    let leftovers: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("stowage-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_blob_that_rotted_in_the_store_stops_the_export() {
    let p = pulled();
    let store = p.env.store();
    let work = p.env.dir.path().to_path_buf();
    let layer = &p.a.layers[1];
    let blob = store
        .join("blobs/sha256")
        .join(layer.descriptor.digest().digest());
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    flip(&blob, layer.blob.len() as u64 / 2);
    for out in [work.join("rotted.tar"), work.join("rotted-dir")] {
        let message = fails(&store, &["export", &p.ref_a, "-o", path_str(&out)]);
        assert!(
            message.contains(&layer.descriptor.digest().to_string()) && message.contains("corrupt"),
            "{message}"
        );
        assert!(!out.exists(), "{} was written", out.display());
    }
    assert_no_temp_files(&work);
}
