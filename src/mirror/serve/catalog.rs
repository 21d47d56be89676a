//! What `serve` offers: the store's refs as repositories and tags, re-read whenever
//! index.json changes.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use crate::oci::reference::Reference;
use crate::store::{Descriptor, FileStamp, Store, StoreError, StoreRef};

/// The served repositories (a ref's repository path without the registry host) and,
/// for each, its tags; and the same per registry, so a request that names its
/// registry (containerd's `?ns=HOST`, a mirror path `HOST/x/y`, or the default
/// upstream of a pull-through serve) gets that registry's image.
///
/// Built from index.json in file order. Where no registry is named the first ref wins:
/// when two refs map to the same repository and tag (`a.io/x/y:1` and `b.io/x/y:1`),
/// `x/y:1` serves the one listed first in index.json. A ref pinned by digest alone
/// (`x/y@sha256:...`) makes its repository known without adding a tag. Refs that are
/// not image references are not served.
#[derive(Debug, Default)]
pub(super) struct Catalog {
    repositories: BTreeMap<String, Tags>,
    /// registry -> repository -> tags.
    by_registry: BTreeMap<String, BTreeMap<String, Tags>>,
}

/// A repository's tags.
pub(super) type Tags = BTreeMap<String, Tagged>;

/// What a tag serves, and the store ref it comes from (whose use a request records).
#[derive(Debug, Clone)]
pub(super) struct Tagged {
    pub descriptor: Descriptor,
    pub store_ref: String,
}

impl Catalog {
    pub(super) fn from_refs(refs: Vec<StoreRef>) -> Self {
        let mut repositories: BTreeMap<String, Tags> = BTreeMap::new();
        let mut by_registry: BTreeMap<String, BTreeMap<String, Tags>> = BTreeMap::new();
        for store_ref in refs {
            let reference: Reference = match store_ref.name.parse() {
                Ok(reference) => reference,
                Err(e) => {
                    tracing::debug!(name = %store_ref.name, "not served: {e}");
                    continue;
                }
            };
            let own = by_registry
                .entry(reference.registry)
                .or_default()
                .entry(reference.repository.clone())
                .or_default();
            let tags = repositories.entry(reference.repository).or_default();
            let Some(tag) = reference.tag else { continue };
            let tagged = Tagged {
                descriptor: store_ref.descriptor.clone(),
                store_ref: store_ref.name.clone(),
            };
            own.entry(tag.clone()).or_insert(tagged);
            if tags.contains_key(&tag) {
                tracing::debug!(
                    name = %store_ref.name,
                    "not served by tag: an earlier ref has the same repository and tag"
                );
                continue;
            }
            let tagged = Tagged {
                descriptor: store_ref.descriptor,
                store_ref: store_ref.name,
            };
            tags.insert(tag, tagged);
        }
        Self {
            repositories,
            by_registry,
        }
    }

    /// [`Self::repository`] among the refs of `registry` only, when one is named.
    pub(super) fn repository_in(&self, name: &str, registry: Option<&str>) -> Option<&Tags> {
        let Some(registry) = registry else {
            return self.repository(name);
        };
        let repositories = self.by_registry.get(registry)?;
        repositories.get(name).or_else(|| {
            (!name.contains('/'))
                .then(|| repositories.get(&format!("library/{name}")))
                .flatten()
        })
    }

    /// The repository served as `name`, and its tags. A one-component name that is not
    /// a repository of its own falls back to `library/<name>`, as docker.io's names do
    /// (so `localhost:5000/alpine` finds `docker.io/library/alpine`).
    pub(super) fn repository(&self, name: &str) -> Option<&Tags> {
        self.repositories.get(name).or_else(|| {
            (!name.contains('/'))
                .then(|| self.repositories.get(&format!("library/{name}")))
                .flatten()
        })
    }

    /// Every served repository, sorted by name.
    pub(super) fn repositories(&self) -> &BTreeMap<String, Tags> {
        &self.repositories
    }
}

/// The catalog of the current index.json, rebuilt only when the file changed.
#[derive(Debug)]
pub(super) struct CatalogCache {
    store: Store,
    /// The catalog and the version of index.json (replaced by rename on every
    /// change) it was built from.
    current: Mutex<Option<(FileStamp, Arc<Catalog>)>>,
}

impl CatalogCache {
    pub(super) fn new(store: Store) -> Self {
        Self {
            store,
            current: Mutex::new(None),
        }
    }

    /// The catalog of index.json as it is now (blocking: stats, maybe reads, the file).
    pub(super) fn get(&self) -> Result<Arc<Catalog>, StoreError> {
        let path = self.store.root().join("index.json");
        let identity = match std::fs::metadata(&path) {
            Ok(m) => Some(FileStamp::of(&m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(identity), Some((cached, catalog))) = (identity, current.as_ref()) {
            if identity == *cached {
                return Ok(catalog.clone());
            }
        }
        let catalog = Arc::new(Catalog::from_refs(self.store.refs()?));
        if let Some(identity) = identity {
            *current = Some((identity, catalog.clone()));
        }
        Ok(catalog)
    }
}
