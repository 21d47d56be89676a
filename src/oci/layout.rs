//! The OCI image layout as stowage writes it outside its store: the names of its
//! files, its `index.json`, and the one oci-archive writer (a tar of a layout, as
//! `skopeo copy oci-archive:`, `podman load` and `ctr import` read it), used by
//! `export` and by the runtimes' `load`.
//!
//! The archive is streamed from the store with no temporary copy: `oci-layout`,
//! `index.json`, the `blobs/` directories, then the blobs in the order given, each
//! re-hashed on the way (a blob that rotted in the store stops the archive instead of
//! travelling). Headers carry mtime 0, owner 0:0 and modes 0644/0755, and the index's
//! keys are sorted, so the same images and blobs always give the same bytes.

use std::collections::HashSet;
use std::io::{self, Write};

use serde_json::{json, Value};

use super::tar_entry;
use crate::store::{Descriptor, Digest, Store, StoreError, REF_NAME_ANNOTATION};

/// The layout's version marker.
pub const OCI_LAYOUT: &str = "oci-layout";
/// The layout's list of images.
pub const INDEX_JSON: &str = "index.json";
/// What stowage writes as `oci-layout`.
pub const OCI_LAYOUT_JSON: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// `blobs/<algorithm>/<hex>`.
pub fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().as_ref(), digest.digest())
}

/// An image the layout's `index.json` lists: its top manifest (or index) and the
/// name the `org.opencontainers.image.ref.name` annotation gives it. An empty name
/// lists the manifest without that annotation (a referrer, carried for its subject).
#[derive(Debug, Clone)]
pub struct NamedImage {
    pub name: String,
    pub descriptor: Descriptor,
}

/// Why an oci-archive could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LayoutWriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An entry could not be written: its source (a stored blob) failed its size or
    /// digest check, or the output failed.
    #[error("archive entry {path}: {source}")]
    Entry {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("writing the archive: {0}")]
    Write(#[source] io::Error),
}

/// The layout's `index.json`: one entry per image, named by the ref-name annotation.
/// Keys are sorted (annotations are a hash map), so the bytes are reproducible.
pub fn index_json(images: &[NamedImage]) -> Vec<u8> {
    let manifests: Vec<Value> = images
        .iter()
        .map(|image| {
            let mut descriptor = image.descriptor.clone();
            let mut annotations = descriptor.annotations().clone().unwrap_or_default();
            if !image.name.is_empty() {
                annotations.insert(REF_NAME_ANNOTATION.to_string(), image.name.clone());
            }
            descriptor.set_annotations((!annotations.is_empty()).then_some(annotations));
            serde_json::to_value(&descriptor).expect("a descriptor serialises")
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    serde_json::to_vec(&sorted(index)).expect("an index serialises")
}

/// `value` with every object's keys in order, whatever map serde_json was built with.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Streams an oci-archive into `out`: a layout listing `images` and holding `blobs`
/// (each written once, in the order given), read from `store`. Returns `out`; on
/// failure the archive is left cut short (no end marker), so no reader takes it for
/// a whole one.
pub fn write_archive<W: Write>(
    store: &Store,
    images: &[NamedImage],
    blobs: &[Descriptor],
    out: W,
) -> Result<W, LayoutWriteError> {
    let mut builder = tar::Builder::new(out);
    let result = entries(&mut builder, store, images, blobs);
    tar_entry::finish(builder, result, LayoutWriteError::Write)
}

fn entries<W: Write>(
    builder: &mut tar::Builder<W>,
    store: &Store,
    images: &[NamedImage],
    blobs: &[Descriptor],
) -> Result<(), LayoutWriteError> {
    let entry = |path: &str| {
        let path = path.to_string();
        move |source| LayoutWriteError::Entry { path, source }
    };
    let index = index_json(images);
    for (path, data) in [(OCI_LAYOUT, OCI_LAYOUT_JSON), (INDEX_JSON, &index[..])] {
        tar_entry::append_file(builder, path, data.len() as u64, data, path)
            .map_err(entry(path))?;
    }
    let mut dirs = HashSet::new();
    let folders = blobs
        .iter()
        .map(|d| format!("blobs/{}/", d.digest().algorithm().as_ref()));
    for dir in std::iter::once("blobs/".to_string()).chain(folders) {
        if dirs.insert(dir.clone()) {
            tar_entry::append_dir(builder, &dir).map_err(entry(&dir))?;
        }
    }
    let mut written = HashSet::new();
    for descriptor in blobs {
        let digest = descriptor.digest();
        if !written.insert(digest.clone()) {
            continue;
        }
        let path = blob_path(digest);
        let data = store.open_blob(digest)?;
        let what = format!("stored blob {digest}");
        tar_entry::append_file(builder, &path, descriptor.size(), data, what)
            .map_err(entry(&path))?;
    }
    Ok(())
}
