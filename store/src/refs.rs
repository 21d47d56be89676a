//! Refs: the named images in `index.json`. Changed under a lock and replaced
//! atomically, so concurrent updates from several processes lose nothing.

use std::fs;
use std::io;

use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};

use crate::atomic::write_atomic;
use crate::error::{IoContext, StoreError};
use crate::lock::FileLock;
use crate::Store;

/// The annotation that names an index.json entry (skopeo's and umoci's "tag").
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

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

    /// The descriptor a ref names, if any.
    pub fn resolve_ref(&self, name: &str) -> Result<Option<Descriptor>, StoreError> {
        Ok(self
            .refs()?
            .into_iter()
            .find(|r| r.name == name)
            .map(|r| r.descriptor))
    }

    /// Points `name` at `descriptor` (replacing what it named before). Everything it
    /// needs (manifests, configs, layers) must already be stored: that is checked under
    /// the refs lock, which `gc` holds while it sweeps, so a ref is never recorded for
    /// an image a concurrent `gc` has just taken blobs of.
    pub fn set_ref(&self, name: &str, descriptor: &Descriptor) -> Result<(), StoreError> {
        check_ref_name(name)?;
        let mut entry = descriptor.clone();
        let mut annotations = entry.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME_ANNOTATION.to_string(), name.to_string());
        entry.set_annotations(Some(annotations));
        let _lock = self.refs_lock()?;
        if !self.has(descriptor.digest()) {
            return Err(StoreError::BlobNotFound(descriptor.digest().clone()));
        }
        if let Some(first) = self.missing(descriptor)?.into_iter().next() {
            return Err(StoreError::RefIncomplete {
                name: name.to_string(),
                digest: first,
            });
        }
        // Blobs become durable before any ref may point at them.
        self.sync_blob_dirs()?;
        // Replaced where it stands, so an unchanged ref leaves index.json as it is
        // (no rewrite, no fsync) however many refs come after it.
        self.update_index_locked(|manifests| {
            let mut entry = Some(entry);
            manifests.retain_mut(|d| {
                if ref_name(d) != Some(name) {
                    return true;
                }
                entry.take().map(|e| *d = e).is_some()
            });
            manifests.extend(entry);
        })
    }

    /// Removes a ref; returns whether it existed. Blobs stay until `gc`.
    pub fn remove_ref(&self, name: &str) -> Result<bool, StoreError> {
        let mut found = false;
        self.update_index(|manifests| {
            let before = manifests.len();
            manifests.retain(|d| ref_name(d) != Some(name));
            found = manifests.len() != before;
        })?;
        Ok(found)
    }

    /// Every entry of index.json, named or not: the roots that keep blobs alive.
    pub(crate) fn index_entries(&self) -> Result<Vec<Descriptor>, StoreError> {
        Ok(self.read_index()?.manifests().clone())
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

    fn read_index(&self) -> Result<ImageIndex, StoreError> {
        let path = self.layout().index();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                path,
                what: "index.json",
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(empty_index()),
            Err(e) => Err(e).at(&path),
        }
    }

    fn update_index(&self, change: impl FnOnce(&mut Vec<Descriptor>)) -> Result<(), StoreError> {
        let _lock = self.refs_lock()?;
        self.update_index_locked(change)
    }

    /// [`Self::update_index`] for a caller already holding the refs lock.
    fn update_index_locked(
        &self,
        change: impl FnOnce(&mut Vec<Descriptor>),
    ) -> Result<(), StoreError> {
        let mut index = self.read_index()?;
        let mut manifests = index.manifests().clone();
        change(&mut manifests);
        if &manifests == index.manifests() {
            // Nothing changed (a warm pull): no rewrite, no fsync.
            return Ok(());
        }
        index.set_manifests(manifests);
        let json = serde_json::to_vec_pretty(&index).expect("an index serialises");
        write_atomic(&self.layout().index(), &json)
    }
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

fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME_ANNOTATION))
        .map(String::as_str)
}

fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .expect("an empty index is valid")
}
