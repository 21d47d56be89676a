//! Test images built in code, byte for byte reproducible, written into a [`Store`];
//! plus helpers that run skopeo (and other tools) against them.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::str::FromStr;

use oci_spec::image::{Arch, Descriptor, Digest, MediaType, Os, Platform, PlatformBuilder};
use serde_json::json;
use sha2::Digest as _;
use stowage_store::Store;

use super::registry::Registry;

/// The zstd level used for layers; fixed so blobs are reproducible.
const ZSTD_LEVEL: i32 = 3;

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
}

/// One entry of a layer's file tree: a relative path (slashes trimmed), kind and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
}

impl Entry {
    fn new(path: &str, kind: EntryKind, mode: u32) -> Self {
        let path = path.trim_matches('/').to_string();
        Self { path, kind, mode }
    }

    /// A regular file.
    pub fn file(path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        Self::new(path, EntryKind::File(contents.into()), mode)
    }

    /// A directory (mode 0755).
    pub fn dir(path: &str) -> Self {
        Self::new(path, EntryKind::Dir, 0o755)
    }

    /// A symbolic link to `target`.
    pub fn symlink(path: &str, target: &str) -> Self {
        Self::new(path, EntryKind::Symlink(target.to_string()), 0o777)
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn media_type(self) -> MediaType {
        match self {
            Self::Gzip => MediaType::ImageLayerGzip,
            Self::Zstd => MediaType::ImageLayerZstd,
        }
    }

    /// Compresses `data` deterministically (gzip with mtime 0 and no name).
    pub fn compress(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Gzip => {
                let mut encoder = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(Vec::new(), flate2::Compression::default());
                encoder.write_all(data).expect("gzip into memory");
                encoder.finish().expect("gzip into memory")
            }
            Self::Zstd => zstd::encode_all(data, ZSTD_LEVEL).expect("zstd into memory"),
        }
    }
}

/// A layer: its blob (as stored and pushed), descriptor, and uncompressed tar.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Descriptor of the (possibly compressed) blob, as a manifest lists it.
    pub descriptor: Descriptor,
    /// sha256 of the uncompressed tar, as the config's `rootfs.diff_ids` lists it.
    pub diff_id: Digest,
    pub blob: Vec<u8>,
}

/// A single-platform image: manifest, config and layers, all stored.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest's descriptor, with the platform set.
    pub descriptor: Descriptor,
    pub manifest: Vec<u8>,
    pub config: Descriptor,
    pub config_bytes: Vec<u8>,
    pub layers: Vec<Layer>,
}

/// An image index and the images it lists, all stored.
#[derive(Debug, Clone)]
pub struct Index {
    pub descriptor: Descriptor,
    pub bytes: Vec<u8>,
    pub images: Vec<Image>,
}

/// The sha256 digest of `data`, computed here with `sha2` rather than by the store.
pub fn sha256_digest(data: &[u8]) -> Digest {
    Digest::from_str(&format!("sha256:{:x}", sha2::Sha256::digest(data))).expect("a digest")
}

/// Stores `data` and checks the store filed it under its sha256.
pub fn put_blob(store: &Store, data: &[u8]) -> Digest {
    let digest = store.put(data).expect("store a blob");
    assert_eq!(
        digest,
        sha256_digest(data),
        "store.put returned a wrong digest"
    );
    digest
}

/// An uncompressed tar of `entries`: sorted by path, mtime 0, owner 0:0, GNU headers.
pub fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut builder = tar::Builder::new(Vec::new());
    for entry in sorted {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(entry.mode);
        let path = entry.path.as_str();
        let (kind, data): (_, &[u8]) = match &entry.kind {
            EntryKind::File(contents) => (tar::EntryType::Regular, contents),
            EntryKind::Dir => (tar::EntryType::Directory, &[]),
            EntryKind::Symlink(_) => (tar::EntryType::Symlink, &[]),
        };
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        let appended = match &entry.kind {
            EntryKind::Symlink(target) => builder.append_link(&mut header, path, target),
            EntryKind::Dir => builder.append_data(&mut header, format!("{path}/"), data),
            EntryKind::File(_) => builder.append_data(&mut header, path, data),
        };
        appended.unwrap_or_else(|e| panic!("tar {path}: {e}"));
    }
    builder.into_inner().expect("finish the tar")
}

/// Builds a layer from `entries` without storing it.
pub fn build_layer(entries: &[Entry], compression: Compression) -> Layer {
    let tar = tar_of(entries);
    let blob = compression.compress(&tar);
    let descriptor = Descriptor::new(
        compression.media_type(),
        blob.len() as u64,
        sha256_digest(&blob),
    );
    Layer {
        descriptor,
        diff_id: sha256_digest(&tar),
        blob,
    }
}

/// Builds a layer from `entries` and stores its blob.
pub fn put_layer(store: &Store, entries: &[Entry], compression: Compression) -> Layer {
    let layer = build_layer(entries, compression);
    put_blob(store, &layer.blob);
    layer
}

/// `linux/<arch>` as a descriptor platform.
pub fn linux(arch: &str) -> Platform {
    PlatformBuilder::default()
        .architecture(Arch::from(arch))
        .os(Os::Linux)
        .build()
        .expect("a platform")
}

/// The environment the config of an image for `arch` carries (so configs differ).
pub fn image_env(arch: &str) -> Vec<String> {
    vec![
        "PATH=/usr/local/bin:/usr/bin:/bin".to_string(),
        format!("STOWAGE_FIXTURE_ARCH={arch}"),
    ]
}

/// Stores `layers` (again, harmlessly), a config and a manifest for `linux/<arch>`.
pub fn put_image(store: &Store, arch: &str, layers: Vec<Layer>) -> Image {
    for layer in &layers {
        put_blob(store, &layer.blob);
    }
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
    let config_json = json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": image_env(arch),
            "Cmd": ["/bin/sh", "-c", "cat /etc/stowage-fixture"],
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config_bytes = serde_json::to_vec(&config_json).expect("config JSON");
    let config = Descriptor::new(
        MediaType::ImageConfig,
        config_bytes.len() as u64,
        put_blob(store, &config_bytes),
    );
    let layer_descriptors: Vec<&Descriptor> = layers.iter().map(|l| &l.descriptor).collect();
    let manifest_json = json!({
        "schemaVersion": 2,
        "mediaType": MediaType::ImageManifest,
        "config": config,
        "layers": layer_descriptors,
    });
    let manifest = serde_json::to_vec(&manifest_json).expect("manifest JSON");
    let mut descriptor = Descriptor::new(
        MediaType::ImageManifest,
        manifest.len() as u64,
        put_blob(store, &manifest),
    );
    descriptor.set_platform(Some(linux(arch)));
    Image {
        descriptor,
        manifest,
        config,
        config_bytes,
        layers,
    }
}

/// Stores an OCI index listing `images` (each descriptor keeps its platform).
pub fn put_index(store: &Store, images: Vec<Image>) -> Index {
    let manifests: Vec<&Descriptor> = images.iter().map(|i| &i.descriptor).collect();
    let index_json = json!({
        "schemaVersion": 2,
        "mediaType": MediaType::ImageIndex,
        "manifests": manifests,
    });
    let bytes = serde_json::to_vec(&index_json).expect("index JSON");
    let descriptor = Descriptor::new(
        MediaType::ImageIndex,
        bytes.len() as u64,
        put_blob(store, &bytes),
    );
    Index {
        descriptor,
        bytes,
        images,
    }
}

/// A small file tree whose contents name `label`: directories, an executable, a
/// read-only file, a nested file and a symlink.
pub fn sample_tree(label: &str) -> Vec<Entry> {
    vec![
        Entry::dir("etc"),
        Entry::file("etc/stowage-fixture", format!("fixture {label}\n"), 0o644),
        Entry::file("etc/readonly.conf", format!("key = {label}\n"), 0o444),
        Entry::dir("usr"),
        Entry::dir("usr/bin"),
        Entry::file(
            "usr/bin/hello",
            format!("#!/bin/sh\necho hello from {label}\n"),
            0o755,
        ),
        Entry::symlink("usr/bin/hi", "hello"),
        Entry::dir("var"),
        Entry::dir("var/lib"),
        Entry::dir("var/lib/stowage"),
        Entry::file("var/lib/stowage/data.bin", label.repeat(512), 0o600),
    ]
}

/// A second layer's tree, which adds a file and overwrites one from [`sample_tree`].
pub fn overlay_tree(label: &str) -> Vec<Entry> {
    vec![
        Entry::dir("etc"),
        Entry::file("etc/stowage-fixture", format!("overlay {label}\n"), 0o644),
        Entry::dir("opt"),
        Entry::file("opt/extra.txt", format!("extra for {label}\n"), 0o640),
    ]
}

/// A `linux/<arch>` image of one gzip layer of [`sample_tree`] (what umoci 0.4.7 reads).
pub fn gzip_image(store: &Store, arch: &str) -> Image {
    let base = put_layer(store, &sample_tree(arch), Compression::Gzip);
    put_image(store, arch, vec![base])
}

/// A `linux/<arch>` image of a gzip [`sample_tree`] layer and a zstd [`overlay_tree`] layer.
pub fn gzip_zstd_image(store: &Store, arch: &str) -> Image {
    let base = put_layer(store, &sample_tree(arch), Compression::Gzip);
    let overlay = put_layer(store, &overlay_tree(arch), Compression::Zstd);
    put_image(store, arch, vec![base, overlay])
}

/// An index for linux/amd64 and linux/arm64, whose layers differ by architecture.
pub fn two_platform_index(store: &Store) -> Index {
    let images = ["amd64", "arm64"]
        .iter()
        .map(|arch| gzip_image(store, arch))
        .collect();
    put_index(store, images)
}

/// The layer digests (`sha256:…`) a manifest lists, in order.
pub fn layer_digests_of(manifest: &serde_json::Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .expect("a manifest lists layers")
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Names `descriptor` `name` in the store's index.json.
pub fn set_ref(store: &Store, name: &str, descriptor: &Descriptor) {
    store
        .set_ref(name, descriptor)
        .unwrap_or_else(|e| panic!("set_ref {name}: {e}"));
}

/// Stores [`gzip_zstd_image`] for `arch` and names it `name`.
pub fn tagged_image(store: &Store, name: &str, arch: &str) -> Image {
    let image = gzip_zstd_image(store, arch);
    set_ref(store, name, &image.descriptor);
    image
}

/// Stores [`two_platform_index`] and names it `name`.
pub fn tagged_index(store: &Store, name: &str) -> Index {
    let index = two_platform_index(store);
    set_ref(store, name, &index.descriptor);
    index
}

/// `oci:<store>:<ref>`, skopeo's name for a ref in an OCI layout.
pub fn oci_ref(store_dir: &Path, ref_name: &str) -> String {
    format!("oci:{}:{ref_name}", store_dir.display())
}

/// Runs `program args`, returning its output whatever the exit status.
pub fn run_output(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

/// Runs `program args` and returns stdout; panics with stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    run_or_explain(program, args, String::new)
}

/// Like [`run`], adding `context()` (say, a server's log) to the panic message.
pub fn run_or_explain(program: &str, args: &[&str], context: impl FnOnce() -> String) -> String {
    let output = run_output(program, args);
    if !output.status.success() {
        panic!(
            "{program} {} failed ({}):\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr),
            context()
        );
    }
    String::from_utf8(output.stdout).unwrap_or_else(|e| panic!("{program} printed non-UTF-8: {e}"))
}

/// Runs `skopeo args` and returns stdout; panics with stderr when it fails.
pub fn skopeo(args: &[&str]) -> String {
    run("skopeo", args)
}

/// `skopeo args` whose stdout is JSON, parsed.
pub fn skopeo_json(args: &[&str]) -> serde_json::Value {
    let out = skopeo(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("skopeo printed bad JSON ({e}):\n{out}"))
}

/// Copies ref `ref_name` of the store at `store_dir` (every platform) to
/// `docker://<registry>/<dest>`, where `dest` is `repo:tag`, over plain HTTP.
pub fn push_with_skopeo(store_dir: &Path, ref_name: &str, registry: &Registry, dest: &str) {
    let source = oci_ref(store_dir, ref_name);
    let target = format!("docker://{}/{dest}", registry.addr());
    let tls = "--dest-tls-verify=false";
    let args = ["copy", "--all", "--quiet", tls, &source, &target];
    run_or_explain("skopeo", &args, || {
        format!("registry log:\n{}", registry.log_tail(30))
    });
}
