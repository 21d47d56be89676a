//! The referrers of a copied image, pushed after it: every signature, SBOM and
//! attestation the store records for the image's manifests (the filter picks among
//! the image's own; the referrers of those, such as an SBOM's signature, go along
//! with them), each manifest by digest after its blobs. Then the tag schemas, so
//! clients of a registry without the referrers API find them:
//! - a referrer found under a cosign tag goes back under that tag
//!   (`sha256-<hex>.sig`), whatever the target: cosign's tag-schema signatures name
//!   no subject, and only their tag leads to them;
//! - the others, when the target does not answer the referrers API (asked once per
//!   copy), are merged by digest into the subject's fallback index (`sha256-<hex>`):
//!   the one the target holds is fetched first, so referrers pushed by others stay.

use std::collections::HashSet;

use oci_spec::image::{ImageIndexBuilder, MediaType};

use super::{plan, upload_blobs, CopyError, CopyReport};
use crate::oci::manifest::{ManifestKind, RawManifest};
use crate::oci::reference::Reference;
use crate::oci::referrer::{fallback_tag, CosignTag, ReferrerFilter};
use crate::registry::{Client, ClientConfig, Pusher, RegistryError};
use crate::store::{sha256_of, Descriptor, Digest, Store, MANIFEST_LIMIT};

/// Where referrers are pushed.
pub(super) struct Target<'a> {
    pub pusher: &'a Pusher,
    /// How to reach the target for reads (the referrers API, the fallback index).
    pub config: &'a ClientConfig,
    pub reference: &'a Reference,
    /// The image's source repository on the target's registry, to mount blobs from.
    pub source: Option<&'a Reference>,
}

/// Pushes the referrers the store holds for `subjects` (the copied image's manifests)
/// that `filter` wants, with the tag schemas the target needs.
pub(super) async fn push(
    store: &Store,
    to: &Target<'_>,
    subjects: &[Digest],
    filter: &ReferrerFilter,
    report: &mut CopyReport,
) -> Result<(), CopyError> {
    let held = held(store, subjects, filter)?;
    let mut pushed = HashSet::new();
    for (subject, referrer) in &held {
        if !pushed.insert(referrer.digest().clone()) {
            continue;
        }
        let name = format!("referrer {} of {subject}", referrer.digest());
        let (blobs, manifests) = plan(store, &name, referrer)?;
        upload_blobs(store, to.pusher, &blobs, to.source, report).await?;
        for manifest in &manifests {
            to.pusher.push_manifest_by_digest(manifest).await?;
        }
        report.referrers_pushed += 1;
    }
    for (subject, referrer) in &held {
        if let Some(kind) = CosignTag::of(referrer) {
            let manifest = stored(store, referrer.digest())?;
            to.pusher
                .push_manifest_as_tag(&manifest, &kind.tag(subject))
                .await?;
        }
    }
    let indexed: Vec<&(Digest, Descriptor)> = held
        .iter()
        .filter(|(_, referrer)| CosignTag::of(referrer).is_none())
        .collect();
    let Some((first, _)) = indexed.first() else {
        return Ok(());
    };
    let client = Client::new(to.config.clone())?;
    let api = client.answers_referrers_api(to.reference, first).await?;
    report.referrers_api = Some(api);
    if api {
        return Ok(());
    }
    let mut done: Vec<&Digest> = Vec::new();
    for (subject, _) in &indexed {
        if done.contains(&subject) {
            continue;
        }
        done.push(subject);
        let ours: Vec<Descriptor> = indexed
            .iter()
            .filter(|(s, _)| s == subject)
            .map(|(_, referrer)| referrer.clone())
            .collect();
        update_fallback(&client, to, subject, &ours).await?;
    }
    Ok(())
}

/// The (subject, referrer) pairs to push: the records of `subjects` that `filter`
/// wants, then, in turn, every record of each referrer carried.
fn held(
    store: &Store,
    subjects: &[Digest],
    filter: &ReferrerFilter,
) -> Result<Vec<(Digest, Descriptor)>, CopyError> {
    let mut held = Vec::new();
    let mut visited: HashSet<Digest> = subjects.iter().cloned().collect();
    let mut queue: Vec<(Digest, bool)> = subjects.iter().map(|s| (s.clone(), true)).collect();
    let mut next = 0;
    while next < queue.len() {
        let (subject, of_image) = queue[next].clone();
        next += 1;
        for referrer in store.referrers(&subject)? {
            if of_image && !filter.wants(&referrer) {
                continue;
            }
            if visited.insert(referrer.digest().clone()) {
                queue.push((referrer.digest().clone(), false));
            }
            held.push((subject.clone(), referrer));
        }
    }
    Ok(held)
}

/// A stored manifest as it is pushed.
fn stored(store: &Store, digest: &Digest) -> Result<RawManifest, CopyError> {
    let bytes = store.read_blob(digest, MANIFEST_LIMIT)?;
    Ok(RawManifest::from_stored(bytes, digest.clone()))
}

/// Merges `ours` (by digest) into the target's fallback index of `subject` and pushes
/// it when it gained any. A tag that holds something other than an index is left as
/// it is.
async fn update_fallback(
    client: &Client,
    to: &Target<'_>,
    subject: &Digest,
    ours: &[Descriptor],
) -> Result<(), CopyError> {
    let tag = fallback_tag(subject);
    let shown = format!("{}:{tag}", to.reference.name());
    let existing = match client.manifest(to.reference, &tag).await {
        Ok(raw) => match raw.parse(&shown) {
            Ok(ManifestKind::Index(index)) => index.manifests().clone(),
            _ => {
                tracing::warn!(
                    "{shown} holds a {}, not a referrers index; left as it is",
                    raw.media_type
                );
                return Ok(());
            }
        },
        Err(RegistryError::Status { status: 404, .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut merged = existing.clone();
    for referrer in ours {
        if !merged.iter().any(|d| d.digest() == referrer.digest()) {
            merged.push(referrer.clone());
        }
    }
    if merged.len() == existing.len() {
        return Ok(());
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(merged)
        .build()
        .expect("an index of descriptors builds");
    let bytes = serde_json::to_vec(&index).expect("an index serialises");
    let manifest = RawManifest {
        digest: sha256_of(&bytes),
        media_type: MediaType::ImageIndex.to_string(),
        bytes,
    };
    to.pusher.push_manifest_as_tag(&manifest, &tag).await?;
    Ok(())
}
