//! The closure of some images: every blob their indexes and manifests reach, each with
//! its size checked against the descriptor that points at it.

use std::collections::{BTreeMap, HashSet};

use crate::store::{children, is_graph_type, Descriptor, Store, MANIFEST_LIMIT};

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

/// Walks from `roots` (name, descriptor) through indexes and manifests. A stored blob
/// whose size differs from its descriptor's is an error (the store or the manifest is
/// wrong, and a reader of the layout would refuse it).
pub fn needed(store: &Store, roots: &[(String, Descriptor)]) -> Result<Needed, ArchiveError> {
    let mut needed = Needed::default();
    let mut seen = HashSet::new();
    for (name, root) in roots {
        let mut stack = vec![root.clone()];
        while let Some(descriptor) = stack.pop() {
            let digest = descriptor.digest().clone();
            if !seen.insert(digest.clone()) {
                continue;
            }
            let Some(size) = store.stat(&digest)? else {
                needed.missing.push(MissingBlob {
                    digest,
                    referenced_by: name.clone(),
                });
                continue;
            };
            if size != descriptor.size() {
                return Err(ArchiveError::SizeMismatch {
                    digest,
                    needed_by: name.clone(),
                    expected: descriptor.size(),
                    actual: size,
                });
            }
            if is_graph_type(descriptor.media_type().as_ref()) {
                let bytes = store.read_blob(&digest, MANIFEST_LIMIT)?;
                let kids = children(&bytes).map_err(|e| ArchiveError::Malformed {
                    source_name: name.clone(),
                    what: "a manifest",
                    detail: format!("{digest}: {e}"),
                })?;
                // Reversed, so the walk visits children in the document's order.
                stack.extend(kids.into_iter().rev());
            }
            needed.blobs.insert(digest.to_string(), descriptor);
        }
    }
    Ok(needed)
}
