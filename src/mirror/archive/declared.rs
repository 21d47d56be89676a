//! The sizes an archive's own descriptors give its blobs, learnt while the archive is
//! read: index.json's entries, then the children of each manifest or index once it is
//! in. A blob entry whose size differs from its declared one cannot be that blob, so it
//! is refused before a byte of it is written (a compressed archive whose tar header
//! claims gigabytes for a small layer is never spooled to disk).

use std::collections::HashMap;

use crate::store::{is_graph_type, Descriptor, Digest};

/// What the first descriptor naming a blob said of it.
#[derive(Debug, Clone)]
pub(super) struct Declaration {
    pub size: u64,
    /// Where the descriptor is: `index.json` or `manifest <digest>`.
    pub by: String,
    /// The blob is a manifest or an index, whose children are learnt in turn.
    pub graph: bool,
}

/// The declarations met so far.
#[derive(Debug, Default)]
pub(super) struct Declared {
    sizes: HashMap<Digest, Declaration>,
}

impl Declared {
    pub fn get(&self, digest: &Digest) -> Option<&Declaration> {
        self.sizes.get(digest)
    }

    /// Records what `descriptors` (found in `by`) declare and returns the blobs not
    /// declared before. The first declaration of a blob is kept: a later one that
    /// contradicts it is caught when the images are checked whole, at the end.
    pub fn learn(&mut self, descriptors: Vec<Descriptor>, by: &str) -> Vec<(Digest, Declaration)> {
        let mut new = Vec::new();
        for descriptor in descriptors {
            let digest = descriptor.digest();
            if self.sizes.contains_key(digest) {
                continue;
            }
            let declaration = Declaration {
                size: descriptor.size(),
                by: by.to_string(),
                graph: is_graph_type(descriptor.media_type().as_ref()),
            };
            self.sizes.insert(digest.clone(), declaration.clone());
            new.push((digest.clone(), declaration));
        }
        new
    }
}
