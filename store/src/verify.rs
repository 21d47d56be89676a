//! Verify: re-hash stored blobs in parallel, quarantine the corrupt ones, and report
//! what the refs need that the store lacks.

use std::fs;
use std::path::PathBuf;

use oci_spec::image::Digest;
use rayon::prelude::*;

use crate::digest::hash_file;
use crate::error::{IoContext, StoreError};
use crate::graph::{reach, MissingBlob};
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
        let targets: Vec<(Digest, PathBuf)> = match only {
            Some(digests) => {
                let mut present = Vec::new();
                for digest in digests {
                    if self.has(digest) {
                        present.push((digest.clone(), self.blob_path(digest)));
                    } else {
                        report.missing.push(MissingBlob {
                            digest: digest.clone(),
                            referenced_by: "the list to verify".into(),
                        });
                    }
                }
                present
            }
            None => self
                .stored_blobs()?
                .into_iter()
                .map(|(d, p, _)| (d, p))
                .collect(),
        };
        let hashed: Vec<Result<(Digest, PathBuf, Digest, u64), StoreError>> = targets
            .into_par_iter()
            .map(|(digest, path)| {
                let (actual, size) = hash_file(&path, &digest)?;
                Ok((digest, path, actual, size))
            })
            .collect();
        for result in hashed {
            let (digest, path, actual, size) = result?;
            report.checked += 1;
            report.bytes += size;
            if actual != digest {
                let quarantined_to = self.quarantine(&digest, &path)?;
                tracing::warn!(%digest, %actual, "corrupt blob quarantined");
                report.corrupt.push(CorruptBlob {
                    digest,
                    actual,
                    size,
                    quarantined_to,
                });
            }
        }
        let roots = self
            .refs()?
            .into_iter()
            .map(|r| (r.name, r.descriptor))
            .collect();
        report.missing.extend(reach(self, roots)?.missing);
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
