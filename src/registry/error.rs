//! The registry client's typed errors. None of them carries a credential or a token.

use crate::oci::manifest::ManifestError;
use crate::store::{Digest, StoreError};

/// Errors from talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request could not be sent or its body not read.
    #[error("{url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The registry answered with an error status.
    #[error("{url}: HTTP {status}{detail}")]
    Status {
        url: String,
        status: u16,
        /// The registry's own error text, if it sent one (`: CODE: message`).
        detail: String,
    },

    /// The registry refused our credentials or we could not get a token.
    #[error("{registry}: authentication failed: {detail}")]
    Auth { registry: String, detail: String },

    /// Retries ran out.
    #[error("{url}: gave up after {attempts} attempts; last: {last}")]
    GaveUp {
        url: String,
        attempts: u32,
        last: String,
    },

    /// The client's own configuration is unusable: a reference that does not parse, a
    /// CA file that cannot be read, TLS that cannot be set up. Not the registry's fault.
    #[error("{what}: {detail}")]
    Config { what: String, detail: String },

    /// A manifest or index that stowage cannot use.
    #[error("manifest {reference}: {detail}")]
    BadManifest { reference: String, detail: String },

    /// The registry served a manifest other than the one pinned.
    #[error("{reference}: the registry's manifest digest is {actual}, expected {expected}")]
    DigestMismatch {
        reference: String,
        expected: Digest,
        actual: Digest,
    },

    /// An index has no manifest for the platform asked for.
    #[error("{reference}: no manifest for platform {platform} (the index has: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },

    /// A blob response that does not match what was asked for.
    #[error("blob {digest}: {detail}")]
    BadBlob { digest: Digest, detail: String },

    /// Something in the store failed (a digest mismatch is reported from here).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ManifestError> for RegistryError {
    fn from(e: ManifestError) -> Self {
        RegistryError::BadManifest {
            reference: e.reference,
            detail: e.detail,
        }
    }
}
