//! `verify --lock`: check the store against a lockfile with no network. Every pinned
//! blob must be present and re-hash to its digest (in parallel); each stored manifest
//! must list the pinned layers; each layer's decompressed content must hash to the
//! config's diff_id; each pinned referrer must be stored, recorded as its subject's,
//! and whole. One problem per line; what could not be checked is said, never skipped
//! silently.

use std::collections::BTreeMap;

use oci_spec::image::{ImageConfiguration, ImageManifest};
use rayon::prelude::*;
use serde::Serialize;

use crate::lock::pin::Pin;
use crate::oci::layers::{diff_id, LayerError};
use crate::store::{Descriptor, Digest, Store, StoreError, MANIFEST_LIMIT};

/// Something wrong (or uncheckable) about one image.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub image: String,
    pub detail: String,
}

/// The outcome of checking a store against pins.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LockReport {
    pub images: usize,
    pub blobs_checked: usize,
    pub bytes_checked: u64,
    pub problems: Vec<Problem>,
    /// Checks that could not be made (for example, a layer type stowage cannot
    /// decompress); reported, but not failures.
    pub unchecked: Vec<Problem>,
}

/// A layer whose diff_id is to be checked.
struct DiffCheck {
    image: String,
    index: usize,
    layer: Descriptor,
    expected: Option<Digest>,
}

/// Checks `store` against `pins`.
pub fn verify_lock(store: &Store, pins: &[Pin]) -> Result<LockReport, StoreError> {
    let mut report = LockReport {
        images: pins.len(),
        ..LockReport::default()
    };
    // Every blob to re-hash, with the images that need it.
    let mut needed: BTreeMap<String, (Digest, Vec<String>)> = BTreeMap::new();
    let mut need = |digest: &Digest, image: &str| {
        let entry = needed
            .entry(digest.to_string())
            .or_insert_with(|| (digest.clone(), Vec::new()));
        if !entry.1.iter().any(|i| i == image) {
            entry.1.push(image.to_string());
        }
    };
    let mut diff_checks = Vec::new();
    for pin in pins {
        let problem = |detail: String| Problem {
            image: pin.name.clone(),
            detail,
        };
        for referrer in &pin.referrers {
            let what = format!(
                "pinned referrer {} ({}) of {}",
                referrer.digest,
                referrer
                    .artifact_type
                    .as_deref()
                    .unwrap_or("no artifact type"),
                referrer.subject
            );
            if !store.has(&referrer.digest) {
                report
                    .problems
                    .push(problem(format!("{what} is missing from the store")));
                continue;
            }
            need(&referrer.digest, &pin.name);
            match read_json::<ImageManifest>(store, &referrer.digest) {
                Ok(manifest) => {
                    for blob in std::iter::once(manifest.config()).chain(manifest.layers()) {
                        need(blob.digest(), &pin.name);
                    }
                }
                Err(detail) => report.problems.push(problem(format!("{what}: {detail}"))),
            }
            let recorded = store.referrers(&referrer.subject)?;
            if !recorded.iter().any(|d| d.digest() == &referrer.digest) {
                report.problems.push(problem(format!(
                    "{what} is stored but not recorded as a referrer of its subject"
                )));
            }
        }
        let manifest_digest = crate::lock::sync::pinned_manifest(store, pin)?;
        need(&manifest_digest, &pin.name);
        for layer in &pin.layers {
            need(&layer.digest, &pin.name);
        }
        if !store.has(&manifest_digest) {
            continue; // reported as missing below
        }
        let manifest: ImageManifest = match read_json(store, &manifest_digest) {
            Ok(manifest) => manifest,
            Err(detail) => {
                report.problems.push(problem(detail));
                continue;
            }
        };
        if let Err(mismatch) = pin.expectations().check(
            &pin.name,
            "the store",
            Some(&pin.digest),
            &manifest_digest,
            &manifest,
        ) {
            report.problems.push(problem(mismatch.to_string()));
        }
        let config = manifest.config().digest();
        need(config, &pin.name);
        let diff_ids = match store.has(config) {
            true => match read_json::<ImageConfiguration>(store, config) {
                Ok(c) => c.rootfs().diff_ids().clone(),
                Err(detail) => {
                    report.problems.push(problem(detail));
                    continue;
                }
            },
            false => continue,
        };
        if diff_ids.len() != manifest.layers().len() {
            report.problems.push(problem(format!(
                "the config lists {} diff_ids for {} layers",
                diff_ids.len(),
                manifest.layers().len()
            )));
        }
        for (index, layer) in manifest.layers().iter().enumerate() {
            diff_checks.push(DiffCheck {
                image: pin.name.clone(),
                index,
                layer: layer.clone(),
                expected: diff_ids.get(index).and_then(|d| d.parse().ok()),
            });
        }
    }

    let digests: Vec<Digest> = needed.values().map(|(d, _)| d.clone()).collect();
    let hashed = store.verify(Some(&digests))?;
    report.blobs_checked = hashed.checked;
    report.bytes_checked = hashed.bytes;
    let images_of = |digest: &Digest| {
        needed
            .get(&digest.to_string())
            .map(|(_, images)| images.join(", "))
            .unwrap_or_default()
    };
    let mut bad: Vec<Digest> = Vec::new();
    for corrupt in &hashed.corrupt {
        bad.push(corrupt.digest.clone());
        report.problems.push(Problem {
            image: images_of(&corrupt.digest),
            detail: format!(
                "blob {} is corrupt: it hashes to {}; moved to {}",
                corrupt.digest,
                corrupt.actual,
                corrupt.quarantined_to.display()
            ),
        });
    }
    for missing in hashed
        .missing
        .iter()
        .filter(|m| needed.contains_key(&m.digest.to_string()))
    {
        bad.push(missing.digest.clone());
        report.problems.push(Problem {
            image: images_of(&missing.digest),
            detail: format!("blob {} is missing", missing.digest),
        });
    }

    // Compare like with like: diff_ids against decompressed content only.
    let outcomes: Vec<(usize, Result<Digest, LayerError>)> = diff_checks
        .par_iter()
        .enumerate()
        .filter(|(_, c)| !bad.contains(c.layer.digest()))
        .map(|(i, c)| (i, diff_id(store, &c.layer)))
        .collect();
    for (i, outcome) in outcomes {
        let check = &diff_checks[i];
        let problem = |detail: String| Problem {
            image: check.image.clone(),
            detail,
        };
        match (outcome, &check.expected) {
            (Ok(actual), Some(expected)) if &actual != expected => {
                report.problems.push(problem(format!(
                    "layer {} ({}): diff_id expected {expected}, the decompressed content hashes to {actual}",
                    check.index,
                    check.layer.digest()
                )))
            }
            (Ok(_), Some(_)) => {}
            (Ok(_), None) => report.unchecked.push(problem(format!(
                "layer {} ({}): the config has no diff_id for it",
                check.index,
                check.layer.digest()
            ))),
            (Err(LayerError::Unsupported { .. }), _) => report.unchecked.push(problem(format!(
                "layer {} ({}): diff_id not checked, media type {} cannot be decompressed",
                check.index,
                check.layer.digest(),
                check.layer.media_type()
            ))),
            (Err(e), _) => report.problems.push(problem(format!("layer {}: {e}", check.index))),
        }
    }
    Ok(report)
}

fn read_json<T: serde::de::DeserializeOwned>(store: &Store, digest: &Digest) -> Result<T, String> {
    let bytes = store
        .read_blob(digest, MANIFEST_LIMIT)
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("blob {digest} is not valid JSON of its kind: {e}"))
}
