//! The sidecar of an ingest in flight (`ingest/<alg>-<hex>.json`): what is expected,
//! the ranges synced to disk, and the ranges written during this boot. Read when an
//! ingest resumes; an impossible or malformed record is ignored (the partial is then
//! resumed from what can be trusted, or fetched again), never believed.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::RangeSet;
use oci_spec::image::Digest;

use crate::atomic::write_replace;
use crate::error::{IoContext, StoreError};

/// The on-disk record of an ingest in flight.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Sidecar {
    pub digest: String,
    pub size: u64,
    /// Set (and synced) before the first write that leaves a hole; from then on only
    /// `ranges` is trusted, not the file's length.
    pub positional: bool,
    /// Ranges synced to disk: trusted after any crash.
    pub ranges: RangeSet,
    /// Ranges written (maybe not synced) during the boot `boot_id` names: trusted only
    /// while the machine has not restarted since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<RangeSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

/// This boot of the machine (Linux's random boot id), if the kernel says.
pub(super) fn boot_id() -> Option<&'static str> {
    static BOOT_ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|id| id.trim().to_string())
                .filter(|id| !id.is_empty())
        })
        .as_deref()
}

/// Records an ingest's ranges: those `durable` (synced), and, when more was written,
/// those `written` under this boot's id.
pub(super) fn write(
    path: &Path,
    digest: &Digest,
    size: u64,
    positional: bool,
    durable: &RangeSet,
    written: &RangeSet,
) -> Result<(), StoreError> {
    let boot_id = boot_id().filter(|_| written != durable);
    let sidecar = Sidecar {
        digest: digest.to_string(),
        size,
        positional,
        ranges: durable.clone(),
        written: boot_id.map(|_| written.clone()),
        boot_id: boot_id.map(str::to_string),
    };
    let json = serde_json::to_vec(&sidecar).expect("a sidecar serialises");
    write_replace(path, &json)
}

pub(super) fn read_sidecar(path: &Path) -> Result<Option<Sidecar>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<Sidecar>(&bytes) {
            Ok(sidecar)
                if sidecar.ranges.is_valid(sidecar.size)
                    && sidecar
                        .written
                        .as_ref()
                        .is_none_or(|w| w.is_valid(sidecar.size)) =>
            {
                Ok(Some(sidecar))
            }
            Ok(_) => {
                tracing::warn!(path = %path.display(), "ignoring an ingest record with impossible ranges");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring a malformed ingest record: {e}");
                Ok(None)
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at(path),
    }
}
