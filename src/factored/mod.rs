//! Factored images: one layer per conda package, so images that share packages share
//! layers (ARCHITECTURE.md, `factored`).

pub mod artifact;
mod cache_file;
pub mod compose;
mod info_cache;
pub mod install;
mod install_order;
mod layer_cache;
pub mod layer_tar;
pub mod metadata;
pub mod noarch;
pub mod package;
mod package_layer;
mod package_path;
pub mod placeholder;
mod record;
pub mod set;
mod staging;

use std::io;
use std::path::PathBuf;

/// Why a package could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{package}: not a conda package: {reason}")]
    Format { package: String, reason: String },
    #[error("{package}: {file}: {reason}")]
    Metadata {
        package: String,
        file: String,
        reason: String,
    },
    #[error("{package}: archive entry {path:?}: {reason}")]
    Entry {
        package: String,
        path: String,
        reason: String,
    },
}

impl PackageError {
    pub(crate) fn metadata(package: &str, file: &str, reason: impl ToString) -> Self {
        Self::Metadata {
            package: package.to_string(),
            file: file.to_string(),
            reason: reason.to_string(),
        }
    }

    fn format(package: &str, reason: impl ToString) -> Self {
        Self::Format {
            package: package.to_string(),
            reason: reason.to_string(),
        }
    }
}
