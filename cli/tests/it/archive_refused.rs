//! Archives `stowage import` refuses (a flipped byte, a truncated blob, an entry that
//! escapes the root, a gzip bomb) leave the target store as it was, and a blob that
//! rotted in the store stops `stowage export` before anything is written.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::archive_check::{
    assert_no_temp_files, dir_blobs, fails, listed, ok, path_str, pulled, tar_entries, TarEntry,
};
use crate::support::fixtures::sha256_digest;
use crate::support::pulling::partial_bytes;

/// What a store holds: its blob files, its index.json, and partial ingests.
fn snapshot(store: &Path) -> (BTreeSet<String>, Vec<u8>, u64) {
    (
        dir_blobs(store),
        fs::read(store.join("index.json")).unwrap(),
        partial_bytes(store),
    )
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

/// What a small gzip archive whose one layer entry decompresses to this much claims.
const BOMB: u64 = 4 << 30;

/// A `.tar.gz` OCI layout: oci-layout, index.json, the manifest, the config, then a
/// layer entry whose tar header (and data, all zeros) says [`BOMB`] bytes while the
/// manifest says the layer is 11 bytes. Zeros are streamed through the gzip encoder;
/// the archive is a few MiB. Returns the layer's digest.
fn gzip_bomb(path: &Path) -> String {
    let layer = sha256_digest(b"small layer");
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = sha256_digest(config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer.to_string(),
            "size": 11,
        }],
    }))
    .unwrap();
    let manifest_digest = sha256_digest(&manifest);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest.to_string(),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "bomb:1"},
        }],
    }))
    .unwrap();
    let gzip = flate2::write::GzEncoder::new(
        io::BufWriter::new(fs::File::create(path).unwrap()),
        flate2::Compression::default(),
    );
    let mut builder = tar::Builder::new(gzip);
    let blob = |digest: &stowage::store::Digest| format!("blobs/sha256/{}", digest.digest());
    let small: [(String, &[u8]); 4] = [
        ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json".into(), &index),
        (blob(&manifest_digest), &manifest),
        (blob(&config_digest), config),
    ];
    for (name, data) in small {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, data).unwrap();
    }
    let mut header = tar::Header::new_gnu();
    header.set_size(BOMB);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, blob(&layer), io::repeat(0).take(BOMB))
        .unwrap();
    builder.into_inner().unwrap().finish().unwrap();
    layer.to_string()
}

/// Bytes of every file under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => bytes_under(&e.path()),
                _ => e.metadata().map_or(0, |m| m.len()),
            })
            .sum()
    })
}

#[test]
fn a_gzip_bomb_is_refused_before_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.tar.gz");
    let layer = gzip_bomb(&bomb);
    let archive_size = fs::metadata(&bomb).unwrap().len();
    assert!(archive_size < 16 << 20, "{archive_size} bytes");
    let store = dir.path().join("store");
    ok(&store, &["du"]);
    let before = snapshot(&store);

    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .arg("--store")
        .arg(&store)
        .args(["--json", "import", path_str(&bomb)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Watched while it runs: what the refused archive puts on the store's disk.
    let bound = 16 << 20;
    let mut most = 0;
    let status = loop {
        most = most.max(bytes_under(&store));
        if most > bound {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the import wrote {most} bytes of a blob declared as 11");
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "still running");
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = started.elapsed();
    let mut message = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut message)
        .unwrap();
    assert!(!status.success());
    for needle in [layer.as_str(), "holds 4294967296 bytes", "is 11 bytes"] {
        assert!(message.contains(needle), "{needle} not in: {message}");
    }
    assert!(took < Duration::from_secs(10), "refused after {took:?}");
    assert!(most < 1 << 20, "{most} bytes in the store at most");
    assert_eq!(snapshot(&store), before, "the store changed");
    let left: Vec<_> = fs::read_dir(store.join("ingest")).unwrap().collect();
    assert!(left.is_empty(), "left in ingest/: {left:?}");
    ok(&store, &["verify"]);
    eprintln!("{archive_size}-byte bomb refused in {took:?}, at most {most} bytes in the store");
}
