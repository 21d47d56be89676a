//! The closure of some images: every blob their indexes and manifests reach, each with
//! its size checked against the descriptor that points at it (the store's graph walk,
//! read as an archive needs it).

use std::collections::{BTreeMap, HashSet};

use crate::store::{reach, Descriptor, Store};

use super::{ArchiveError, MissingBlob};

/// What a set of images needs from a store.
#[derive(Debug, Default)]
pub struct Needed {
    /// Every blob reached that the store holds, keyed (and so sorted) by digest.
    pub blobs: BTreeMap<String, Descriptor>,
    /// Blobs reached that the store lacks (the children of a missing manifest cannot
    /// be known and are not listed).
    pub missing: Vec<MissingBlob>,
}

impl Needed {
    /// The total size of the blobs held.
    pub fn bytes(&self) -> u64 {
        self.blobs.values().map(Descriptor::size).sum()
    }
}

/// Walks from `roots` (name, descriptor) through indexes and manifests, with the
/// store's one graph walk. A stored blob whose size differs from its descriptor's is
/// an error (the store or the manifest is wrong, and a reader of the layout would
/// refuse it); a blob missing under several roots is listed once, for the first.
pub fn needed(store: &Store, roots: &[(String, Descriptor)]) -> Result<Needed, ArchiveError> {
    let reach = reach(store, roots.to_vec())?;
    if let Some(wrong) = reach.wrong_size.into_iter().next() {
        return Err(ArchiveError::SizeMismatch {
            digest: wrong.digest,
            needed_by: wrong.referenced_by,
            expected: wrong.expected,
            actual: wrong.actual,
        });
    }
    let mut listed = HashSet::new();
    let missing = reach
        .missing
        .into_iter()
        .filter(|m| listed.insert(m.digest.clone()))
        .collect();
    let blobs = reach
        .live
        .into_iter()
        .map(|(digest, descriptor)| (digest.to_string(), descriptor))
        .collect();
    Ok(Needed { blobs, missing })
}
