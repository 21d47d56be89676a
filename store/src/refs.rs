//! Refs: the named images in `index.json`. Changed under a lock and replaced
//! atomically, so concurrent updates from several processes lose nothing.

use std::collections::HashMap;
use std::sync::Arc;

use oci_spec::image::{Descriptor, Digest};

use crate::atomic::write_atomic;
use crate::error::StoreError;
use crate::index_file::{empty_index, ref_name, ParsedIndex, REF_NAME_ANNOTATION};
use crate::lock::FileLock;
use crate::Store;

/// A named image in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreRef {
    pub name: String,
    pub descriptor: Descriptor,
}

impl Store {
    /// Every named entry of index.json, in file order.
    pub fn refs(&self) -> Result<Vec<StoreRef>, StoreError> {
        Ok(self
            .read_index()?
            .index
            .manifests()
            .iter()
            .filter_map(|d| {
                ref_name(d).map(|name| StoreRef {
                    name: name.to_string(),
                    descriptor: d.clone(),
                })
            })
            .collect())
    }

    /// Calls `each` with every named entry of index.json, in file order, without
    /// copying the list (`ls` of a store with 100 000 refs holds it once).
    pub fn for_each_ref(&self, mut each: impl FnMut(&str, &Descriptor)) -> Result<(), StoreError> {
        let parsed = self.read_index()?;
        for descriptor in parsed.index.manifests() {
            if let Some(name) = ref_name(descriptor) {
                each(name, descriptor);
            }
        }
        Ok(())
    }

    /// The descriptor a ref names, if any. Parses index.json only when it changed
    /// since this process last read it.
    pub fn resolve_ref(&self, name: &str) -> Result<Option<Descriptor>, StoreError> {
        let parsed = self.read_index()?;
        Ok(parsed
            .by_name
            .get(name)
            .map(|&i| parsed.index.manifests()[i].clone()))
    }

    /// Points `name` at `descriptor` (replacing what it named before). Everything it
    /// needs (manifests, configs, layers) must already be stored: that is checked under
    /// the refs lock, which `gc` holds while it sweeps, so a ref is never recorded for
    /// an image a concurrent `gc` has just taken blobs of.
    pub fn set_ref(&self, name: &str, descriptor: &Descriptor) -> Result<(), StoreError> {
        self.set_refs(&[(name.to_string(), descriptor.clone())])
    }

    /// [`Self::set_ref`] for many refs at once: one lock, one read and at most one
    /// rewrite of index.json, however many refs. All or nothing: when one image is not
    /// whole in the store, no ref is recorded and the error names it. A name given
    /// twice ends up naming its last descriptor.
    pub fn set_refs(&self, refs: &[(String, Descriptor)]) -> Result<(), StoreError> {
        let mut entries = Vec::with_capacity(refs.len());
        for (name, descriptor) in refs {
            check_ref_name(name)?;
            entries.push((name.as_str(), named_entry(name, descriptor)));
        }
        if entries.is_empty() {
            return Ok(());
        }
        let _lock = self.refs_lock()?;
        for (name, descriptor) in refs {
            if !self.has(descriptor.digest()) {
                return Err(StoreError::BlobNotFound(descriptor.digest().clone()));
            }
            if let Some(first) = self.missing(descriptor)?.into_iter().next() {
                return Err(StoreError::RefIncomplete {
                    name: name.clone(),
                    digest: first,
                });
            }
        }
        // Blobs become durable before any ref may point at them.
        self.sync_blob_dirs()?;
        // Replaced where it stands, so an unchanged ref leaves index.json as it is
        // (no rewrite, no fsync) however many refs come after it.
        self.update_index_locked(|manifests, by_name| {
            let mut chosen: HashMap<&str, usize> = HashMap::new();
            for (name, entry) in entries {
                match by_name.get(name).or_else(|| chosen.get(name)).copied() {
                    Some(i) => {
                        manifests[i] = entry;
                        chosen.insert(name, i);
                    }
                    None => {
                        chosen.insert(name, manifests.len());
                        manifests.push(entry);
                    }
                }
            }
            // A name another tool wrote twice keeps only the entry just set.
            let mut position = 0;
            manifests.retain(|d| {
                let keep = ref_name(d)
                    .and_then(|name| chosen.get(name))
                    .is_none_or(|&i| i == position);
                position += 1;
                keep
            });
        })
    }

    /// Puts `name` back as it was before this process recorded it: removed when
    /// `before` is `None`, else naming `before` again. Only while it still names one
    /// of `recorded` (what this process set): a ref another process changed
    /// meanwhile is left as that process set it, and `false` says so. `before`'s
    /// image must still be whole (a `gc` in between may have taken it), checked under
    /// the refs lock as [`Self::set_ref`] does.
    pub fn revert_ref(
        &self,
        name: &str,
        recorded: &[Digest],
        before: Option<&Descriptor>,
    ) -> Result<bool, StoreError> {
        let _lock = self.refs_lock()?;
        let parsed = self.read_index()?;
        let current = parsed
            .by_name
            .get(name)
            .map(|&i| parsed.index.manifests()[i].digest());
        if !current.is_some_and(|d| recorded.contains(d)) {
            return Ok(false);
        }
        if let Some(before) = before {
            if !self.has(before.digest()) {
                return Err(StoreError::BlobNotFound(before.digest().clone()));
            }
            if let Some(first) = self.missing(before)?.into_iter().next() {
                return Err(StoreError::RefIncomplete {
                    name: name.to_string(),
                    digest: first,
                });
            }
        }
        self.update_index_locked(|manifests, by_name| match (before, by_name.get(name)) {
            (Some(before), Some(&i)) => manifests[i] = named_entry(name, before),
            _ => manifests.retain(|d| ref_name(d) != Some(name)),
        })?;
        Ok(true)
    }

    /// Removes a ref; returns whether it existed. Blobs stay until `gc`.
    pub fn remove_ref(&self, name: &str) -> Result<bool, StoreError> {
        let mut found = false;
        let _lock = self.refs_lock()?;
        self.update_index_locked(|manifests, _| {
            let before = manifests.len();
            manifests.retain(|d| ref_name(d) != Some(name));
            found = manifests.len() != before;
        })?;
        Ok(found)
    }

    /// Removes the refs `names`, for a caller holding the refs lock (eviction).
    pub(crate) fn remove_refs_locked(&self, names: &[&str]) -> Result<(), StoreError> {
        let names: std::collections::HashSet<&str> = names.iter().copied().collect();
        self.update_index_locked(|manifests, _| {
            manifests.retain(|d| ref_name(d).is_none_or(|name| !names.contains(name)));
        })
    }

    /// Every entry of index.json, named or not: the roots that keep blobs alive.
    pub(crate) fn index_entries(&self) -> Result<Vec<Descriptor>, StoreError> {
        Ok(self.read_index()?.index.manifests().clone())
    }

    /// Writes an empty index.json if there is none.
    pub(crate) fn ensure_index(&self) -> Result<(), StoreError> {
        if self.layout().index().exists() {
            return Ok(());
        }
        let _lock = self.refs_lock()?;
        if self.layout().index().exists() {
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(&empty_index()).expect("an index serialises");
        write_atomic(&self.layout().index(), &json)
    }

    /// Serialises writers on the refs lock; holds it for the read-modify-write.
    pub(crate) fn refs_lock(&self) -> Result<FileLock, StoreError> {
        FileLock::exclusive(&self.layout().refs_lock())
    }

    pub(crate) fn read_index(&self) -> Result<Arc<ParsedIndex>, StoreError> {
        self.index_cache().read(&self.layout().index())
    }

    /// Changes the entries of index.json (given with the positions of the names
    /// they held before), for a caller holding the refs lock; rewrites the file only
    /// when something changed.
    fn update_index_locked(
        &self,
        change: impl FnOnce(&mut Vec<Descriptor>, &HashMap<String, usize>),
    ) -> Result<(), StoreError> {
        let parsed = self.read_index()?;
        let mut manifests = parsed.index.manifests().clone();
        change(&mut manifests, &parsed.by_name);
        if &manifests == parsed.index.manifests() {
            // Nothing changed (a warm pull): no rewrite, no fsync.
            return Ok(());
        }
        let mut index = parsed.index.clone();
        index.set_manifests(manifests);
        let json = serde_json::to_vec_pretty(&index).expect("an index serialises");
        let path = self.layout().index();
        write_atomic(&path, &json)?;
        self.index_cache().wrote(&path, index)
    }
}

/// `descriptor` as index.json lists it under `name`.
fn named_entry(name: &str, descriptor: &Descriptor) -> Descriptor {
    let mut entry = descriptor.clone();
    let mut annotations = entry.annotations().clone().unwrap_or_default();
    annotations.insert(REF_NAME_ANNOTATION.to_string(), name.to_string());
    entry.set_annotations(Some(annotations));
    entry
}

/// The longest ref name stowage records: a registry host, a repository path and a
/// digest fit with room to spare; more is a mistake or an attack (and breaks `ls`).
pub const REF_NAME_LIMIT: usize = 1024;

/// Refuses a ref name that is empty, too long, holds anything but printable ASCII
/// without spaces, or has `..` (a ref name becomes part of paths and runtime names).
/// Looser than the OCI `ref.name` grammar on purpose: conda mirrors' tags (`__p__`)
/// and full references with ports and digests must pass.
pub fn check_ref_name(name: &str) -> Result<(), StoreError> {
    let reason = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > REF_NAME_LIMIT {
        Some(format!(
            "it is {} bytes long (at most {REF_NAME_LIMIT})",
            name.len()
        ))
    } else if let Some(c) = name.chars().find(|c| !c.is_ascii_graphic()) {
        Some(format!("it holds {c:?}"))
    } else if name.contains("..") {
        Some("it holds `..`".to_string())
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(StoreError::BadRefName {
            name: name
                .chars()
                .take(80)
                .collect::<String>()
                .escape_debug()
                .to_string(),
            reason,
        }),
    }
}
