//! The `conda-meta/<name>-<version>-<build>.json` record of an installed package, as
//! conda writes it (a `PrefixRecord`): `index.json`'s fields, the archive's `fn`,
//! `sha256` and `size`, the installed `files` and `paths_data`. `conda list` and
//! later `conda install`s into the environment read these.
//!
//! Left out, because a package file alone does not tell them: `url`, `channel`, `md5`,
//! `requested_spec`, `link` and the package cache paths. A composer that knows them may
//! add them to [`super::install::PackageLayer::record`].
//!
//! The record is deterministic: keys sorted (serde_json's map), paths in layer order.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::metadata::PathEntry;
use super::package::CondaPackage;
use super::placeholder::Placeholder;

/// One installed path, relative to the prefix, as the layer holds it.
#[derive(Debug, Clone)]
pub(crate) struct RecordedPath {
    path: String,
    path_type: &'static str,
    /// Its path in the package (before any `noarch` layout), for `paths.json` data.
    source: Option<String>,
    placeholder: Option<Placeholder>,
    sha256_in_prefix: Option<String>,
    size: Option<u64>,
}

impl RecordedPath {
    pub fn file(
        path: &str,
        source: &str,
        placeholder: Option<Placeholder>,
        sha256_in_prefix: Option<String>,
        size: u64,
    ) -> Self {
        Self {
            path: path.to_string(),
            path_type: "hardlink",
            source: Some(source.to_string()),
            placeholder,
            sha256_in_prefix,
            size: Some(size),
        }
    }

    pub fn symlink(path: &str, source: &str) -> Self {
        Self {
            path: path.to_string(),
            path_type: "softlink",
            source: Some(source.to_string()),
            placeholder: None,
            sha256_in_prefix: None,
            size: None,
        }
    }

    pub fn directory(path: &str) -> Self {
        Self {
            path: path.to_string(),
            path_type: "directory",
            source: None,
            placeholder: None,
            sha256_in_prefix: None,
            size: None,
        }
    }

    pub fn entry_point(path: &str, size: u64) -> Self {
        Self {
            path: path.to_string(),
            path_type: "unix_python_entry_point",
            source: None,
            placeholder: None,
            sha256_in_prefix: None,
            size: Some(size),
        }
    }
}

/// Builds the record of `package` installed as `paths`.
pub(crate) fn conda_meta_record(
    package: &CondaPackage,
    paths: &[RecordedPath],
) -> Map<String, Value> {
    let meta = package.metadata();
    let listed: HashMap<&str, &PathEntry> =
        meta.paths.iter().map(|p| (p.path.as_str(), p)).collect();
    let mut record = meta.index.clone();
    record.insert(
        "fn".into(),
        format!("{}{}", package.label(), package.format().extension()).into(),
    );
    record.insert(
        "sha256".into(),
        package.sha256().digest().to_string().into(),
    );
    record.insert("size".into(), package.size().into());
    let files: Vec<Value> = paths
        .iter()
        .filter(|p| p.path_type != "directory")
        .map(|p| p.path.clone().into())
        .collect();
    record.insert("files".into(), files.into());
    let paths_data: Vec<Value> = paths
        .iter()
        .map(|p| {
            let mut entry = Map::new();
            entry.insert("_path".into(), p.path.clone().into());
            entry.insert("path_type".into(), p.path_type.into());
            let from_package = p.source.as_deref().and_then(|s| listed.get(s));
            if let Some(sha256) = from_package.and_then(|l| l.sha256.clone()) {
                entry.insert("sha256".into(), sha256.into());
            }
            if let Some(placeholder) = &p.placeholder {
                entry.insert(
                    "prefix_placeholder".into(),
                    placeholder.placeholder.clone().into(),
                );
                entry.insert("file_mode".into(), placeholder.mode.as_str().into());
            }
            if let Some(sha256) = &p.sha256_in_prefix {
                entry.insert("sha256_in_prefix".into(), sha256.clone().into());
            }
            // conda records the size in the package; entry points and files of
            // packages without paths.json get the size they have in the layer.
            let size = from_package.and_then(|l| l.size_in_bytes).or(p.size);
            if let Some(size) = size {
                entry.insert("size_in_bytes".into(), size.into());
            }
            Value::Object(entry)
        })
        .collect();
    record.insert(
        "paths_data".into(),
        json!({"paths": paths_data, "paths_version": 1}),
    );
    record
}
