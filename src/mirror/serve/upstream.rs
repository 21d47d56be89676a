//! Pull-through: what the store lacks is fetched from an upstream registry as clients
//! ask for it (`serve --upstream`).
//!
//! - A manifest by digest is immutable: served from the store when it holds it, else
//!   fetched (the bytes must hash to the digest) and stored.
//! - A manifest by tag goes through the store's tag cache: resolved less than
//!   [`Upstreams::tag_ttl`] ago and stored, it is served without asking upstream;
//!   else it is fetched, stored and the resolution cached. When upstream cannot be
//!   reached, the store's ref of that name still answers.
//! - A blob is known by the manifests served (their configs, layers and child
//!   manifests, with sizes), fetched through the pull path and streamed as it arrives
//!   (`tap`). A blob no served manifest named is unknown (404).
//! - Images become refs under their full upstream name once whole in the store
//!   (`127.0.0.1:5000/x/y:1`; an index's platform image under the index's tag, other
//!   platforms and images asked for by digest as `HOST/x/y@sha256:...`), so a later
//!   serve, offline or not, serves them by tag, and `gc` keeps them.
//! - [`Upstreams::offline`]: nothing is fetched; only what is stored is served.
//!
//! Only the configured upstreams are ever fetched from: a `?ns=` or mirror path naming
//! another registry selects among stored refs only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::StatusCode;

use super::naming::{registry_of, Located};
use super::response::{ApiError, ErrorCode};
use super::tap::{Fetch, Taps};
use crate::oci::manifest::{ManifestKind, RawManifest};
use crate::oci::reference::Reference;
use crate::pull::peers::{asked_by_a_peer, peer_blob_size, Peers};
use crate::pull::tagcache::TagCache;
use crate::pull::PullOptions;
use crate::registry::{Client, RegistryError};
use crate::store::{parse_digest, Descriptor, Digest, Store, MANIFEST_LIMIT};

/// The blobs named by served manifests that are remembered at most (a cache: past
/// it, it starts afresh, and clients re-read a manifest before its blobs anyway).
const KNOWN_LIMIT: usize = 200_000;

/// The registries a pull-through serve fetches from (`serve --upstream`).
#[derive(Clone)]
pub struct Upstreams {
    /// The client the fetches share (its in-flight claims make one fetch per blob).
    pub client: Arc<Client>,
    /// The upstream registries, `host[:port]` or `http(s)://host[:port]`; the first is
    /// the default, used when a request names none.
    pub registries: Vec<String>,
    /// How long a tag's resolution is trusted before upstream is asked again
    /// (`--tag-ttl`, 60 s by default in the CLI).
    pub tag_ttl: Duration,
    /// Serve only what is stored, fetch nothing (`--offline`).
    pub offline: bool,
    /// Ask these peers for a blob before upstream, on a local client's behalf (a
    /// request from a peer, `asked_by_a_peer`, is fetched from upstream directly).
    pub peers: Option<Arc<Peers>>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("registries", &self.registries)
            .field("tag_ttl", &self.tag_ttl)
            .field("offline", &self.offline)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

/// A pull-through serve's state.
pub(super) struct Through {
    client: Arc<Client>,
    /// Normalised as refs name registries; the first is the default.
    pub(super) registries: Vec<String>,
    tag_ttl: Duration,
    pub(super) offline: bool,
    peers: Option<Arc<Peers>>,
    store: Store,
    /// Blobs the served manifests name: where to fetch each from, and its size.
    known: Mutex<HashMap<Digest, (Reference, Descriptor)>>,
    /// Platform manifests of indexes fetched by tag: the tag their image is recorded as.
    tag_of: Mutex<HashMap<Digest, String>>,
    /// Images to record as refs once whole.
    pending: Arc<Mutex<Vec<(String, Descriptor)>>>,
    taps: Taps,
}

impl Through {
    pub(super) fn new(upstreams: &Upstreams, store: Store) -> Self {
        let registries = upstreams
            .registries
            .iter()
            .map(|u| registry_of(u).unwrap_or_else(|| u.clone()))
            .collect();
        Self {
            client: upstreams.client.clone(),
            registries,
            tag_ttl: upstreams.tag_ttl,
            offline: upstreams.offline,
            peers: upstreams.peers.clone(),
            store,
            known: Mutex::default(),
            tag_of: Mutex::default(),
            pending: Arc::default(),
            taps: Taps::default(),
        }
    }

    /// Whether requests for `located` may be fetched from upstream.
    fn fetches(&self, located: &Located) -> Option<String> {
        let registry = located.registry.as_ref()?;
        (!self.offline && self.registries.contains(registry)).then(|| registry.clone())
    }

    /// The manifest `reference` (tag or digest) of `located`: from the store as the
    /// tag cache or the digest says, else from upstream. `Ok(None)`: not for upstream
    /// (offline, or no upstream's), the store's refs answer.
    pub(super) async fn manifest(
        &self,
        located: &Located,
        reference: &str,
    ) -> Result<Option<RawManifest>, ApiError> {
        let registry = located.registry.clone();
        let pinned = parse_digest(reference).ok();
        let upstream_ref = |tag: Option<String>, digest: Option<Digest>| Reference {
            registry: registry.clone().unwrap_or_default(),
            repository: located.repository.clone(),
            tag,
            digest,
        };
        let unknown = || ApiError::manifest_unknown(&located.repository, reference);
        if reference.contains(':') && pinned.is_none() {
            return Err(unknown());
        }
        let tag_name = format!(
            "{}/{}:{reference}",
            registry.as_deref().unwrap_or(""),
            located.repository
        );
        // What the store holds: by digest, or by a tag resolved within the TTL.
        let stored_digest = match &pinned {
            Some(digest) => Some(digest.clone()),
            None if registry.is_some() => TagCache::new(&self.store).get(&tag_name, self.tag_ttl),
            None => None,
        };
        if let Some(digest) = stored_digest {
            if let Some(raw) = self.read_stored(&digest).await? {
                let target = upstream_ref(pinned.is_none().then(|| reference.to_string()), None);
                self.remember(&target, &raw, None);
                return Ok(Some(raw));
            }
        }
        let Some(_) = self.fetches(located) else {
            return Ok(None);
        };
        let target = upstream_ref(
            pinned.is_none().then(|| reference.to_string()),
            pinned.clone(),
        );
        let raw = match self.client.manifest(&target, reference).await {
            Ok(raw) => raw,
            Err(RegistryError::Status { status: 404, .. }) => return Err(unknown()),
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::Unknown,
                    format!("fetching {target} from upstream: {e}"),
                ))
            }
        };
        if let Err(e) = raw.parse(&target.to_string()) {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::Unknown,
                e.to_string(),
            ));
        }
        {
            let (store, raw, tag_name) = (self.store.clone(), raw.clone(), tag_name.clone());
            let tagged = pinned.is_none();
            blocking(move || {
                store.put_as(&raw.digest, &raw.bytes)?;
                if tagged {
                    TagCache::new(&store).put(&tag_name, &raw.digest)?;
                }
                Ok(())
            })
            .await?;
        }
        tracing::info!("pulled {target} through ({})", raw.digest);
        self.remember(&target, &raw, pinned.is_none().then_some(tag_name));
        self.record_whole().await;
        Ok(Some(raw))
    }

    /// The stored manifest `digest`, if the store holds it.
    async fn read_stored(&self, digest: &Digest) -> Result<Option<RawManifest>, ApiError> {
        let (store, digest) = (self.store.clone(), digest.clone());
        blocking(move || {
            match store.stat(&digest)? {
                Some(size) if size <= MANIFEST_LIMIT => {}
                _ => return Ok(None),
            }
            let bytes = store.read_blob(&digest, MANIFEST_LIMIT)?;
            Ok(Some(RawManifest::from_stored(bytes, digest)))
        })
        .await
    }

    /// Notes the blobs `raw` names, and the image to record once whole.
    fn remember(&self, target: &Reference, raw: &RawManifest, tag_name: Option<String>) {
        let Ok(kind) = raw.parse(&target.to_string()) else {
            return;
        };
        let repo = Reference {
            tag: None,
            digest: None,
            ..target.clone()
        };
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() > KNOWN_LIMIT {
            known.clear();
        }
        let children: Vec<Descriptor> = match &kind {
            ManifestKind::Index(index) => index.manifests().clone(),
            ManifestKind::Image(image) => std::iter::once(image.config().clone())
                .chain(image.layers().iter().cloned())
                .collect(),
        };
        for child in &children {
            known.insert(child.digest().clone(), (repo.clone(), child.clone()));
        }
        drop(known);
        if target.registry.is_empty() {
            return;
        }
        let by_digest = format!("{}/{}@{}", target.registry, target.repository, raw.digest);
        let name = match (&kind, tag_name) {
            (ManifestKind::Index(_), Some(tag)) => {
                let mut tag_of = self.tag_of.lock().unwrap_or_else(|p| p.into_inner());
                for child in &children {
                    tag_of
                        .entry(child.digest().clone())
                        .or_insert_with(|| tag.clone());
                }
                return;
            }
            (ManifestKind::Index(_), None) => return,
            (ManifestKind::Image(_), Some(tag)) => tag,
            (ManifestKind::Image(_), None) => {
                let tag = self
                    .tag_of
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&raw.digest);
                tag.unwrap_or(by_digest)
            }
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if !pending.iter().any(|(n, _)| *n == name) {
            pending.push((name, raw.descriptor()));
        }
    }

    /// Where to fetch `digest` from and its size, if a served manifest named it.
    pub(super) fn known(&self, digest: &Digest) -> Option<(Reference, Descriptor)> {
        if self.offline {
            return None;
        }
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .cloned()
    }

    /// Where a peer's request for `digest` of `located` is fetched from: a peer
    /// names the blob's size from the manifest it verified, since this serve may have
    /// served no manifest naming it (the peer had its manifests from upstream).
    pub(super) fn asked_by_peer(
        &self,
        located: &Located,
        digest: &Digest,
        headers: &hyper::HeaderMap,
    ) -> Option<(Reference, Descriptor)> {
        if !asked_by_a_peer(headers) {
            return None;
        }
        let size = peer_blob_size(headers)?;
        let registry = self.fetches(located)?;
        let repository = Reference {
            registry,
            repository: located.repository.clone(),
            tag: None,
            digest: None,
        };
        let descriptor = Descriptor::new(
            oci_spec::image::MediaType::Other("application/octet-stream".into()),
            size,
            digest.clone(),
        );
        Some((repository, descriptor))
    }

    /// A body streaming `descriptor` fetched through from `repository`; for a local
    /// client (not `from_peer`), the peers are asked first.
    pub(super) fn blob_body(
        &self,
        repository: Reference,
        descriptor: Descriptor,
        slot: tokio::sync::OwnedSemaphorePermit,
        from_peer: bool,
    ) -> super::response::Body {
        let (store, pending) = (self.store.clone(), self.pending.clone());
        // Range-split as any pull: a client is streamed the prefix on disk with no
        // gap (see `tap`), however the ranges arrive.
        let options = PullOptions {
            peers: if from_peer { None } else { self.peers.clone() },
            ..PullOptions::default()
        };
        let fetch = Fetch {
            client: self.client.clone(),
            store: self.store.clone(),
            reference: repository,
            descriptor,
            options,
            stored: Box::new(move || record_pending(&store, &pending)),
        };
        self.taps.body(fetch, slot)
    }

    /// Records the pending images the store now holds whole.
    async fn record_whole(&self) {
        let (store, pending) = (self.store.clone(), self.pending.clone());
        let _ = tokio::task::spawn_blocking(move || record_pending(&store, &pending)).await;
    }
}

/// Records as refs the pending images that are whole (blocking).
fn record_pending(store: &Store, pending: &Mutex<Vec<(String, Descriptor)>>) {
    let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
    let mut whole = Vec::new();
    pending.retain(|(name, descriptor)| match store.is_complete(descriptor) {
        Ok(true) => {
            whole.push((name.clone(), descriptor.clone()));
            false
        }
        _ => true,
    });
    if whole.is_empty() {
        return;
    }
    match store.set_refs(&whole) {
        Ok(()) => {
            for (name, _) in &whole {
                tracing::info!("recorded {name}");
            }
        }
        Err(e) => tracing::warn!("recording pulled-through images: {e}"),
    }
}

/// Runs store work on the blocking pool; its failure is the server's own (500).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}
