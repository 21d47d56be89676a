//! The store is a real OCI image layout: skopeo and umoci read what stowage wrote, and
//! skopeo pushes it to a real registry without changing a digest.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;
use stowage_store::Store;
use tempfile::TempDir;

use crate::support::fixtures::{
    self, oci_ref, push_with_skopeo, sha256_digest, skopeo, skopeo_json, Image,
};
use crate::support::registry::{http_get_status, port_open, Registry};

/// A ref name in the form stowage gives pulled images: colons in it are fine for
/// skopeo's `oci:PATH:REF`, which splits at the first colon after the path.
const REGISTRY_STYLE_REF: &str = "localhost:5000/tools/x:1.0";

/// An empty store in a fresh tempdir (kept alive by the returned guard).
fn new_store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("store")).expect("open store");
    (dir, store)
}

fn root(store: &Store) -> &Path {
    store.root()
}

/// The layer digests of `image`, as strings in manifest order.
fn layer_digests(image: &Image) -> Vec<String> {
    image
        .layers
        .iter()
        .map(|l| l.descriptor.digest().to_string())
        .collect()
}

/// A JSON array of strings as a Vec (empty when absent), for comparisons.
fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("a string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks skopeo's summary of one image against what the fixture stored.
fn assert_summary(summary: &Value, image: &Image, arch: &str) {
    assert_eq!(summary["Architecture"], arch, "{summary}");
    assert_eq!(summary["Os"], "linux", "{summary}");
    assert_eq!(
        strings(&summary["Layers"]),
        layer_digests(image),
        "{summary}"
    );
    assert_eq!(
        strings(&summary["Env"]),
        fixtures::image_env(arch),
        "{summary}"
    );
}

#[test]
fn skopeo_reads_a_gzip_and_zstd_image() {
    let (_tmp, store) = new_store();
    let image = fixtures::tagged_image(&store, REGISTRY_STYLE_REF, "amd64");
    let source = oci_ref(root(&store), REGISTRY_STYLE_REF);

    let summary = skopeo_json(&["inspect", &source]);
    assert_eq!(summary["Digest"], image.descriptor.digest().to_string());
    assert_summary(&summary, &image, "amd64");

    let raw = skopeo(&["inspect", "--raw", &source]);
    assert_eq!(raw.as_bytes(), image.manifest.as_slice());
    let manifest: Value = serde_json::from_str(&raw).expect("manifest JSON");
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let media_types: Vec<&str> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["mediaType"].as_str().expect("mediaType"))
        .collect();
    assert_eq!(
        media_types,
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd"
        ]
    );

    let config = skopeo(&["inspect", "--config", "--raw", &source]);
    assert_eq!(config.as_bytes(), image.config_bytes.as_slice());
}

#[test]
fn skopeo_reads_a_two_platform_index() {
    let (_tmp, store) = new_store();
    let index = fixtures::tagged_index(&store, "multi");
    let source = oci_ref(root(&store), "multi");

    let raw = skopeo(&["inspect", "--raw", &source]);
    assert_eq!(raw.as_bytes(), index.bytes.as_slice());
    assert_eq!(&sha256_digest(raw.as_bytes()), index.descriptor.digest());

    assert_eq!(index.images.len(), 2);
    assert_ne!(
        layer_digests(&index.images[0]),
        layer_digests(&index.images[1]),
        "the platforms must differ for the choice to be visible"
    );
    for image in &index.images {
        let arch = image.descriptor.platform().as_ref().expect("platform");
        let arch = arch.architecture().to_string();
        let summary = skopeo_json(&["--override-arch", &arch, "inspect", &source]);
        // skopeo reports the digest of what the ref names (the index) and the contents
        // of the platform it picked.
        assert_eq!(summary["Digest"], index.descriptor.digest().to_string());
        assert_summary(&summary, image, &arch);
        let config = skopeo(&[
            "--override-arch",
            &arch,
            "inspect",
            "--config",
            "--raw",
            &source,
        ]);
        assert_eq!(config.as_bytes(), image.config_bytes.as_slice());
    }
}

/// umoci 0.4.7 refuses zstd layers ("blob is not correct mediatype") and indexes
/// ("tag is ambiguous"), so this uses a single-platform gzip image.
#[test]
fn umoci_unpacks_a_gzip_image() {
    let (tmp, store) = new_store();
    let image = fixtures::gzip_image(&store, "amd64");
    fixtures::set_ref(&store, "app", &image.descriptor);
    let bundle = tmp.path().join("bundle");
    let image_arg = format!("{}:app", root(&store).display());
    fixtures::run(
        "umoci",
        &[
            "unpack",
            "--image",
            &image_arg,
            bundle.to_str().expect("utf-8"),
        ],
    );

    let rootfs = bundle.join("rootfs");
    let mut checked = 0;
    for entry in fixtures::sample_tree("amd64") {
        let path = rootfs.join(&entry.path);
        let meta = fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("{} missing from the bundle: {e}", entry.path));
        match &entry.kind {
            fixtures::EntryKind::File(contents) => {
                assert!(meta.is_file(), "{}", entry.path);
                assert_eq!(&fs::read(&path).expect("read"), contents, "{}", entry.path);
                assert_eq!(
                    meta.permissions().mode() & 0o7777,
                    entry.mode,
                    "{}",
                    entry.path
                );
            }
            fixtures::EntryKind::Dir => assert!(meta.is_dir(), "{}", entry.path),
            fixtures::EntryKind::Symlink(target) => {
                assert!(meta.file_type().is_symlink(), "{}", entry.path);
                assert_eq!(fs::read_link(&path).expect("readlink"), Path::new(target));
            }
        }
        checked += 1;
    }
    assert!(checked >= 5);

    // umoci records which manifest it unpacked.
    let umoci: Value =
        serde_json::from_slice(&fs::read(bundle.join("umoci.json")).expect("umoci.json"))
            .expect("umoci.json is JSON");
    let walk = &umoci["from_descriptor_path"]["descriptor_walk"];
    assert_eq!(walk[0]["digest"], image.descriptor.digest().to_string());
}

#[test]
fn skopeo_pushes_to_a_real_registry_without_changing_digests() {
    let (_tmp, store) = new_store();
    let image = fixtures::tagged_image(&store, REGISTRY_STYLE_REF, "amd64");
    let index = fixtures::tagged_index(&store, "multi");

    let registry = Registry::start();
    let addr = registry.addr();
    assert_eq!(registry.url(), format!("http://{addr}"));
    assert_eq!(
        http_get_status(addr.parse().expect("addr"), "/v2/").expect("GET /v2/"),
        200
    );

    push_with_skopeo(root(&store), REGISTRY_STYLE_REF, &registry, "tools/x:1.0");
    push_with_skopeo(root(&store), "multi", &registry, "tools/multi:v1");

    let remote = format!("docker://{addr}/tools/x:1.0");
    let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &remote]);
    assert_eq!(&sha256_digest(raw.as_bytes()), image.descriptor.digest());
    let summary = skopeo_json(&["inspect", "--tls-verify=false", &remote]);
    assert_eq!(summary["Digest"], image.descriptor.digest().to_string());
    assert_summary(&summary, &image, "amd64");

    let remote = format!("docker://{addr}/tools/multi:v1");
    let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &remote]);
    assert_eq!(&sha256_digest(raw.as_bytes()), index.descriptor.digest());
    for child in &index.images {
        let by_digest = format!("docker://{addr}/tools/multi@{}", child.descriptor.digest());
        let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &by_digest]);
        assert_eq!(raw.as_bytes(), child.manifest.as_slice());
    }

    // Everything landed in the registry's own storage directory.
    let v2 = registry.storage_dir().join("docker/registry/v2");
    assert!(v2.join("repositories/tools/x").is_dir());
    assert!(v2.join("repositories/tools/multi").is_dir());
    for layer in image.layers.iter().chain(&index.images[1].layers) {
        let hex = layer.descriptor.digest().digest();
        let data = v2.join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]));
        assert_eq!(fs::read(&data).expect("blob in storage"), layer.blob);
    }

    assert!(port_open(&addr));
    drop(registry);
    assert!(!port_open(&addr), "the registry still listens after drop");
}
