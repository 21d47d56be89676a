//! Referrers in an archive: the signatures, SBOMs and attestations the store records
//! for the exported images travel with them, and an import records them again.
//!
//! In the layout, each referrer manifest is an `index.json` entry without a ref name,
//! carrying the descriptor of the store's record (its `artifactType`, its annotations,
//! the cosign tag it was found under). A manifest that names its subject in a
//! `subject` field needs nothing more; one that does not (cosign's tag-schema
//! signatures) gets the subject's digest in [`ANNOTATION_REFERRER_SUBJECT`]. Layout
//! readers that know nothing of referrers (skopeo, podman) see unnamed entries and
//! skip them; an unnamed entry whose manifest has a `subject` (as `oras cp -r` writes
//! them) is recorded as a referrer of that subject too.

use std::collections::HashSet;

use oci_spec::image::ImageManifest;
use serde_json::Value;

use crate::oci::referrer::{referrer_descriptor, ANNOTATION_REFERRER_SUBJECT};
use crate::store::{
    is_graph_type, parse_digest, Descriptor, Digest, Store, MANIFEST_LIMIT, REF_NAME_ANNOTATION,
};

use super::closure::{needed, Needed};
use super::ArchiveError;

/// A referrer an export carries, listed in `index.json` without a name.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedReferrer {
    /// The manifest it refers to.
    pub subject: Digest,
    /// Its `index.json` entry: the store's record, with the subject annotation when
    /// the manifest names no subject of its own.
    pub descriptor: Descriptor,
}

/// The referrers the store records for the manifests of `images` (and, in turn, for
/// the referrers themselves: a signature of an SBOM), with their blobs added to
/// `images`. A record whose referrer lacks blobs is refused: gc and the record's
/// writer keep them, so the store is damaged.
pub(super) fn carried(
    store: &Store,
    images: &mut Needed,
) -> Result<Vec<ExportedReferrer>, ArchiveError> {
    let mut subjects = graph_digests(images.blobs.values());
    let mut visited: HashSet<Digest> = subjects.iter().cloned().collect();
    let mut carried = Vec::new();
    let mut next = 0;
    while next < subjects.len() {
        let subject = subjects[next].clone();
        next += 1;
        for referrer in store.referrers(&subject)? {
            carried.push(ExportedReferrer {
                descriptor: entry_descriptor(store, &subject, &referrer)?,
                subject: subject.clone(),
            });
            if visited.contains(referrer.digest()) {
                continue;
            }
            let name = format!("referrer {} of {subject}", referrer.digest());
            let reach = needed(store, &[(name, referrer)])?;
            if !reach.missing.is_empty() {
                return Err(ArchiveError::Incomplete {
                    missing: reach.missing,
                    hint:
                        "the store's referrers record names content it lacks; run `stowage verify`"
                            .to_string(),
                });
            }
            for digest in graph_digests(reach.blobs.values()) {
                if visited.insert(digest.clone()) {
                    subjects.push(digest);
                }
            }
            for (key, descriptor) in reach.blobs {
                images.blobs.entry(key).or_insert(descriptor);
            }
        }
    }
    Ok(carried)
}

/// The digests of the manifests and indexes among `blobs`.
fn graph_digests<'a>(blobs: impl Iterator<Item = &'a Descriptor>) -> Vec<Digest> {
    blobs
        .filter(|d| is_graph_type(d.media_type().as_ref()))
        .map(|d| d.digest().clone())
        .collect()
}

/// The `index.json` entry of `referrer` (recorded for `subject`): the record's
/// descriptor, never named, and naming its subject when the manifest does not.
fn entry_descriptor(
    store: &Store,
    subject: &Digest,
    referrer: &Descriptor,
) -> Result<Descriptor, ArchiveError> {
    let bytes = store.read_blob(referrer.digest(), MANIFEST_LIMIT)?;
    let own_subject = subject_field(&bytes);
    let mut annotations = referrer.annotations().clone().unwrap_or_default();
    annotations.remove(REF_NAME_ANNOTATION);
    if own_subject.as_deref() != Some(subject.to_string().as_str()) {
        annotations.insert(ANNOTATION_REFERRER_SUBJECT.to_string(), subject.to_string());
    }
    let mut descriptor = referrer.clone();
    descriptor.set_annotations((!annotations.is_empty()).then_some(annotations));
    Ok(descriptor)
}

/// The digest a manifest's (or index's) `subject` field names, as written.
fn subject_field(document: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(document).ok()?;
    value["subject"]["digest"].as_str().map(str::to_string)
}

/// A referrer an import records.
#[derive(Debug, Clone)]
pub(super) struct ImportedReferrer {
    pub subject: Digest,
    pub descriptor: Descriptor,
}

/// What the unnamed `index.json` entry `entry` (number `position`) is a referrer of,
/// if it is one: its subject annotation, else its stored manifest's `subject` field.
/// The descriptor recorded is the entry's without the subject annotation; an entry
/// without an `artifactType` (not written by stowage) is described from its manifest.
/// A subject that is not a digest refuses the archive.
pub(super) fn imported(
    store: &Store,
    source_name: &str,
    position: usize,
    entry: &Descriptor,
) -> Result<Option<ImportedReferrer>, ArchiveError> {
    let malformed = |detail: String| ArchiveError::Malformed {
        source_name: source_name.to_string(),
        what: "a referrer entry of index.json",
        detail: format!("entry {position} ({}): {detail}", entry.digest()),
    };
    let mut annotations = entry.annotations().clone().unwrap_or_default();
    let annotated = annotations.remove(ANNOTATION_REFERRER_SUBJECT);
    if annotated.is_none() && !is_graph_type(entry.media_type().as_ref()) {
        return Ok(None);
    }
    let bytes = store.read_blob(entry.digest(), MANIFEST_LIMIT)?;
    let (subject, from) = match annotated {
        Some(subject) => (subject, ANNOTATION_REFERRER_SUBJECT),
        None => match subject_field(&bytes) {
            Some(subject) => (subject, "its manifest's subject field"),
            None => return Ok(None),
        },
    };
    let subject = parse_digest(&subject)
        .map_err(|e| malformed(format!("{from} is {subject:?}, not a digest: {e}")))?;
    let mut descriptor = entry.clone();
    if entry.artifact_type().is_none() {
        if let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&bytes) {
            descriptor = referrer_descriptor(&manifest, entry.digest().clone(), entry.size());
            let mut own = descriptor.annotations().clone().unwrap_or_default();
            own.extend(annotations.clone());
            annotations = own;
        }
    }
    descriptor.set_annotations((!annotations.is_empty()).then_some(annotations));
    Ok(Some(ImportedReferrer {
        subject,
        descriptor,
    }))
}

/// Records `referrers` in the store, one update per subject, in archive order.
pub(super) fn record(store: &Store, referrers: &[ImportedReferrer]) -> Result<(), ArchiveError> {
    let mut subjects: Vec<&Digest> = Vec::new();
    for referrer in referrers {
        if !subjects.contains(&&referrer.subject) {
            subjects.push(&referrer.subject);
        }
    }
    for subject in subjects {
        let of_subject: Vec<Descriptor> = referrers
            .iter()
            .filter(|r| &r.subject == subject)
            .map(|r| r.descriptor.clone())
            .collect();
        store.add_referrers(subject, &of_subject)?;
    }
    Ok(())
}
