//! A conda package's metadata, from the files under its `info/`:
//! - `index.json`: name, version, build, subdir, `noarch`, dependencies;
//! - `paths.json`: every file with its `path_type` and, for files that embed the build
//!   prefix, `prefix_placeholder` and `file_mode`;
//! - `has_prefix`: the older list of files with a placeholder, read only when
//!   `paths.json` is absent (conda ignores it otherwise, and so must we: a package
//!   may carry a stale one);
//! - `link.json`: for `noarch: python`, the entry points.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::noarch::EntryPoint;
use super::package_path::normalize;
use super::placeholder::{FileMode, Placeholder, LEGACY_PLACEHOLDER};
use super::PackageError;

/// The `info/` files stowage reads; others are not kept in memory.
pub(crate) const INFO_FILES: [&str; 5] = [
    "info/index.json",
    "info/paths.json",
    "info/has_prefix",
    "info/link.json",
    "info/files",
];

/// What a package says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct PackageMetadata {
    pub name: String,
    pub version: String,
    pub build: String,
    pub build_number: u64,
    pub subdir: Option<String>,
    /// The names of the packages it depends on (`index.json`'s `depends`, each match
    /// spec cut to its package name), in the order written.
    pub depends: Vec<String>,
    /// From `index.json`, or `link.json` when the index does not say.
    pub noarch: Option<Noarch>,
    /// `index.json` as written, for the `conda-meta` record.
    pub index: Map<String, Value>,
    /// Files with a prefix placeholder, by path in the package (before any `noarch`
    /// layout), from `paths.json` or, without one, `has_prefix`.
    pub placeholders: BTreeMap<String, Placeholder>,
    /// Every entry of `paths.json` (empty without one).
    pub paths: Vec<PathEntry>,
    pub paths_source: PathsSource,
    /// The entry points of a `noarch: python` package (`link.json`).
    pub entry_points: Vec<EntryPoint>,
}

/// Which file said where the placeholders are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathsSource {
    PathsJson,
    HasPrefix,
    /// Neither file: nothing is rewritten.
    None,
}

/// A package's `noarch` kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Noarch {
    /// Installed as it is, on any platform.
    Generic,
    /// Laid out for the environment's Python (see [`super::noarch`]).
    Python,
}

/// One entry of `info/paths.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathEntry {
    pub path: String,
    /// `hardlink`, `softlink` or `directory`.
    pub path_type: String,
    pub placeholder: Option<Placeholder>,
    pub sha256: Option<String>,
    pub size_in_bytes: Option<u64>,
}

impl PathEntry {
    pub fn is_directory(&self) -> bool {
        self.path_type == "directory"
    }
}

/// The raw `info/` files gathered while reading an archive.
#[derive(Debug, Default, Clone)]
pub(crate) struct InfoFiles {
    files: BTreeMap<&'static str, Vec<u8>>,
}

impl InfoFiles {
    /// The [`INFO_FILES`] name `path` is, if it is one.
    pub(crate) fn wanted(path: &str) -> Option<&'static str> {
        INFO_FILES.iter().copied().find(|name| *name == path)
    }

    pub(crate) fn insert(&mut self, name: &'static str, data: Vec<u8>) {
        self.files.insert(name, data);
    }

    /// The files gathered, by name.
    pub(crate) fn files(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        self.files
            .iter()
            .map(|(name, data)| (*name, data.as_slice()))
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        package: &str,
    ) -> Result<Option<T>, PackageError> {
        self.files
            .get(name)
            .map(|data| {
                serde_json::from_slice(data).map_err(|e| PackageError::metadata(package, name, e))
            })
            .transpose()
    }

    /// Parses what was gathered; `package` names the archive in errors.
    pub(crate) fn parse(self, package: &str) -> Result<PackageMetadata, PackageError> {
        let index: Map<String, Value> = self
            .json("info/index.json", package)?
            .ok_or_else(|| PackageError::metadata(package, "info/index.json", "missing"))?;
        let text = |key: &str| match index.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(PackageError::metadata(
                package,
                "info/index.json",
                format!("no {key:?} string"),
            )),
        };
        let (name, version, build) = (text("name")?, text("version")?, text("build")?);
        for (key, value, allowed) in [
            ("name", &name, NAME_CHARS),
            ("version", &version, VERSION_CHARS),
            ("build", &build, BUILD_CHARS),
        ] {
            check_field(key, value, allowed)
                .map_err(|reason| PackageError::metadata(package, "info/index.json", reason))?;
        }
        let label = format!("{name}-{version}-{build}");
        let build_number = index
            .get("build_number")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let subdir = index
            .get("subdir")
            .and_then(Value::as_str)
            .map(str::to_string);
        let depends = match index.get("depends") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(specs)) => specs
                .iter()
                .map(|spec| spec.as_str().map(spec_name))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    PackageError::metadata(
                        &label,
                        "info/index.json",
                        "a `depends` entry is not a string",
                    )
                })?,
            Some(_) => {
                return Err(PackageError::metadata(
                    &label,
                    "info/index.json",
                    "`depends` is not a list",
                ))
            }
        };
        let index_noarch = match index.get("noarch") {
            None => None,
            Some(value) => parse_noarch(value)
                .map_err(|reason| PackageError::metadata(&label, "info/index.json", reason))?,
        };

        let link: Option<LinkJson> = self.json("info/link.json", &label)?;
        let link_noarch = link.as_ref().and_then(|l| l.noarch.as_ref());
        let noarch = match (index_noarch, link_noarch.and_then(|n| n.kind.as_ref())) {
            (Some(kind), _) => Some(kind),
            (None, Some(value)) => parse_noarch(value)
                .map_err(|reason| PackageError::metadata(&label, "info/link.json", reason))?,
            (None, None) => None,
        };
        let entry_points = link_noarch
            .map(|n| {
                n.entry_points
                    .iter()
                    .map(|d| EntryPoint::parse(d))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|reason| PackageError::metadata(&label, "info/link.json", reason))?
            .unwrap_or_default();

        let (paths, placeholders, paths_source) = match self
            .json::<PathsJson>("info/paths.json", &label)?
        {
            Some(paths_json) => {
                let paths = paths_json
                    .paths
                    .into_iter()
                    .map(|raw| raw.into_entry())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|reason| PackageError::metadata(&label, "info/paths.json", reason))?;
                let placeholders = paths
                    .iter()
                    .filter_map(|p| Some((p.path.clone(), p.placeholder.clone()?)))
                    .collect();
                (paths, placeholders, PathsSource::PathsJson)
            }
            None => match self.files.get("info/has_prefix") {
                Some(data) => {
                    let placeholders = parse_has_prefix(data).map_err(|reason| {
                        PackageError::metadata(&label, "info/has_prefix", reason)
                    })?;
                    (Vec::new(), placeholders, PathsSource::HasPrefix)
                }
                None => (Vec::new(), BTreeMap::new(), PathsSource::None),
            },
        };
        Ok(PackageMetadata {
            name,
            version,
            build,
            build_number,
            subdir,
            depends,
            noarch,
            index,
            placeholders,
            paths,
            paths_source,
            entry_points,
        })
    }
}

/// The package name a match spec names: `python >=3.8`, `libzlib 1.2.13 h4ab18f5_6`,
/// `conda-forge::numpy[version='>=1.20']` and `numpy>=1.20` all name what precedes the
/// first space, bracket or version operator, after any `channel::`.
fn spec_name(spec: &str) -> String {
    let spec = spec.trim();
    let spec = spec.rsplit_once("::").map_or(spec, |(_, name)| name);
    let end = spec
        .find(|c: char| c.is_whitespace() || "[<>=!~".contains(c))
        .unwrap_or(spec.len());
    spec[..end].to_string()
}

/// The punctuation conda allows in a package name besides ASCII letters and digits
/// (conda-build and rattler refuse anything else).
const NAME_CHARS: &str = "_-.";
/// ...in a version (`!` for an epoch, `+` for a local version, `*` in specs).
const VERSION_CHARS: &str = "_.+!*";
/// ...in a build string.
const BUILD_CHARS: &str = "_.+";

/// Checks an `index.json` field as conda validates it: ASCII letters, digits and the
/// punctuation `allowed`, at most 255 bytes, neither `.` nor `..`. A name becomes part
/// of a path (`conda-meta/NAME-VERSION-BUILD.json`), so this is what keeps a hostile
/// package from naming a file outside the prefix.
fn check_field(key: &str, value: &str, allowed: &str) -> Result<(), String> {
    let bad = value
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !allowed.contains(*c));
    if let Some(c) = bad {
        return Err(format!(
            "{key} {value:?} holds {c:?}: a conda {key} is ASCII letters, digits and {allowed:?}"
        ));
    }
    if value.len() > 255 || value == "." || value == ".." {
        return Err(format!("{key} {value:?} is not a conda {key}"));
    }
    Ok(())
}

/// conda's `NoarchType.coerce`: a boolean or yes-word means generic (old packages),
/// `python` and `generic` are themselves, a no-word means none.
fn parse_noarch(value: &Value) -> Result<Option<Noarch>, String> {
    match value {
        Value::Null | Value::Bool(false) => Ok(None),
        Value::Bool(true) => Ok(Some(Noarch::Generic)),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "python" => Ok(Some(Noarch::Python)),
            "generic" | "true" | "yes" | "on" | "y" => Ok(Some(Noarch::Generic)),
            "false" | "no" | "off" | "n" | "none" | "null" | "" => Ok(None),
            other => Err(format!("unknown noarch type {other:?}")),
        },
        other => Err(format!("noarch is {other}, not a string")),
    }
}

/// `info/has_prefix`: one file a line, `PLACEHOLDER MODE PATH` or just `PATH` (then the
/// legacy placeholder in text mode). Tokens may be quoted; `#` lines are comments.
pub(crate) fn parse_has_prefix(data: &[u8]) -> Result<BTreeMap<String, Placeholder>, String> {
    let text = std::str::from_utf8(data).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut placeholders = BTreeMap::new();
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let tokens = split_quoted(line);
        let (placeholder, mode, path) = match tokens.as_slice() {
            [path] => (LEGACY_PLACEHOLDER.to_string(), FileMode::Text, path.clone()),
            [placeholder, mode, path] => {
                let mode = FileMode::parse(mode).ok_or_else(|| {
                    format!("line {number}: mode {mode:?} is neither text nor binary")
                })?;
                (placeholder.clone(), mode, path.clone())
            }
            _ => {
                return Err(format!(
                    "line {number}: expected `PLACEHOLDER MODE PATH` or `PATH`: {line:?}"
                ))
            }
        };
        placeholders.insert(path, Placeholder { placeholder, mode });
    }
    Ok(placeholders)
}

/// Splits at whitespace outside quotes and strips the quotes around each token (what
/// conda gets from `shlex.split(line, posix=False)` and `strip("\"'")`).
fn split_quoted(line: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                current.push(c);
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                current.push(c);
            }
            (None, c) if c.is_whitespace() => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            (_, c) => current.push(c),
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
        .into_iter()
        .map(|t| t.trim_matches(|c| c == '"' || c == '\'').to_string())
        .collect()
}

#[derive(Deserialize)]
struct PathsJson {
    paths: Vec<RawPath>,
}

#[derive(Deserialize)]
struct RawPath {
    #[serde(rename = "_path")]
    path: String,
    #[serde(default)]
    path_type: Option<String>,
    #[serde(default)]
    prefix_placeholder: Option<String>,
    #[serde(default)]
    file_mode: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    size_in_bytes: Option<u64>,
}

impl RawPath {
    fn into_entry(self) -> Result<PathEntry, String> {
        let placeholder = match self.prefix_placeholder.filter(|p| !p.is_empty()) {
            None => None,
            Some(placeholder) => {
                // conda-build always writes the mode with a placeholder; text is what
                // a missing one meant to conda-build's has_prefix.
                let mode = match self.file_mode.as_deref() {
                    None => FileMode::Text,
                    Some(word) => FileMode::parse(word).ok_or_else(|| {
                        format!(
                            "{}: file_mode {word:?} is neither text nor binary",
                            self.path
                        )
                    })?,
                };
                Some(Placeholder { placeholder, mode })
            }
        };
        // The path is joined to the prefix: one that is absolute or climbs out with `..`
        // (at any length; a GNU long name is no safer) would land outside it.
        let path = normalize(&self.path).map_err(|reason| format!("{:?}: {reason}", self.path))?;
        if path.is_empty() {
            return Err(format!("{:?}: an empty path", self.path));
        }
        Ok(PathEntry {
            path,
            path_type: self.path_type.unwrap_or_else(|| "hardlink".into()),
            placeholder,
            sha256: self.sha256,
            size_in_bytes: self.size_in_bytes,
        })
    }
}

#[derive(Deserialize)]
struct LinkJson {
    #[serde(default)]
    noarch: Option<LinkNoarch>,
}

#[derive(Deserialize)]
struct LinkNoarch {
    #[serde(rename = "type", default)]
    kind: Option<Value>,
    #[serde(default)]
    entry_points: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_specs_name_their_package() {
        for (spec, name) in [
            ("python >=3.8", "python"),
            ("libzlib 1.2.13 h4ab18f5_6", "libzlib"),
            ("conda-forge::numpy[version='>=1.20']", "numpy"),
            ("conda-forge/linux-64::openssl", "openssl"),
            ("numpy>=1.20", "numpy"),
            ("__glibc >=2.17,<3.0.a0", "__glibc"),
            ("tzdata", "tzdata"),
        ] {
            assert_eq!(spec_name(spec), name, "{spec}");
        }
    }

    #[test]
    fn has_prefix_lines() {
        let data = b"# comment\nbin/a\n\"/long place\" binary 'lib/b c.so'\n/p text etc/x\n\n";
        let parsed = parse_has_prefix(data).unwrap();
        assert_eq!(
            parsed["bin/a"],
            Placeholder {
                placeholder: LEGACY_PLACEHOLDER.into(),
                mode: FileMode::Text
            }
        );
        assert_eq!(
            parsed["lib/b c.so"],
            Placeholder {
                placeholder: "/long place".into(),
                mode: FileMode::Binary
            }
        );
        assert_eq!(parsed["etc/x"].placeholder, "/p");
        assert!(parse_has_prefix(b"/p weird x\n").is_err());
        assert!(parse_has_prefix(b"a b\n").is_err());
    }

    #[test]
    fn noarch_values() {
        assert_eq!(parse_noarch(&Value::Bool(true)), Ok(Some(Noarch::Generic)));
        assert_eq!(parse_noarch(&"python".into()), Ok(Some(Noarch::Python)));
        assert_eq!(parse_noarch(&"generic".into()), Ok(Some(Noarch::Generic)));
        assert_eq!(parse_noarch(&Value::Null), Ok(None));
        assert!(parse_noarch(&"r".into()).is_err());
    }
}
