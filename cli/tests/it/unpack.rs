//! `stowage unpack`: a stored image as a root filesystem, compared with what
//! `umoci unpack` makes of the same store; the guards (layers that escape, a
//! non-empty destination, a diff_id that does not match); and podman running a
//! program from the unpacked tree with `--rootfs`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;
use stowage_store::{Descriptor, Store};

use crate::runtime::images::put_runnable_image;
use crate::runtime::tools::{Podman, PODMAN_RUN};
use crate::support::fixtures::{put_blob, run, sha256_digest, Compression, Layer};
use crate::support::pulling::stowage_in;

/// One entry of a hand-made layer: what `tar_of` in the fixtures cannot write
/// (hard links, whiteouts, owners and modes of every kind).
enum Item {
    Dir(&'static str, u32),
    File(&'static str, &'static [u8], u32),
    Owned(&'static str, &'static [u8], u32, u64),
    Link(&'static str, &'static str),
    Hard(&'static str, &'static str),
}

fn layer_tar(items: &[Item]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_600_000_000);
        header.set_uid(0);
        header.set_gid(0);
        let (path, data): (&str, &[u8]) = match item {
            Item::Dir(path, mode) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                (path, &[])
            }
            Item::File(path, data, mode) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                (path, data)
            }
            Item::Owned(path, data, mode, owner) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_uid(*owner);
                header.set_gid(*owner);
                (path, data)
            }
            Item::Link(path, target) | Item::Hard(path, target) => {
                header.set_entry_type(if matches!(item, Item::Link(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                header.set_mode(0o777);
                header.set_size(0);
                builder
                    .append_link(&mut header, path, target)
                    .expect("a link entry");
                continue;
            }
        };
        header.set_size(data.len() as u64);
        if path.contains("..") {
            // What a hostile layer holds: the tar crate refuses to write it.
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, data).expect("an entry");
            continue;
        }
        builder
            .append_data(&mut header, path, data)
            .expect("an entry");
    }
    builder.into_inner().expect("a tar")
}

/// Stores a gzip image of `layers` (umoci reads no zstd) under `name`; a diff_id
/// given in `wrong_diff_id` replaces the first layer's in the config.
fn put_unpack_image(store: &Store, name: &str, layers: &[Vec<Item>], wrong_diff_id: bool) {
    let mut built: Vec<Layer> = layers
        .iter()
        .map(|items| {
            let tar = layer_tar(items);
            let blob = Compression::Gzip.compress(&tar);
            let descriptor = Descriptor::new(
                Compression::Gzip.media_type(),
                blob.len() as u64,
                put_blob(store, &blob),
            );
            Layer {
                descriptor,
                diff_id: sha256_digest(&tar),
                blob,
            }
        })
        .collect();
    if wrong_diff_id {
        built[0].diff_id = sha256_digest(b"another layer");
    }
    let (manifest, _config) = put_runnable_image(store, &built);
    store.set_ref(name, &manifest).expect("set_ref");
}

/// Three layers with whiteouts, an opaque directory, a hard link, a file that
/// replaces a directory, owners and set-id modes.
fn three_layers() -> Vec<Vec<Item>> {
    use Item::*;
    vec![
        vec![
            Dir("etc", 0o755),
            Dir("etc/conf", 0o755),
            File("etc/conf/a", b"a1", 0o644),
            File("etc/conf/b", b"b1", 0o644),
            Dir("opt", 0o755),
            Dir("opt/app", 0o755),
            File("opt/app/old", b"old", 0o644),
            Dir("opt/app/sub", 0o750),
            File("opt/app/sub/deep", b"deep", 0o600),
            Dir("usr", 0o755),
            Dir("usr/bin", 0o755),
            File("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755),
            Owned("usr/bin/su-ish", b"setuid", 0o4755, 0),
            Dir("usr/lib", 0o755),
            File("usr/lib/libx.so.1", b"ELF?", 0o644),
            Link("usr/lib/libx.so", "libx.so.1"),
            Dir("var", 0o755),
            Dir("var/cache", 0o755),
            File("var/cache/junk", b"junk", 0o644),
            Dir("home", 0o755),
            Dir("home/user", 0o700),
            Owned("home/user/notes", b"mine", 0o640, 1000),
        ],
        vec![
            File("etc/conf/.wh.a", b"", 0o644),
            Dir("opt/app", 0o755),
            File("opt/app/.wh..wh..opq", b"", 0o644),
            File("opt/app/new", b"new", 0o644),
            Hard("usr/bin/tool2", "usr/bin/tool"),
            File("var/cache", b"now a file", 0o644),
            Link("bin", "usr/bin"),
            Link("etc/abs", "/usr/lib/libx.so.1"),
        ],
        vec![
            Dir("etc", 0o700),
            Dir("etc/conf", 0o755),
            File("etc/conf/.wh..wh..opq", b"", 0o644),
            File("etc/conf/c", b"c3", 0o644),
            File("usr/lib/.wh.libx.so", b"", 0o644),
            File("opt/app/sub2", b"sub2", 0o644),
            File("usr/bin/tool", b"#!/bin/sh\necho tool v3\n", 0o755),
        ],
    ]
}

/// Every path under `root`: its kind, mode, owner, link target or contents.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            let what = if meta.file_type().is_symlink() {
                format!("link {}", fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                "dir".to_string()
            } else {
                format!(
                    "file {:?} links {}",
                    String::from_utf8_lossy(&fs::read(&path).unwrap()),
                    meta.nlink()
                )
            };
            let mode = if meta.file_type().is_symlink() {
                0
            } else {
                meta.mode() & 0o7777
            };
            out.insert(
                relative,
                format!("{what} mode {mode:o} owner {}:{}", meta.uid(), meta.gid()),
            );
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn new_store(dir: &Path) -> Store {
    Store::open(dir.join("store")).expect("a store")
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn unpack_makes_the_tree_umoci_makes_across_three_layers_of_whiteouts() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    put_unpack_image(&store, "app", &three_layers(), false);

    let ours = tmp.path().join("ours");
    let output = stowage_in(store.root(), &["unpack", "app", ours.to_str().unwrap()]);
    assert!(output.status.success(), "unpack: {}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("--json report");
    assert_eq!(
        report["layers"].as_array().map(Vec::len),
        Some(3),
        "{report}"
    );
    assert_eq!(report["layers"][1]["whiteouts"], 2, "{report}");

    let bundle = tmp.path().join("bundle");
    let image = format!("{}:app", store.root().display());
    run(
        "umoci",
        &["unpack", "--image", &image, bundle.to_str().unwrap()],
    );

    let (ours, theirs) = (tree(&ours), tree(&bundle.join("rootfs")));
    assert_eq!(ours, theirs, "stowage (left) and umoci (right) differ");
    // The tree is what the layers say, not only what umoci says.
    assert!(!ours.contains_key("etc/conf/a") && !ours.contains_key("etc/conf/b"));
    assert_eq!(ours["etc/conf/c"], "file \"c3\" links 1 mode 644 owner 0:0");
    assert!(!ours.contains_key("opt/app/old") && !ours.contains_key("opt/app/sub"));
    assert!(ours["opt/app/new"].starts_with("file \"new\""));
    // Layer 3 replaced `tool`: the hard link layer 2 made keeps the old file.
    assert!(ours["usr/bin/tool"].contains("tool v3") && ours["usr/bin/tool"].contains("links 1"));
    assert!(
        ours["usr/bin/tool2"].contains("echo tool\\n") && ours["usr/bin/tool2"].contains("links 1")
    );
    assert!(ours["var/cache"].starts_with("file \"now a file\""));
    assert!(!ours.contains_key("usr/lib/libx.so"));
    assert_eq!(ours["etc"], "dir mode 700 owner 0:0");
    assert_eq!(
        ours["usr/bin/su-ish"],
        "file \"setuid\" links 1 mode 4755 owner 0:0"
    );
    assert_eq!(
        ours["home/user/notes"],
        "file \"mine\" links 1 mode 640 owner 1000:1000"
    );
    assert_eq!(ours["etc/abs"], "link /usr/lib/libx.so.1 mode 0 owner 0:0");
}

#[test]
fn unpack_refuses_a_layer_that_writes_through_a_planted_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let outside_path: &'static str = Box::leak(outside.display().to_string().into_boxed_str());
    let cases: [(&str, Vec<Vec<Item>>); 3] = [
        (
            "absolute",
            vec![
                vec![Item::Link("escape", outside_path)],
                vec![Item::File("escape/pwned", b"x", 0o644)],
            ],
        ),
        (
            "relative",
            vec![
                vec![
                    Item::Dir("a", 0o755),
                    Item::Link("a/up", "../../../../../../.."),
                ],
                vec![Item::File(
                    Box::leak(format!("a/up{outside_path}/pwned").into_boxed_str()),
                    b"x",
                    0o644,
                )],
            ],
        ),
        (
            "hardlink",
            vec![
                vec![Item::Link("escape", outside_path)],
                vec![Item::Hard("stolen", "escape/secret")],
            ],
        ),
    ];
    fs::write(outside.join("secret"), b"secret").unwrap();
    for (name, layers) in cases {
        put_unpack_image(&store, name, &layers, false);
        let dest = tmp.path().join(format!("dest-{name}"));
        let output = stowage_in(store.root(), &["unpack", name, dest.to_str().unwrap()]);
        let text = stderr(&output);
        assert!(!output.status.success(), "{name}: unpack passed");
        assert!(
            text.contains("layer 2 of 2") && text.contains("outside the root"),
            "{name}: {text}"
        );
        assert!(!outside.join("pwned").exists(), "{name}: wrote outside");
        assert!(!dest.exists(), "{name}: the partial tree was left behind");
    }
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);

    // A `..` in an entry's own path is refused too.
    put_unpack_image(
        &store,
        "dotdot",
        &[vec![Item::File("../../pwned", b"x", 0o644)]],
        false,
    );
    let dest = tmp.path().join("dest-dotdot");
    let output = stowage_in(store.root(), &["unpack", "dotdot", dest.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("layer 1 of 1"),
        "{}",
        stderr(&output)
    );
    assert!(!tmp.path().join("pwned").exists());
}

#[test]
fn unpack_refuses_a_full_destination_and_a_wrong_diff_id() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    put_unpack_image(&store, "app", &three_layers(), false);
    put_unpack_image(&store, "lying", &three_layers(), true);

    let full = tmp.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("planted"), b"x").unwrap();
    let output = stowage_in(store.root(), &["unpack", "app", full.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("is not empty"),
        "{}",
        stderr(&output)
    );
    assert_eq!(fs::read_dir(&full).unwrap().count(), 1);

    // An empty directory is fine; a layer whose content is not the config's diff_id
    // stops the unpack, names the layer and both digests, and leaves it empty.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let output = stowage_in(store.root(), &["unpack", "lying", empty.to_str().unwrap()]);
    let text = stderr(&output);
    assert!(!output.status.success());
    let wrong = sha256_digest(b"another layer").to_string();
    let right = sha256_digest(&layer_tar(&three_layers()[0])).to_string();
    assert!(
        text.contains("layer 1 of 3") && text.contains(&wrong) && text.contains(&right),
        "{text}"
    );
    assert!(empty.exists() && fs::read_dir(&empty).unwrap().count() == 0);
}

#[test]
fn podman_runs_a_program_from_the_unpacked_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let store = new_store(tmp.path());
    let busybox: &'static [u8] = Box::leak(fs::read("/bin/busybox").unwrap().into_boxed_slice());
    put_unpack_image(
        &store,
        "busybox",
        &[
            vec![
                Item::Dir("bin", 0o755),
                Item::File("bin/busybox", busybox, 0o755),
                Item::Link("bin/sh", "busybox"),
                Item::Link("bin/cat", "busybox"),
            ],
            vec![Item::File("hello", b"hello from an unpacked tree\n", 0o644)],
        ],
        false,
    );
    let rootfs = tmp.path().join("rootfs");
    let output = stowage_in(
        store.root(),
        &["unpack", "busybox", rootfs.to_str().unwrap()],
    );
    assert!(output.status.success(), "unpack: {}", stderr(&output));

    let podman = Podman::new(tmp.path());
    let mut args = PODMAN_RUN.to_vec();
    let rootfs_arg = rootfs.display().to_string();
    args.extend(["--rootfs", &rootfs_arg, "/bin/sh", "-c", "cat /hello"]);
    let ran = podman.output(&args);
    assert!(
        ran.status.success(),
        "podman run --rootfs: {}",
        stderr(&ran)
    );
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        "hello from an unpacked tree\n"
    );
}
