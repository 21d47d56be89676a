//! Manifests and indexes as a registry (or the store) hands them over: parsed by the
//! media type they name or imply, and by each media type stowage accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage::{ManifestKind, RawManifest};
use stowage::MANIFEST_ACCEPT;
use stowage::store::parse_digest;

fuzz_target!(|data: &[u8]| {
    let digest = parse_digest(&format!("sha256:{}", "0".repeat(64))).expect("a digest");
    let sniffed = RawManifest::from_stored(data.to_vec(), digest.clone());
    let _ = sniffed.descriptor();
    let declared = MANIFEST_ACCEPT
        .split(", ")
        .map(|media_type| RawManifest {
            bytes: data.to_vec(),
            digest: digest.clone(),
            media_type: media_type.to_string(),
        });
    for manifest in std::iter::once(sniffed).chain(declared) {
        if let Ok(ManifestKind::Image(image)) = manifest.parse("fuzz") {
            // A parsed image's blobs fit one int64 together: everything after counts
            // and allocates by these sizes.
            let total = std::iter::once(image.config())
                .chain(image.layers())
                .try_fold(0u64, |total, d| total.checked_add(d.size()));
            assert!(total.is_some_and(|t| t <= i64::MAX as u64), "{total:?}");
        }
    }
});
