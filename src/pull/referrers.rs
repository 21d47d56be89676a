//! Pulling a subject's referrers (signatures, SBOMs, attestations): discover them on
//! the registry (`Client::referrers`: the referrers API or the tag schemas), keep the
//! ones the filter wants, fetch each manifest by digest (verified) and the blobs it
//! names through the pull's own verified fetch, then record them in the store's
//! referrers record of the subject. The store never holds unverified bytes, and a
//! record is written only once everything it names is stored.
//!
//! `sync` fetches the referrers a lockfile pinned through the same path
//! ([`fetch_referrers`]), by digest, with no discovery unless one is missing.

use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageManifest};
use serde::Serialize;

use super::progress::{ProgressReporter, Silent};
use super::{fetch_all, PullError, PullOptions};
use crate::oci::manifest::{ManifestKind, RawManifest};
use crate::oci::reference::Reference;
use crate::oci::referrer::{artifact_type_of, ReferrerFilter, ANNOTATION_COSIGN_TAG};
use crate::registry::{Client, RegistryError};
use crate::store::{Digest, Store, StoreError, MANIFEST_LIMIT};

/// One referrer a pull or sync carried, as `--json` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PulledReferrer {
    pub subject: String,
    pub digest: String,
    pub artifact_type: Option<String>,
}

impl PulledReferrer {
    /// The report line of `referrer`, recorded for `subject`.
    pub fn of(subject: &Digest, referrer: &Descriptor) -> Self {
        Self {
            subject: subject.to_string(),
            digest: referrer.digest().to_string(),
            artifact_type: referrer.artifact_type().as_ref().map(|t| t.to_string()),
        }
    }
}

/// Why a subject's referrers could not be carried. Each names the subject, and the
/// referrer when one is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ReferrerError {
    /// Asking the registry for the subject's referrers failed.
    #[error("referrers of {subject}: {source}")]
    Discover {
        subject: Digest,
        #[source]
        source: RegistryError,
    },
    /// Fetching one referrer's manifest or blobs failed.
    #[error("referrer {referrer} of {subject}: {source}")]
    Fetch {
        subject: Digest,
        referrer: Digest,
        #[source]
        source: PullError,
    },
    /// A referrer is not what was expected of it (its size, its subject, its kind).
    #[error("referrer {referrer} of {subject}: expected {expected}, found {found}")]
    Mismatch {
        subject: Digest,
        referrer: Digest,
        expected: String,
        found: String,
    },
    /// A pinned referrer the registry does not hold; `listed` says what it lists.
    #[error("referrer {referrer} of {subject} is not on the registry; it lists {listed}")]
    NotOnRegistry {
        subject: Digest,
        referrer: Digest,
        listed: String,
    },
    /// Offline, and the store lacks a referrer or a blob it names.
    #[error("referrer {referrer} of {subject} is not whole in the store (offline: nothing was fetched): {detail}")]
    NotLocal {
        subject: Digest,
        referrer: Digest,
        detail: String,
    },
    /// Reading or recording in the store failed.
    #[error("referrers of {subject}: {source}")]
    Store {
        subject: Digest,
        #[source]
        source: StoreError,
    },
}

/// What [`fetch_referrers`] carried.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    /// The referrers recorded, as recorded.
    pub referrers: Vec<Descriptor>,
    pub bytes_fetched: u64,
}

/// Discovers `subject`'s referrers in `reference`'s repository, fetches those
/// `filter` wants (manifest by digest, then its blobs, all verified) and records them
/// as the subject's referrers in `store`. Returns the referrers recorded.
pub async fn pull_referrers(
    client: &Arc<Client>,
    store: &Store,
    reference: &Reference,
    subject: &Descriptor,
    filter: &ReferrerFilter,
) -> Result<Vec<Descriptor>, ReferrerError> {
    let carried = pull_referrers_with(
        client,
        store,
        reference,
        subject.digest(),
        filter,
        &PullOptions::default(),
    )
    .await?;
    Ok(carried.referrers)
}

/// [`pull_referrers`] with the pull's options (its blob options; offline, the
/// store's record alone is read).
pub(crate) async fn pull_referrers_with(
    client: &Arc<Client>,
    store: &Store,
    reference: &Reference,
    subject: &Digest,
    filter: &ReferrerFilter,
    options: &PullOptions,
) -> Result<Carried, ReferrerError> {
    if options.offline {
        let referrers = store
            .referrers(subject)
            .map_err(|source| ReferrerError::Store {
                subject: subject.clone(),
                source,
            })?
            .into_iter()
            .filter(|d| filter.wants(d))
            .collect();
        return Ok(Carried {
            referrers,
            bytes_fetched: 0,
        });
    }
    let found = client
        .referrers(reference, subject, filter.single_type())
        .await
        .map_err(|source| ReferrerError::Discover {
            subject: subject.clone(),
            source,
        })?;
    let wanted: Vec<Descriptor> = found.into_iter().filter(|d| filter.wants(d)).collect();
    fetch_referrers(client, store, reference, subject, &wanted, options).await
}

/// Fetches each of `referrers` (descriptors naming a manifest by digest and size)
/// that the store lacks, with the blobs it names, and records them all as `subject`'s
/// referrers. A manifest the registry does not hold is reported with what the
/// registry lists for the subject instead.
pub(crate) async fn fetch_referrers(
    client: &Arc<Client>,
    store: &Store,
    reference: &Reference,
    subject: &Digest,
    referrers: &[Descriptor],
    options: &PullOptions,
) -> Result<Carried, ReferrerError> {
    let store_error = |source| ReferrerError::Store {
        subject: subject.clone(),
        source,
    };
    // Nothing fetched here is referenced by a ref: gc must wait until it is recorded.
    let _lease = store.lease().map_err(store_error)?;
    let mut carried = Carried::default();
    for wanted in referrers {
        let referrer = wanted.digest().clone();
        let fetch_error = |source: PullError| ReferrerError::Fetch {
            subject: subject.clone(),
            referrer: referrer.clone(),
            source,
        };
        let raw = match manifest(client, store, reference, &referrer, options.offline).await {
            Ok(raw) => raw,
            Err(PullError::Registry(RegistryError::Status { status: 404, .. })) => {
                return Err(not_on_registry(client, reference, subject, &referrer).await)
            }
            Err(PullError::NotLocal { .. }) => {
                return Err(ReferrerError::NotLocal {
                    subject: subject.clone(),
                    referrer,
                    detail: "its manifest is missing".into(),
                })
            }
            Err(e) => return Err(fetch_error(e)),
        };
        let mismatch = |expected: String, found: String| ReferrerError::Mismatch {
            subject: subject.clone(),
            referrer: referrer.clone(),
            expected,
            found,
        };
        if raw.bytes.len() as u64 != wanted.size() {
            return Err(mismatch(
                format!("{} bytes", wanted.size()),
                format!("a manifest of {} bytes", raw.bytes.len()),
            ));
        }
        let manifest = match raw.parse(&format!("{}@{referrer}", reference.name())) {
            Ok(ManifestKind::Image(manifest)) => manifest,
            Ok(ManifestKind::Index(_)) => {
                tracing::warn!(%subject, %referrer, "an index referrer is not carried (stowage carries image manifests)");
                continue;
            }
            Err(e) => return Err(fetch_error(e.into())),
        };
        if let Some(named) = manifest.subject() {
            if named.digest() != subject {
                return Err(mismatch(
                    format!("a manifest whose subject is {subject}"),
                    format!("subject {}", named.digest()),
                ));
            }
        }
        let mut missing = Vec::new();
        for blob in std::iter::once(manifest.config()).chain(manifest.layers()) {
            let stored = store.stat(blob.digest()).map_err(store_error)?;
            if stored.is_none()
                && !missing
                    .iter()
                    .any(|m: &Descriptor| m.digest() == blob.digest())
            {
                missing.push(blob.clone());
            }
        }
        if options.offline {
            if let Some(first) = missing.first() {
                return Err(ReferrerError::NotLocal {
                    subject: subject.clone(),
                    referrer,
                    detail: format!("blob {} is missing", first.digest()),
                });
            }
        }
        let progress: Arc<dyn ProgressReporter> = Arc::new(Silent);
        let (_, bytes, _) = fetch_all(client, store, reference, missing, options, &progress)
            .await
            .map_err(fetch_error)?;
        carried.bytes_fetched += bytes;
        store.put_as(&raw.digest, &raw.bytes).map_err(store_error)?;
        carried.referrers.push(recorded(wanted, &manifest));
    }
    store
        .add_referrers(subject, &carried.referrers)
        .map_err(store_error)?;
    Ok(carried)
}

/// The descriptor recorded for the referrer `wanted` (as discovered, or pinned) once
/// its manifest is verified: the manifest's own artifact type and annotations, as the
/// referrers API lists them, since a fallback index or a registry's answer may list
/// them otherwise or not at all; the discovered artifact type only where the manifest
/// names none (the type of the cosign tag it was found under), and the cosign tag
/// annotation kept.
fn recorded(wanted: &Descriptor, manifest: &ImageManifest) -> Descriptor {
    let mut recorded = wanted.clone();
    if manifest.artifact_type().is_some() || wanted.artifact_type().is_none() {
        recorded.set_artifact_type(Some(artifact_type_of(manifest).as_str().into()));
    }
    let mut annotations = manifest.annotations().clone().unwrap_or_default();
    if let Some(tag) = wanted
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_COSIGN_TAG))
    {
        annotations.insert(ANNOTATION_COSIGN_TAG.to_string(), tag.clone());
    }
    recorded.set_annotations((!annotations.is_empty()).then_some(annotations));
    recorded
}

/// A referrer manifest by digest: from the store when it holds it, else from the
/// registry (which verifies it against the digest); offline, only the store.
async fn manifest(
    client: &Client,
    store: &Store,
    reference: &Reference,
    digest: &Digest,
    offline: bool,
) -> Result<RawManifest, PullError> {
    if store.has(digest) {
        let bytes = store.read_blob(digest, MANIFEST_LIMIT)?;
        return Ok(RawManifest::from_stored(bytes, digest.clone()));
    }
    if offline {
        return Err(PullError::NotLocal {
            reference: format!("{}@{digest}", reference.name()),
            detail: String::new(),
        });
    }
    Ok(client.manifest(reference, digest.as_ref()).await?)
}

/// The error for a pinned referrer the registry lacks, naming what it lists instead.
async fn not_on_registry(
    client: &Client,
    reference: &Reference,
    subject: &Digest,
    referrer: &Digest,
) -> ReferrerError {
    let listed = match client.referrers(reference, subject, None).await {
        Ok(found) if found.is_empty() => "no referrers".to_string(),
        Ok(found) => found
            .iter()
            .map(|d| match d.artifact_type() {
                Some(t) => format!("{} ({t})", d.digest()),
                None => d.digest().to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => format!("nothing that could be read ({e})"),
    };
    ReferrerError::NotOnRegistry {
        subject: subject.clone(),
        referrer: referrer.clone(),
        listed,
    }
}

/// The referrers `filter` wants of each of `subjects`, carried into the store.
pub(crate) async fn carry_referrers(
    client: &Arc<Client>,
    store: &Store,
    reference: &Reference,
    subjects: &[Digest],
    filter: &ReferrerFilter,
    options: &PullOptions,
) -> Result<Vec<PulledReferrer>, PullError> {
    let mut carried = Vec::new();
    for subject in subjects {
        let found = pull_referrers_with(client, store, reference, subject, filter, options).await?;
        carried.extend(
            found
                .referrers
                .iter()
                .map(|d| PulledReferrer::of(subject, d)),
        );
    }
    Ok(carried)
}
