//! What a package's layer is made from and what it is: the options every package of an
//! environment shares (the prefix, the Python, the compression), the [`LayerKey`] a
//! layer's digest is a function of, the stored [`PackageLayer`], and why installing
//! failed. Shared by `install`, `staging` and the layer cache, below all three.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::store::{Descriptor, Digest, MediaType, StoreError};

use super::layer_tar::LayerCompression;
use super::metadata::Noarch;
use super::noarch::PythonVersion;
use super::package::{CondaPackage, PackageError};

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
