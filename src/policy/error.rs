//! Why a policy cannot be used, and why an image was refused.

use std::fmt;
use std::path::PathBuf;

use crate::store::StoreError;

/// A policy file that cannot be used, or an image it refuses.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading the signature policy {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the signature policy {path} is not containers-policy.json(5) JSON: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the signature policy {path}, scope {scope}: {detail}")]
    Invalid {
        path: PathBuf,
        scope: String,
        detail: String,
    },
    #[error(
        "the signature policy {path}, scope {scope}: {what} is not supported by stowage \
         (it checks cosign signatures made with a key, offline: sigstoreSigned with \
         keyPath or keyData)"
    )]
    Unsupported {
        path: PathBuf,
        scope: String,
        what: String,
    },
    #[error("{0}")]
    Refused(Refusal),
    #[error("checking the signatures of {image}: {source}")]
    Store {
        image: String,
        source: Box<StoreError>,
    },
}

/// An image the policy refuses: which image, under which scope of which policy file,
/// and every reason (one per requirement not met, with one line per signature tried).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub image: String,
    pub policy: PathBuf,
    pub scope: String,
    pub reasons: Vec<String>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is refused by the signature policy {} (scope {}): {}",
            self.image,
            self.policy.display(),
            self.scope,
            self.reasons.join("; ")
        )
    }
}
