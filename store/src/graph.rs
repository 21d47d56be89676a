//! The image graph: which blobs an index or a manifest points at. Used to mark what
//! refs keep alive (gc) and to find what an image lacks (verify).

use std::collections::{HashMap, HashSet};

use oci_spec::image::{Descriptor, Digest};
use serde::Deserialize;

use crate::error::StoreError;
use crate::media_type::is_graph_type;
use crate::Store;

/// The largest manifest or index stowage reads (the registry client caps them too).
pub const MANIFEST_LIMIT: u64 = 4 << 20;

/// Whether a layer is meant to be fetched from elsewhere and never stored.
fn is_foreign(descriptor: &Descriptor) -> bool {
    let media_type = descriptor.media_type().to_string();
    media_type.contains("nondistributable") || media_type.contains("foreign")
}

#[derive(Deserialize)]
struct Document {
    #[serde(default)]
    manifests: Vec<Descriptor>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// The blobs an index (its manifests) or a manifest (its config and layers) refers to,
/// leaving out foreign layers that are never stored.
pub fn children(document: &[u8]) -> Result<Vec<Descriptor>, serde_json::Error> {
    let doc: Document = serde_json::from_slice(document)?;
    Ok(doc
        .manifests
        .into_iter()
        .chain(doc.config)
        .chain(doc.layers)
        .filter(|d| !is_foreign(d))
        .collect())
}

/// A blob something needs that the store (or an archive) does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingBlob {
    pub digest: Digest,
    /// The ref (or other root) that needs it.
    pub referenced_by: String,
}

/// A stored blob whose size is not the one the descriptor pointing at it gives: the
/// store or the manifest is wrong, and a reader of the image would refuse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongSize {
    pub digest: Digest,
    /// The ref (or other root) that reached it.
    pub referenced_by: String,
    /// What the descriptor says.
    pub expected: u64,
    /// What the store holds.
    pub actual: u64,
}

/// What a walk from some roots found.
#[derive(Debug, Default)]
pub struct Reach {
    /// Every stored blob reachable from the roots, with the first descriptor that
    /// reached it.
    pub live: HashMap<Digest, Descriptor>,
    /// Blobs the roots need that the store lacks, once per descriptor that names them
    /// (the children of a missing manifest cannot be known and are not listed).
    pub missing: Vec<MissingBlob>,
    /// Stored blobs of another size than their descriptor's.
    pub wrong_size: Vec<WrongSize>,
}

/// The one walk of the image graph (gc's marking, verify's completeness check, an
/// export's or import's closure): from named roots through indexes and manifests,
/// children in the order their document lists them. A stored manifest that cannot be
/// read or parsed is an error: callers must not act on a partial picture. Roots are
/// taken one at a time, so a walk from every ref holds one root's copy, not all.
pub fn reach(
    store: &Store,
    roots: impl IntoIterator<Item = (String, Descriptor)>,
) -> Result<Reach, StoreError> {
    let mut live = HashMap::new();
    let walked = walk(store, roots, |descriptor| {
        live.insert(descriptor.digest().clone(), descriptor.clone());
    })?;
    Ok(Reach {
        live,
        missing: walked.missing,
        wrong_size: walked.wrong_size,
    })
}

/// The digests of every stored blob the roots reach, and nothing else: what gc keeps,
/// at a digest per blob rather than a descriptor.
pub(crate) fn live_digests(
    store: &Store,
    roots: impl IntoIterator<Item = (String, Descriptor)>,
) -> Result<HashSet<Digest>, StoreError> {
    Ok(walk(store, roots, |_| {})?.seen)
}

/// The blobs the roots need that the store lacks (what verify and `set_ref` ask),
/// holding a digest per blob reached and no descriptor.
pub(crate) fn missing(
    store: &Store,
    roots: impl IntoIterator<Item = (String, Descriptor)>,
) -> Result<Vec<MissingBlob>, StoreError> {
    Ok(walk(store, roots, |_| {})?.missing)
}

/// What [`walk`] found besides what it handed to its visitor.
struct Walked {
    /// The stored blobs reached.
    seen: HashSet<Digest>,
    missing: Vec<MissingBlob>,
    wrong_size: Vec<WrongSize>,
}

/// Walks the graph, calling `visit` once for each stored blob reached.
fn walk(
    store: &Store,
    roots: impl IntoIterator<Item = (String, Descriptor)>,
    mut visit: impl FnMut(&Descriptor),
) -> Result<Walked, StoreError> {
    let mut walked = Walked {
        seen: HashSet::new(),
        missing: Vec::new(),
        wrong_size: Vec::new(),
    };
    for (root, descriptor) in roots {
        let mut stack = vec![descriptor];
        while let Some(descriptor) = stack.pop() {
            let digest = descriptor.digest();
            if walked.seen.contains(digest) {
                continue;
            }
            let Some(size) = store.stat(digest)? else {
                walked.missing.push(MissingBlob {
                    digest: digest.clone(),
                    referenced_by: root.clone(),
                });
                continue;
            };
            if size != descriptor.size() {
                walked.wrong_size.push(WrongSize {
                    digest: digest.clone(),
                    referenced_by: root.clone(),
                    expected: descriptor.size(),
                    actual: size,
                });
            }
            if is_graph_type(descriptor.media_type().as_ref()) {
                let bytes = store.read_blob(digest, MANIFEST_LIMIT)?;
                let kids = children(&bytes).map_err(|e| StoreError::Corrupt {
                    digest: digest.clone(),
                    detail: format!("not a valid manifest or index: {e}"),
                })?;
                // Reversed, so the walk visits children in the document's order.
                stack.extend(kids.into_iter().rev());
            }
            visit(&descriptor);
            walked.seen.insert(digest.clone());
        }
    }
    Ok(walked)
}
