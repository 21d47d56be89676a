//! Verify: re-hash stored blobs in parallel, quarantine the corrupt ones, and report
//! what the refs need that the store lacks.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use oci_spec::image::Digest;
use rayon::prelude::*;

use crate::digest::hash_file;
use crate::error::{IoContext, StoreError};
use crate::graph::{self, MissingBlob};
use crate::index_file::ref_name;
use crate::Store;

/// A stored blob whose content no longer matches its name.
#[derive(Debug, Clone)]
pub struct CorruptBlob {
    pub digest: Digest,
    pub actual: Digest,
    pub size: u64,
    /// Where the blob was moved, out of `blobs/`.
    pub quarantined_to: PathBuf,
}

/// The outcome of [`Store::verify`].
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub checked: usize,
    pub bytes: u64,
    pub corrupt: Vec<CorruptBlob>,
    pub missing: Vec<MissingBlob>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty()
    }
}

impl Store {
    /// Re-hashes blobs in parallel: all of them, or only `only` (each must be present).
    /// Corrupt blobs are moved to the quarantine folder; then every ref is walked and
    /// any blob it needs that is gone is reported as missing.
    pub fn verify(&self, only: Option<&[Digest]>) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        type Target = Result<(Digest, PathBuf), StoreError>;
        let targets: Box<dyn Iterator<Item = Target> + Send> = match only {
            Some(digests) => {
                let mut present = Vec::new();
                for digest in digests {
                    if self.has(digest) {
                        present.push(Ok((digest.clone(), self.blob_path(digest))));
                    } else {
                        report.missing.push(MissingBlob {
                            digest: digest.clone(),
                            referenced_by: "the list to verify".into(),
                        });
                    }
                }
                Box::new(present.into_iter())
            }
            None => Box::new(self.blobs()?.map(|blob| blob.map(|(d, p, _)| (d, p)))),
        };
        // Only what is wrong is kept: a verify of 100 000 good blobs holds two counters.
        let checked = AtomicU64::new(0);
        let bytes = AtomicU64::new(0);
        let wrong: Vec<Result<(Digest, PathBuf, Digest, u64), StoreError>> = targets
            .par_bridge()
            .filter_map(|target| {
                let hashed = target.and_then(|(digest, path)| {
                    let (actual, size) = hash_file(&path, &digest)?;
                    checked.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(size, Ordering::Relaxed);
                    Ok((digest, path, actual, size))
                });
                match hashed {
                    Ok((digest, _, actual, _)) if actual == digest => None,
                    other => Some(other),
                }
            })
            .collect();
        report.checked = checked.into_inner() as usize;
        report.bytes = bytes.into_inner();
        for result in wrong {
            let (digest, path, actual, size) = result?;
            let quarantined_to = self.quarantine(&digest, &path)?;
            tracing::warn!(%digest, %actual, "corrupt blob quarantined");
            report.corrupt.push(CorruptBlob {
                digest,
                actual,
                size,
                quarantined_to,
            });
        }
        let index = self.read_index()?;
        let roots = index
            .index
            .manifests()
            .iter()
            .filter_map(|d| ref_name(d).map(|name| (name.to_string(), d.clone())));
        report.missing.extend(graph::missing(self, roots)?);
        Ok(report)
    }

    fn quarantine(&self, digest: &Digest, path: &PathBuf) -> Result<PathBuf, StoreError> {
        let dir = self.layout().quarantine();
        fs::create_dir_all(&dir).at(&dir)?;
        let target = dir.join(format!(
            "{}-{}",
            digest.algorithm().as_ref(),
            digest.digest()
        ));
        fs::rename(path, &target).at(&target)?;
        Ok(target)
    }
}
