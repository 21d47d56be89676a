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
use std::fmt;
use std::io;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::store::{sha256_of, Descriptor, Digest, MediaType, Store, StoreError};

use super::layer_cache;
use super::layer_tar::{anonymous_file, entry_path, prefix_dirs, LayerCompression, LayerTarWriter};
use crate::oci::annotation::{
    ANNOTATION_BUILD, ANNOTATION_NAME, ANNOTATION_PREFIX, ANNOTATION_PYTHON, ANNOTATION_SHA256,
    ANNOTATION_VERSION,
};

use super::metadata::Noarch;
use super::noarch::PythonVersion;
use super::package::{CondaPackage, PackageError};
use super::record::{conda_meta_record, RecordedPath};
use super::staging::{stage, Node, Origin, Plan, SpoolFile};

/// The environment prefix used when none is given.
pub const DEFAULT_PREFIX: &str = "/opt/conda";

/// An environment prefix: an absolute, normalised path other than `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix(String);

/// A prefix stowage cannot install into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment prefix {prefix:?}: {reason}")]
pub struct PrefixError {
    pub prefix: String,
    pub reason: String,
}

impl Prefix {
    /// Checks and normalises a prefix (`/opt//conda/` → `/opt/conda`). Refused: relative
    /// paths, `/` itself, `.` or `..` components and control characters (they would break
    /// the text replacements and shebangs). Spaces are allowed, as in conda.
    pub fn new(prefix: &str) -> Result<Self, PrefixError> {
        let refuse = |reason: &str| PrefixError {
            prefix: prefix.to_string(),
            reason: reason.to_string(),
        };
        if !prefix.starts_with('/') {
            return Err(refuse("must be an absolute path"));
        }
        if prefix.chars().any(char::is_control) {
            return Err(refuse("holds a control character"));
        }
        let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
        if parts.iter().any(|p| *p == "." || *p == "..") {
            return Err(refuse("must not hold . or .. components"));
        }
        if parts.is_empty() {
            return Err(refuse("must not be / itself"));
        }
        Ok(Self(format!("/{}", parts.join("/"))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Prefix {
    fn default() -> Self {
        Self(DEFAULT_PREFIX.to_string())
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How to install packages: the same options for every package of an environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LayerOptions {
    pub prefix: Prefix,
    /// The environment's Python; required only by `noarch: python` packages.
    pub python: Option<PythonVersion>,
    pub compression: LayerCompression,
}

impl LayerOptions {
    /// The inputs the layer of `package` depends on; fails for a `noarch: python`
    /// package when no Python version is given.
    pub fn key(&self, package: &CondaPackage) -> Result<LayerKey, InstallError> {
        let python = match package.metadata().noarch {
            Some(Noarch::Python) => {
                Some(self.python.ok_or_else(|| InstallError::PythonRequired {
                    package: package.label(),
                })?)
            }
            _ => None,
        };
        Ok(LayerKey {
            package_sha256: package.sha256().clone(),
            prefix: self.prefix.clone(),
            python,
            compression: self.compression,
        })
    }
}

/// Everything a package layer's digest is a function of (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayerKey {
    pub package_sha256: Digest,
    pub prefix: Prefix,
    /// `Some` only for `noarch: python` packages.
    pub python: Option<PythonVersion>,
    pub compression: LayerCompression,
}

/// A package's layer, stored, with what an image needs to list it.
#[derive(Debug, Clone)]
pub struct PackageLayer {
    /// The compressed blob's digest, as a manifest lists it.
    pub digest: Digest,
    pub size: u64,
    pub media_type: MediaType,
    /// The sha256 of the uncompressed tar, as the config's `rootfs.diff_ids` lists it.
    pub diff_id: Digest,
    /// `org.conda.package.{name,version,build,sha256}`, `org.conda.layer.prefix` and,
    /// for `noarch: python`, `org.conda.layer.python`.
    pub annotations: BTreeMap<String, String>,
    pub key: LayerKey,
    /// `name-version-build`.
    pub label: String,
    /// The package's `conda-meta/<label>.json` record (see [`PackageLayer::record_path`]).
    pub record: Map<String, Value>,
    /// The store held the blob already (nothing was written).
    pub already_stored: bool,
}

impl PackageLayer {
    /// The layer's descriptor for a manifest, annotations included.
    pub fn descriptor(&self) -> Descriptor {
        let mut descriptor =
            Descriptor::new(self.media_type.clone(), self.size, self.digest.clone());
        descriptor.set_annotations(Some(self.annotations.clone().into_iter().collect()));
        descriptor
    }

    /// Where the record goes, relative to the prefix: `conda-meta/<label>.json`.
    pub fn record_path(&self) -> String {
        format!("conda-meta/{}.json", self.label)
    }

    /// The record as a file (pretty JSON, keys sorted: deterministic).
    pub fn record_json(&self) -> Vec<u8> {
        let mut json = serde_json::to_vec_pretty(&self.record).expect("a JSON map serialises");
        json.push(b'\n');
        json
    }
}

/// Why a package could not be installed into a layer.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error(
        "{package}: {file}: the prefix {prefix} ({prefix_len} bytes) is longer than the \
         placeholder this binary file holds ({placeholder_len} bytes); a binary file can \
         only take a prefix up to the placeholder's length"
    )]
    PrefixTooLong {
        package: String,
        file: String,
        prefix: String,
        prefix_len: usize,
        placeholder_len: usize,
    },
    #[error(
        "{package} is a noarch: python package: give the environment's Python version \
         (X.Y) to lay it out"
    )]
    PythonRequired { package: String },
    #[error("{package}: {file} is listed in info/paths.json but the archive does not hold it")]
    MissingFile { package: String, file: String },
    #[error("{package}: {path}: {reason}")]
    Conflict {
        package: String,
        path: String,
        reason: String,
    },
    #[error("{package}: writing the layer: {source}")]
    Write {
        package: String,
        #[source]
        source: io::Error,
    },
    #[error("{package}: storing the layer: {source}")]
    Store {
        package: String,
        #[source]
        source: Box<StoreError>,
    },
}

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
