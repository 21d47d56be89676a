//! Referrers: the stored manifests (signatures, SBOMs, attestations) that refer to a
//! subject manifest. Each subject with referrers has one file,
//! `stowage/referrers/<alg>-<hex>.json`, holding an OCI image index whose manifests are
//! the referrers' descriptors (with their `artifactType`): the very body the
//! distribution spec's referrers API answers, so `serve` sends it as it is (filtered).
//!
//! The image layout has no place for referrers of its own (image-spec 1.1 keeps them in
//! registries), so they live beside it, like the tag cache; layout readers (skopeo,
//! umoci) do not see them, and a store without the folder has no referrers. A record is
//! written only after the referrer's manifest and everything it reaches are stored, and
//! `gc` keeps a referrer (and its blobs) exactly while its subject is kept.

use std::fs;
use std::io;
use std::path::PathBuf;

use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageIndexBuilder, MediaType};

use crate::atomic::write_atomic;
use crate::digest::parse_digest;
use crate::error::{IoContext, StoreError};
use crate::Store;

/// The folder under `stowage/` that holds the records.
const DIR: &str = "referrers";

/// The largest record read: 4 MiB of descriptors is some 10 000 referrers.
const RECORD_LIMIT: u64 = 4 << 20;

impl Store {
    /// The referrers recorded for `subject`, in the order they were first recorded;
    /// empty when there are none.
    pub fn referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>, StoreError> {
        let path = self.referrers_path(subject);
        let bytes = match fs::File::open(&path) {
            Ok(file) => {
                let mut bytes = Vec::new();
                io::Read::read_to_end(&mut io::Read::take(file, RECORD_LIMIT), &mut bytes)
                    .at(&path)?;
                bytes
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).at(&path),
        };
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                path: path.clone(),
                what: "referrers record",
                source,
            })?;
        Ok(index.manifests().clone())
    }

    /// The referrers record of `subject` as the referrers API answers it: an image
    /// index of the referrers' descriptors, only those of `artifact_type` when given.
    pub fn referrers_index(
        &self,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<ImageIndex, StoreError> {
        let manifests = self
            .referrers(subject)?
            .into_iter()
            .filter(|d| {
                artifact_type.is_none_or(|wanted| {
                    d.artifact_type()
                        .as_ref()
                        .is_some_and(|t| t.to_string() == wanted)
                })
            })
            .collect();
        Ok(referrers_index(manifests))
    }

    /// Records `referrers` as referring to `subject`, beside those already recorded (a
    /// descriptor already recorded is replaced by the new one). Each referrer's
    /// manifest and everything it reaches must be stored: that is checked under the
    /// refs lock `gc` sweeps under, as for [`Store::set_ref`]. The subject itself need
    /// not be stored (a signature may be carried before its image).
    pub fn add_referrers(
        &self,
        subject: &Digest,
        referrers: &[Descriptor],
    ) -> Result<(), StoreError> {
        if referrers.is_empty() {
            return Ok(());
        }
        let _lock = self.refs_lock()?;
        for referrer in referrers {
            if !self.has(referrer.digest()) {
                return Err(StoreError::BlobNotFound(referrer.digest().clone()));
            }
            if let Some(first) = self.missing(referrer)?.into_iter().next() {
                return Err(StoreError::RefIncomplete {
                    name: format!("referrer {} of {subject}", referrer.digest()),
                    digest: first,
                });
            }
        }
        let mut current = self.referrers(subject)?;
        let before = current.clone();
        for referrer in referrers {
            match current.iter_mut().find(|d| d.digest() == referrer.digest()) {
                Some(slot) => *slot = referrer.clone(),
                None => current.push(referrer.clone()),
            }
        }
        if current == before {
            return Ok(());
        }
        self.sync_blob_dirs()?;
        let dir = self.layout().state_dir().join(DIR);
        fs::create_dir_all(&dir).at(&dir)?;
        let json =
            serde_json::to_vec_pretty(&referrers_index(current)).expect("an index serialises");
        write_atomic(&self.referrers_path(subject), &json)
    }

    /// Every subject that has a referrers record, with its referrers, sorted by
    /// subject digest.
    pub fn all_referrers(&self) -> Result<Vec<(Digest, Vec<Descriptor>)>, StoreError> {
        let mut all = Vec::new();
        for subject in self.referrer_subjects()? {
            let referrers = self.referrers(&subject)?;
            if !referrers.is_empty() {
                all.push((subject, referrers));
            }
        }
        Ok(all)
    }

    /// The subjects that have a record (a file name that is not a digest is ignored).
    pub(crate) fn referrer_subjects(&self) -> Result<Vec<Digest>, StoreError> {
        let dir = self.layout().state_dir().join(DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).at(&dir),
        };
        let mut subjects = Vec::new();
        for entry in entries {
            let entry = entry.at(&dir)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            let Some((algorithm, hex)) = stem.split_once('-') else {
                continue;
            };
            if let Ok(digest) = parse_digest(&format!("{algorithm}:{hex}")) {
                subjects.push(digest);
            }
        }
        subjects.sort_by_key(|a| a.to_string());
        Ok(subjects)
    }

    /// Removes the record of a subject (gc, when the subject is no longer kept).
    pub(crate) fn remove_referrers_record(&self, subject: &Digest) -> Result<(), StoreError> {
        let path = self.referrers_path(subject);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).at(&path),
        }
    }

    fn referrers_path(&self, subject: &Digest) -> PathBuf {
        self.layout().state_dir().join(DIR).join(format!(
            "{}-{}.json",
            subject.algorithm().as_ref(),
            subject.digest()
        ))
    }
}

/// An image index of `manifests`, as the referrers API answers.
fn referrers_index(manifests: Vec<Descriptor>) -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .expect("an index of descriptors builds")
}
