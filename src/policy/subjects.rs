//! Which digests' signatures stand for a stored image: its manifest's own, and those
//! of each stored index that lists it and has referrers recorded. cosign signs what a
//! tag names, often a multi-platform index; the index, stored by digest, vouches for
//! the manifests it lists, so its signature covers the platform image chosen from it.

use std::collections::HashMap;

use oci_spec::image::{Digest, ImageIndex};

use crate::store::{Store, MANIFEST_LIMIT};

use super::error::PolicyError;

/// The stored indexes that have referrers, by the manifests they list: read once for
/// a command that checks many images.
#[derive(Debug, Default)]
pub struct SignedIndexes {
    by_manifest: HashMap<Digest, Vec<Digest>>,
}

impl SignedIndexes {
    /// Reads every subject with referrers recorded that is a stored index.
    pub fn read(store: &Store) -> Result<Self, PolicyError> {
        let mut by_manifest: HashMap<Digest, Vec<Digest>> = HashMap::new();
        let subjects = store.all_referrers().map_err(|source| PolicyError::Store {
            image: "(the store's referrers)".to_string(),
            source: Box::new(source),
        })?;
        for (subject, _) in subjects {
            // Not stored, or not an index: it vouches for nothing else.
            let Ok(bytes) = store.read_blob(&subject, MANIFEST_LIMIT) else {
                continue;
            };
            let Ok(index) = serde_json::from_slice::<ImageIndex>(&bytes) else {
                continue;
            };
            for entry in index.manifests() {
                by_manifest
                    .entry(entry.digest().clone())
                    .or_default()
                    .push(subject.clone());
            }
        }
        Ok(Self { by_manifest })
    }

    /// `manifest`, then each stored index with referrers that lists it.
    pub fn subjects(&self, manifest: &Digest) -> Vec<Digest> {
        let mut subjects = vec![manifest.clone()];
        for index in self.by_manifest.get(manifest).into_iter().flatten() {
            if !subjects.contains(index) {
                subjects.push(index.clone());
            }
        }
        subjects
    }
}

/// [`SignedIndexes::subjects`] for one image (reads the store's referrers once).
pub fn signed_subjects(store: &Store, manifest: &Digest) -> Result<Vec<Digest>, PolicyError> {
    Ok(SignedIndexes::read(store)?.subjects(manifest))
}
