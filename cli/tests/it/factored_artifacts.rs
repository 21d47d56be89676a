//! `factor` from conda packages stored on a registry as OCI artifacts (media types
//! `application/vnd.conda.package.v1` for a `.tar.bz2`, `.v2` for a `.conda`), pushed
//! here the way conda-forge's ghcr.io mirror lays them out: oras' placeholder config,
//! the package layer among the optional `info` layers. The same packages give the same
//! layers as from files; each package blob crosses the wire once; an artifact that
//! holds no package, or not the package it claims, is refused by name.

use crate::factored_layers::conda_build;

use std::path::{Path, PathBuf};

use crate::support::archive_check::fails;
use crate::support::fixtures::{
    build_layer, layer_digests_of, sha256_digest, tagged_image, Compression, Entry,
};
use crate::support::pulling::*;
use crate::support::push::{push_blob, push_manifest};
use conda_build::{Format, Spec};
use serde_json::{json, Value};
use stowage_store::{Digest, Store};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config oras (and so conda-oci-mirror) writes: `{}` of an unknown type.
const ORAS_CONFIG: &str = "application/vnd.unknown.config.v1+json";
const CONDA_PACKAGE_V1: &str = "application/vnd.conda.package.v1";
const CONDA_PACKAGE_V2: &str = "application/vnd.conda.package.v2";
const CONDA_INFO_ARCHIVE: &str = "application/vnd.conda.info.v1.tar+gzip";
const CONDA_INFO_INDEX: &str = "application/vnd.conda.info.index.v1+json";
const PLAIN_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// A package whose `bin/NAME` prints its name.
fn package(dir: &Path, name: &str, version: &str, format: Format) -> PathBuf {
    Spec::new(name, version, "h0_0")
        .file(
            &format!("bin/{name}"),
            format!("#!/bin/sh\necho {name}\n"),
            0o755,
        )
        .write(dir, format)
}

/// Pushes `file` to `repo:tag` as a conda package artifact: oras' `{}` config, an
/// `info.tar.gz` layer first, the package layer typed `package_type` second (so it is
/// found by type, not position), then `index.json`; `annotations` go on the manifest.
/// Returns the package blob's digest.
fn push_artifact(
    env: &Env,
    repo: &str,
    tag: &str,
    file: &Path,
    package_type: &str,
    annotations: Value,
) -> Digest {
    let registry = &env.registry;
    let bytes = std::fs::read(file).unwrap();
    let title = file.file_name().unwrap().to_string_lossy().into_owned();
    let index = serde_json::to_vec(&json!({"name": title})).unwrap();
    let info = build_layer(
        &[Entry::file("info/index.json", index.clone(), 0o644)],
        Compression::Gzip,
    )
    .blob;
    let config = b"{}".to_vec();
    let mut layers = Vec::new();
    for (data, media_type, name) in [
        (&info, CONDA_INFO_ARCHIVE, "info.tar.gz"),
        (&bytes, package_type, title.as_str()),
        (&index, CONDA_INFO_INDEX, "info/index.json"),
    ] {
        let digest = push_blob(registry, repo, data);
        layers.push(json!({
            "mediaType": media_type, "size": data.len(), "digest": digest.to_string(),
            "annotations": {"org.opencontainers.image.title": name},
        }));
    }
    let config_digest = push_blob(registry, repo, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": ORAS_CONFIG, "size": config.len(), "digest": config_digest.to_string()},
        "layers": layers,
        "annotations": annotations,
    }))
    .unwrap();
    push_manifest(registry, repo, tag, OCI_MANIFEST, &manifest);
    sha256_digest(&bytes)
}

/// The manifest of the image `name` in the store at `dir`.
fn manifest_of(dir: &Path, name: &str) -> Value {
    let store = Store::open(dir).unwrap();
    let descriptor = store
        .resolve_ref(name)
        .unwrap()
        .expect("the image is recorded");
    serde_json::from_slice(&store.read_blob(descriptor.digest(), 1 << 20).unwrap()).unwrap()
}

#[test]
fn registry_packages_give_the_layers_their_files_give_and_are_fetched_once() {
    let env = Env::new();
    let pkgs = env.dir.path().join("pkgs");
    std::fs::create_dir_all(&pkgs).unwrap();
    let hello = package(&pkgs, "hello", "1.0", Format::Conda);
    // A `+` in the version: the mirror's tag spells it `__p__`.
    let alpha = package(&pkgs, "alpha", "2.1+local", Format::TarBz2);
    let hello_blob = push_artifact(
        &env,
        "conda-forge/linux-64/hello",
        "1.0-h0_0",
        &hello,
        CONDA_PACKAGE_V2,
        json!({"org.conda.oci.schema": "1", "org.conda.package.name": "hello",
               "org.conda.package.version": "1.0", "org.conda.package.build": "h0_0"}),
    );
    let alpha_blob = push_artifact(
        &env,
        "conda-forge/linux-64/alpha",
        "2.1__p__local-h0_0",
        &alpha,
        CONDA_PACKAGE_V1,
        json!({}),
    );

    // From the files, in a store of its own.
    let files_store = env.dir.path().join("files-store");
    tagged_image(&Store::open(&files_store).unwrap(), "base", "amd64");
    let output = stowage_in(
        &files_store,
        &[
            "factor",
            "tools:1",
            "--base",
            "base",
            hello.to_str().unwrap(),
            alpha.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let from_files: Value = serde_json::from_slice(&output.stdout).unwrap();

    // From the registry: skopeo's docker:// and rattler's oci://…/FILE spellings.
    tagged_image(&Store::open(env.store()).unwrap(), "base", "amd64");
    let proxy = env.proxy.addr();
    env.proxy.reset_log();
    let made = env.json(&[
        "factor",
        "tools:1",
        "--base",
        "base",
        &format!("docker://{proxy}/conda-forge/linux-64/hello:1.0-h0_0"),
        &format!("oci://{proxy}/conda-forge/linux-64/alpha-2.1+local-h0_0.tar.bz2"),
    ]);
    assert_eq!(
        made["manifest_digest"], from_files["manifest_digest"],
        "the registry's packages built another image than the files: {made} vs {from_files}"
    );
    let (files_manifest, registry_manifest) = (
        manifest_of(&files_store, "tools:1"),
        manifest_of(&env.store(), "tools:1"),
    );
    assert_eq!(
        layer_digests_of(&registry_manifest),
        layer_digests_of(&files_manifest)
    );
    // base (2 layers) + 2 packages + conda-meta.
    let layers = registry_manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 5, "{registry_manifest}");
    let recorded: Vec<&str> = layers
        .iter()
        .filter_map(|l| l["annotations"]["org.conda.package.sha256"].as_str())
        .collect();
    assert_eq!(
        recorded,
        [alpha_blob.digest(), hello_blob.digest()],
        "each package layer names its archive's sha256, the blob's digest"
    );
    // Only the two package blobs came over: not the config, not the info layers.
    let mut fetched = env.blob_get_paths();
    fetched.sort();
    let mut expected = vec![
        format!("/v2/conda-forge/linux-64/alpha/blobs/{alpha_blob}"),
        format!("/v2/conda-forge/linux-64/hello/blobs/{hello_blob}"),
    ];
    expected.sort();
    assert_eq!(fetched, expected);
    assert_eq!(made["registry_packages"]["blobs_fetched"], 2, "{made}");
    assert!(env.stowage(&["verify"]).status.success());

    // Again, as crane writes references (one pinned by digest): the registry is asked
    // for the manifests, and no package blob is requested again.
    let alpha_manifest = {
        let output = env.stowage(&[
            "resolve",
            &format!("{proxy}/conda-forge/linux-64/alpha:2.1__p__local-h0_0"),
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        let resolved: Value = serde_json::from_slice(&output.stdout).unwrap();
        resolved["manifest_digest"].as_str().unwrap().to_string()
    };
    env.proxy.reset_log();
    let again = env.json(&[
        "factor",
        "tools:2",
        "--base",
        "base",
        &format!("{proxy}/conda-forge/linux-64/hello:1.0-h0_0"),
        &format!("{proxy}/conda-forge/linux-64/alpha@{alpha_manifest}"),
    ]);
    assert!(
        env.proxy
            .log()
            .iter()
            .any(|r| r.path.contains("/manifests/")),
        "the second run asked the registry nothing: {:?}",
        env.proxy.log()
    );
    assert_eq!(env.blob_get_paths(), Vec::<String>::new());
    assert_eq!(again["registry_packages"]["blobs_fetched"], 0, "{again}");
    assert_eq!(again["layers_written"], 0, "{again}");
    assert_eq!(again["manifest_digest"], made["manifest_digest"]);
}

#[test]
fn artifacts_without_the_package_they_claim_are_refused_by_name() {
    let env = Env::new();
    let pkgs = env.dir.path().join("pkgs");
    std::fs::create_dir_all(&pkgs).unwrap();
    let hello = package(&pkgs, "hello", "1.0", Format::Conda);
    let alpha = package(&pkgs, "alpha", "1.0", Format::TarBz2);
    tagged_image(&Store::open(env.store()).unwrap(), "base", "amd64");
    let proxy = env.proxy.addr();
    let factor = |reference: &str| {
        let err = fails(
            &env.store(),
            &["factor", "tools:1", "--base", "base", reference],
        );
        assert!(
            Store::open(env.store())
                .unwrap()
                .resolve_ref("tools:1")
                .unwrap()
                .is_none(),
            "a refused factor recorded the image"
        );
        err
    };

    // The package pushed as a plain tar layer: no conda package layer at all, and
    // nothing is downloaded to find that out.
    push_artifact(
        &env,
        "pkgs/untyped",
        "1.0-h0_0",
        &hello,
        PLAIN_TAR,
        json!({}),
    );
    env.proxy.reset_log();
    let reference = format!("{proxy}/pkgs/untyped:1.0-h0_0");
    let err = factor(&reference);
    for part in [
        reference.as_str(),
        "holds no conda package",
        CONDA_PACKAGE_V2,
        CONDA_PACKAGE_V1,
        &format!("layer {PLAIN_TAR}"),
        &format!("layer {CONDA_INFO_ARCHIVE}"),
        &format!("config {ORAS_CONFIG}"),
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    assert_eq!(env.blob_get_paths(), Vec::<String>::new());

    // A .tar.bz2 typed as a .conda.
    push_artifact(
        &env,
        "pkgs/mistyped",
        "1.0-h0_0",
        &alpha,
        CONDA_PACKAGE_V2,
        json!({}),
    );
    let reference = format!("{proxy}/pkgs/mistyped:1.0-h0_0");
    let err = factor(&reference);
    assert!(
        err.contains(&reference)
            && err.contains(&format!("typed {CONDA_PACKAGE_V2} (a .conda package)"))
            && err.contains("holds a .tar.bz2 package"),
        "{err}"
    );

    // A manifest that names another package than the archive holds.
    push_artifact(
        &env,
        "pkgs/liar",
        "1.0-h0_0",
        &hello,
        CONDA_PACKAGE_V2,
        json!({"org.conda.package.name": "goodbye"}),
    );
    let err = factor(&format!("docker://{proxy}/pkgs/liar:1.0-h0_0"));
    assert!(
        err.contains("org.conda.package.name") && err.contains("\"goodbye\""),
        "{err}"
    );

    // A package file name in an oci:// URL must be the package found there, in the
    // format it names.
    push_artifact(
        &env,
        "c/linux-64/hello",
        "1.0-h0_0",
        &hello,
        CONDA_PACKAGE_V2,
        json!({}),
    );
    let err = factor(&format!("oci://{proxy}/c/linux-64/hello-1.0-h0_0.tar.bz2"));
    assert!(
        err.contains("no layer of type application/vnd.conda.package.v1;"),
        "{err}"
    );

    // Not a file, and no registry host: refused without any traffic.
    env.proxy.reset_log();
    let err = factor("hello:1.0");
    assert!(err.contains("not a registry reference"), "{err}");
    assert!(env.proxy.log().is_empty());
}
