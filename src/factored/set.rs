//! `factor-set`: several factored images built together from one set file, so the
//! layering can follow what the images share. A package two or more images of the set
//! use keeps a layer of its own, in install order with the packages more images use
//! first in each level, so the images share a chain from the bottom; the packages only
//! one image uses go on top of that image's shared ones, merged into one layer when
//! there are two or more. A runtime commits each layer it lacks at a cost per layer
//! (podman about 40 ms, whatever its size), and a layer only one image holds is shared
//! by none: merging them takes the cost of those layers away and shares nothing less
//! within the set. The same set file gives the same manifests in every store.
//!
//! The file (TOML; package paths relative to it):
//!
//! ```toml
//! base = "base"            # optional: the stored image every image builds on
//! [[image]]
//! name = "envs/analysis:1"
//! packages = ["pkgs/python-3.12.0-h0_0.conda", "pkgs/numpy-2.1.0-py312_0.conda"]
//! base = "other-base"      # optional, per image
//! entrypoint = ["python"]  # optional
//! cmd = ["-V"]             # optional
//! ```

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::compose::{factor_with, FactorError, FactorOptions, FactorReport};
use super::PackageError;
use crate::store::Store;

/// One image of a set: its name, and how to build it (`users` is worked out by
/// [`factor_set`]).
#[derive(Debug, Clone)]
pub struct SetImage {
    pub name: String,
    pub options: FactorOptions,
}

/// Why a set file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a factor set: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetFile {
    base: Option<String>,
    #[serde(default)]
    image: Vec<ImageEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageEntry {
    name: String,
    packages: Vec<PathBuf>,
    base: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
}

/// Reads the set file at `path`: each image gets `template`'s layer options and layer
/// cap, the file's base unless it names its own, and its packages resolved against
/// the file's directory.
pub fn read_factor_set(path: &Path, template: &FactorOptions) -> Result<Vec<SetImage>, SetError> {
    let text = std::fs::read_to_string(path).map_err(|source| SetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: SetFile = toml::from_str(&text).map_err(|source| SetError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |reason: String| SetError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    if file.image.is_empty() {
        return Err(invalid("it names no [[image]]".into()));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut names = HashSet::new();
    let mut images = Vec::new();
    for entry in file.image {
        if !names.insert(entry.name.clone()) {
            return Err(invalid(format!("image {:?} is named twice", entry.name)));
        }
        if entry.packages.is_empty() {
            return Err(invalid(format!("image {:?} has no packages", entry.name)));
        }
        images.push(SetImage {
            options: FactorOptions {
                base: entry.base.or_else(|| file.base.clone()),
                packages: entry.packages.iter().map(|p| dir.join(p)).collect(),
                users: HashMap::new(),
                entrypoint: entry.entrypoint,
                cmd: entry.cmd,
                ..template.clone()
            },
            name: entry.name,
        });
    }
    Ok(images)
}

/// Builds every image of the set, in order, each recorded under its name, with each
/// package's count of the set's images that use it (the same file, however its path
/// is written, is one package).
pub fn factor_set(
    store: &Store,
    mut images: Vec<SetImage>,
) -> Result<Vec<FactorReport>, FactorError> {
    let canonical = |path: &PathBuf| {
        std::fs::canonicalize(path).map_err(|source| PackageError::Io {
            path: path.clone(),
            source,
        })
    };
    let mut keys: Vec<Vec<PathBuf>> = Vec::new();
    let mut users: HashMap<PathBuf, usize> = HashMap::new();
    for image in &images {
        let mine: Vec<PathBuf> = image
            .options
            .packages
            .iter()
            .map(canonical)
            .collect::<Result<_, _>>()?;
        for key in mine.iter().collect::<HashSet<_>>() {
            *users.entry(key.clone()).or_default() += 1;
        }
        keys.push(mine);
    }
    let mut reports = Vec::new();
    for (image, mine) in images.iter_mut().zip(keys) {
        image.options.users = image
            .options
            .packages
            .iter()
            .zip(&mine)
            .map(|(path, key)| (path.clone(), users[key]))
            .collect();
        reports.push(factor_with(store, &image.name, &image.options, Vec::new())?);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factored::install::{LayerOptions, Prefix};
    use crate::factored::layer_tar::LayerCompression;

    fn template() -> FactorOptions {
        FactorOptions {
            base: None,
            packages: Vec::new(),
            users: HashMap::new(),
            layer: LayerOptions {
                prefix: Prefix::new("/opt/conda").unwrap(),
                python: None,
                compression: LayerCompression::Zstd,
            },
            max_layers: 125,
            entrypoint: None,
            cmd: None,
        }
    }

    fn read(text: &str) -> Result<Vec<SetImage>, SetError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("set.toml");
        std::fs::write(&path, text).unwrap();
        read_factor_set(&path, &template()).map(|images| {
            images
                .into_iter()
                .map(|mut image| {
                    // Relative to the file's directory: strip it for the comparison.
                    for p in &mut image.options.packages {
                        *p = p.strip_prefix(dir.path()).unwrap().to_path_buf();
                    }
                    image
                })
                .collect()
        })
    }

    #[test]
    fn packages_are_relative_to_the_file_and_the_base_is_inherited() {
        let images = read(
            "base = \"b\"\n[[image]]\nname = \"x\"\npackages = [\"p/a.conda\"]\n\
             [[image]]\nname = \"y\"\npackages = [\"q.conda\"]\nbase = \"c\"\ncmd = [\"sh\"]\n",
        )
        .unwrap();
        assert_eq!(images[0].options.packages, [PathBuf::from("p/a.conda")]);
        assert_eq!(images[0].options.base.as_deref(), Some("b"));
        assert_eq!(images[1].options.base.as_deref(), Some("c"));
        assert_eq!(images[1].options.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(images[1].options.max_layers, 125);
    }

    #[test]
    fn a_bad_set_is_refused_saying_why() {
        let message = |text: &str| read(text).err().unwrap().to_string();
        assert!(message("").contains("names no [[image]]"));
        assert!(message("[[image]]\nname = \"x\"\npackages = []\n").contains("has no packages"));
        assert!(message(
            "[[image]]\nname = \"x\"\npackages = [\"a\"]\n[[image]]\nname = \"x\"\npackages = [\"b\"]\n"
        )
        .contains("\"x\" is named twice"));
        assert!(
            message("[[image]]\nname = \"x\"\npackages = [\"a\"]\nbsae = \"b\"\n")
                .contains("unknown field")
        );
    }
}
