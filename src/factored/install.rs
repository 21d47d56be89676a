//! Installing one conda package into one deterministic OCI layer, the way conda
//! installs it into an environment, and storing that layer.
//!
//! [`install_package`] streams the package's files (see [`super::package`]), lays a
//! `noarch: python` package out for the environment's Python ([`super::noarch`]),
//! rewrites prefix placeholders per file ([`super::placeholder`]) and writes a sorted,
//! fixed-metadata tar ([`super::layer_tar`]) of everything under the prefix, straight
//! into the store.
//!
//! # What a layer's digest depends on
//! Only its [`LayerKey`]: the package's sha256, the prefix, the Python `X.Y` for a
//! `noarch: python` package (ignored for any other), and the compression. Not the
//! package's file name or time stamps, not the machine, not the order of the archive.
//! The same key always gives the same digest with the same stowage build (the
//! compressors are pinned by Cargo.lock; see [`super::layer_tar`]), so images that
//! share packages share layers, and [`install_package`] remembers `LayerKey →
//! PackageLayer` (`super::layer_cache`) to skip building a layer the store holds.

use std::collections::BTreeMap;

use crate::oci::annotation::{
    ANNOTATION_BUILD, ANNOTATION_NAME, ANNOTATION_PREFIX, ANNOTATION_PYTHON, ANNOTATION_SHA256,
    ANNOTATION_VERSION,
};
use crate::store::{sha256_of, Store};

use super::layer_cache;
use super::layer_tar::{anonymous_file, entry_path, prefix_dirs, LayerTarWriter};
use super::package::CondaPackage;
use super::record::{conda_meta_record, RecordedPath};
use super::staging::{stage, Node, Origin, Plan, SpoolFile};

pub use super::package_layer::{
    InstallError, LayerKey, LayerOptions, PackageLayer, Prefix, PrefixError, DEFAULT_PREFIX,
};

/// Installs `package` under `options.prefix` into one layer and stores it (see the
/// module docs). The blob is written only when the store lacks it.
pub fn install_package(
    store: &Store,
    package: &CondaPackage,
    options: &LayerOptions,
) -> Result<PackageLayer, InstallError> {
    let key = options.key(package)?;
    if let Some(layer) = layer_cache::get(store, &key) {
        tracing::debug!(package = %layer.label, digest = %layer.digest, "package layer (cached)");
        return Ok(layer);
    }
    let label = package.label();
    let write_error = |source| InstallError::Write {
        package: label.clone(),
        source,
    };
    let (plan, spool) = stage(store, package, &key)?;
    let spool = spool.finish().map_err(write_error)?;

    let prefix = key.prefix.as_str();
    let out = anonymous_file(store).map_err(write_error)?;
    let mut writer = LayerTarWriter::new(key.compression, out).map_err(write_error)?;
    for dir in prefix_dirs(prefix) {
        writer.add_dir(&dir).map_err(write_error)?;
    }
    let recorded = write_entries(&mut writer, &plan, &spool, prefix, &label)?;
    let built = writer.finish().map_err(write_error)?;
    let (digest, size, diff_id) = (built.digest.clone(), built.size, built.diff_id.clone());
    let already_stored = built.commit(store).map_err(|source| InstallError::Store {
        package: label.clone(),
        source: Box::new(source),
    })?;
    tracing::debug!(package = %label, %digest, size, already_stored, "package layer");

    let meta = package.metadata();
    let mut annotations = BTreeMap::from([
        (ANNOTATION_NAME.to_string(), meta.name.clone()),
        (ANNOTATION_VERSION.to_string(), meta.version.clone()),
        (ANNOTATION_BUILD.to_string(), meta.build.clone()),
        (
            ANNOTATION_SHA256.to_string(),
            package.sha256().digest().to_string(),
        ),
        (ANNOTATION_PREFIX.to_string(), prefix.to_string()),
    ]);
    if let Some(python) = key.python {
        annotations.insert(ANNOTATION_PYTHON.to_string(), python.to_string());
    }
    let layer = PackageLayer {
        digest,
        size,
        media_type: key.compression.media_type(),
        diff_id,
        annotations,
        record: conda_meta_record(package, &recorded),
        key,
        label,
        already_stored,
    };
    if let Err(e) = layer_cache::put(store, &layer) {
        // Only the next build of this package is slower for it.
        tracing::debug!(package = %layer.label, "layer cache not written: {e}");
    }
    Ok(layer)
}

/// Writes the plan's entries under `prefix`, rewriting placeholders on the way, and
/// returns what the `conda-meta` record lists.
fn write_entries(
    writer: &mut LayerTarWriter,
    plan: &Plan,
    spool: &SpoolFile,
    prefix: &str,
    label: &str,
) -> Result<Vec<RecordedPath>, InstallError> {
    let write_error = |source| InstallError::Write {
        package: label.to_string(),
        source,
    };
    let mut recorded = Vec::new();
    for (relative, node) in &plan.nodes {
        let path = entry_path(prefix, relative);
        match node {
            Node::Dir { listed } => {
                writer.add_dir(&path).map_err(write_error)?;
                if *listed {
                    recorded.push(RecordedPath::directory(relative));
                }
            }
            Node::Symlink { target, origin } => {
                writer.add_symlink(&path, target).map_err(write_error)?;
                if let Origin::Package(source) = origin {
                    recorded.push(RecordedPath::symlink(relative, source));
                }
            }
            Node::File {
                content,
                executable,
                placeholder,
                origin,
            } => {
                let mut sha256_in_prefix = None;
                let size = match placeholder {
                    Some(placeholder) => {
                        let data = spool.read(content).map_err(write_error)?;
                        let data = placeholder.rewrite(&data, prefix).map_err(|e| {
                            InstallError::PrefixTooLong {
                                package: label.to_string(),
                                file: source_of(origin, relative),
                                prefix: prefix.to_string(),
                                prefix_len: e.prefix_len,
                                placeholder_len: e.placeholder_len,
                            }
                        })?;
                        sha256_in_prefix = Some(sha256_of(&data).digest().to_string());
                        let size = data.len() as u64;
                        writer
                            .add_file(&path, *executable, size, data.as_slice())
                            .map_err(write_error)?;
                        size
                    }
                    None => {
                        let (reader, size) = spool.open(content);
                        writer
                            .add_file(&path, *executable, size, reader)
                            .map_err(write_error)?;
                        size
                    }
                };
                match origin {
                    Origin::Package(source) => recorded.push(RecordedPath::file(
                        relative,
                        source,
                        placeholder.clone(),
                        sha256_in_prefix,
                        size,
                    )),
                    Origin::EntryPoint => recorded.push(RecordedPath::entry_point(relative, size)),
                    Origin::Info => {}
                }
            }
        }
    }
    Ok(recorded)
}

/// The path in the package an entry came from (for error messages).
fn source_of(origin: &Origin, relative: &str) -> String {
    match origin {
        Origin::Package(source) => source.clone(),
        _ => relative.to_string(),
    }
}
