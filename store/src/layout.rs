//! Where everything lives inside a store directory (an OCI image layout plus stowage's
//! own `ingest/` and `stowage/` folders, which layout readers ignore).

use std::path::{Path, PathBuf};

use oci_spec::image::Digest;

/// Paths of one store.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn oci_layout(&self) -> PathBuf {
        self.root.join("oci-layout")
    }

    pub fn index(&self) -> PathBuf {
        self.root.join("index.json")
    }

    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    /// `blobs/<algorithm>/<hex>`: verified content only.
    pub fn blob(&self, digest: &Digest) -> PathBuf {
        self.blobs()
            .join(digest.algorithm().as_ref())
            .join(digest.digest())
    }

    pub fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    fn ingest_file(&self, digest: &Digest, ext: &str) -> PathBuf {
        self.ingest_dir().join(format!(
            "{}-{}.{ext}",
            digest.algorithm().as_ref(),
            digest.digest()
        ))
    }

    /// The partial bytes of an ingest.
    pub fn ingest_data(&self, digest: &Digest) -> PathBuf {
        self.ingest_file(digest, "partial")
    }

    /// What an ingest expects and which byte ranges of it are durable.
    pub fn ingest_sidecar(&self, digest: &Digest) -> PathBuf {
        self.ingest_file(digest, "json")
    }

    /// Held by the one process writing an ingest.
    pub fn ingest_lock(&self, digest: &Digest) -> PathBuf {
        self.ingest_file(digest, "lock")
    }

    /// stowage's own state, which can be rebuilt.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("stowage")
    }

    /// Serialises changes to index.json.
    pub fn refs_lock(&self) -> PathBuf {
        self.state_dir().join("refs.lock")
    }

    /// Shared by every process using the store, exclusive for gc.
    pub fn gc_lock(&self) -> PathBuf {
        self.state_dir().join("gc.lock")
    }

    /// Where `verify` moves corrupt blobs.
    pub fn quarantine(&self) -> PathBuf {
        self.state_dir().join("quarantine")
    }
}
