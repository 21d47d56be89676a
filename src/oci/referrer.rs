//! Referrers: manifests (signatures, SBOMs, attestations) that name another manifest,
//! their subject. The vocabulary every part shares: artifact types, the two tag
//! schemas registries without the referrers API use, and which referrers a caller
//! wants. No I/O.
//!
//! Two tag schemas exist, and stowage reads and writes both:
//! - the distribution spec's fallback (`<alg>-<hex>`): an image index of the
//!   subject's referrers' descriptors, what an OCI 1.1 client pushes to a registry
//!   without the API;
//! - cosign's (`<alg>-<hex>.sig`, `.att`, `.sbom`): the referrer manifest itself,
//!   which names no subject (the tag does). A referrer found under one of these tags
//!   is given the artifact type of [`CosignTag::artifact_type`] when its manifest
//!   names none, and the tag it was found under in [`ANNOTATION_COSIGN_TAG`], so it
//!   can be pushed back under the same tag.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, Digest, ImageManifest};

/// The annotation on a cosign signature layer holding the base64 signature of the
/// layer's payload.
pub const ANNOTATION_COSIGN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";

/// The media type of a cosign signature layer: a "simple signing" JSON payload.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// The artifact type cosign gives a signature manifest in OCI 1.1 mode.
pub const ARTIFACT_COSIGN_SIGNATURE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// The artifact type stowage gives a manifest found under a `.att` tag.
pub const ARTIFACT_COSIGN_ATTESTATION: &str = "application/vnd.dev.cosign.artifact.att.v1+json";
/// The artifact type stowage gives a manifest found under a `.sbom` tag.
pub const ARTIFACT_COSIGN_SBOM: &str = "application/vnd.dev.cosign.artifact.sbom.v1+json";

/// The descriptor annotation (in a referrers record or index) naming the cosign tag
/// suffix a referrer was found under: `sig`, `att` or `sbom`.
pub const ANNOTATION_COSIGN_TAG: &str = "dev.stowage.referrer.cosign-tag";

/// The annotation on an exported layout's `index.json` entry for a referrer whose
/// manifest names no `subject` (a cosign tag-schema signature): the subject's digest.
pub const ANNOTATION_REFERRER_SUBJECT: &str = "dev.stowage.referrer.subject";

/// One of cosign's tag suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CosignTag {
    Signature,
    Attestation,
    Sbom,
}

impl CosignTag {
    pub const ALL: [CosignTag; 3] = [
        CosignTag::Signature,
        CosignTag::Attestation,
        CosignTag::Sbom,
    ];

    /// The suffix after the dot: `sig`, `att`, `sbom`.
    pub fn suffix(self) -> &'static str {
        match self {
            CosignTag::Signature => "sig",
            CosignTag::Attestation => "att",
            CosignTag::Sbom => "sbom",
        }
    }

    /// The artifact type given to a manifest found under this tag that names none.
    pub fn artifact_type(self) -> &'static str {
        match self {
            CosignTag::Signature => ARTIFACT_COSIGN_SIGNATURE,
            CosignTag::Attestation => ARTIFACT_COSIGN_ATTESTATION,
            CosignTag::Sbom => ARTIFACT_COSIGN_SBOM,
        }
    }

    /// The tag of `subject`'s referrer of this kind: `sha256-<hex>.sig`.
    pub fn tag(self, subject: &Digest) -> String {
        format!("{}.{}", fallback_tag(subject), self.suffix())
    }

    /// The kind a suffix names.
    pub fn from_suffix(suffix: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.suffix() == suffix)
    }

    /// The kind recorded on a referrer's descriptor, if it came from a cosign tag.
    pub fn of(descriptor: &Descriptor) -> Option<Self> {
        descriptor
            .annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_COSIGN_TAG))
            .and_then(|s| Self::from_suffix(s))
    }
}

/// The distribution spec's fallback tag for `subject`'s referrers index:
/// `<alg>-<hex>`.
pub fn fallback_tag(subject: &Digest) -> String {
    format!("{}-{}", subject.algorithm().as_ref(), subject.digest())
}

/// A manifest's artifact type as the referrers API reports it: its `artifactType`,
/// else its config's media type.
pub fn artifact_type_of(manifest: &ImageManifest) -> String {
    match manifest.artifact_type() {
        Some(t) => t.to_string(),
        None => manifest.config().media_type().to_string(),
    }
}

/// The descriptor a referrers index lists for `manifest` (whose bytes have `digest`
/// and `size`): its media type, artifact type and annotations.
pub fn referrer_descriptor(manifest: &ImageManifest, digest: Digest, size: u64) -> Descriptor {
    let media_type = manifest
        .media_type()
        .clone()
        .unwrap_or(oci_spec::image::MediaType::ImageManifest);
    let mut descriptor = Descriptor::new(media_type, size, digest);
    descriptor.set_artifact_type(Some(artifact_type_of(manifest).as_str().into()));
    descriptor.set_annotations(manifest.annotations().clone());
    descriptor
}

/// Which referrers a caller wants carried: all of them, or those of some artifact
/// types. Parsed from `all` or a comma-separated list of artifact types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferrerFilter {
    All,
    Types(Vec<String>),
}

impl ReferrerFilter {
    /// Whether a referrer with this descriptor is wanted.
    pub fn wants(&self, descriptor: &Descriptor) -> bool {
        match self {
            ReferrerFilter::All => true,
            ReferrerFilter::Types(types) => descriptor
                .artifact_type()
                .as_ref()
                .is_some_and(|t| types.iter().any(|w| *w == t.to_string())),
        }
    }

    /// The one artifact type to ask the referrers API for, when there is exactly one.
    pub fn single_type(&self) -> Option<&str> {
        match self {
            ReferrerFilter::Types(types) if types.len() == 1 => Some(&types[0]),
            _ => None,
        }
    }
}

impl FromStr for ReferrerFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() || s == "all" {
            return Ok(ReferrerFilter::All);
        }
        let types: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        if let Some(bad) = types.iter().find(|t| !t.contains('/')) {
            return Err(format!(
                "{bad:?} is not an artifact type (a media type such as {ARTIFACT_COSIGN_SIGNATURE}, or `all`)"
            ));
        }
        Ok(ReferrerFilter::Types(types))
    }
}

impl fmt::Display for ReferrerFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReferrerFilter::All => f.write_str("all"),
            ReferrerFilter::Types(types) => f.write_str(&types.join(",")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        format!("sha256:{}", "ab".repeat(32)).parse().unwrap()
    }

    #[test]
    fn tags_follow_both_schemas() {
        assert_eq!(
            fallback_tag(&digest()),
            format!("sha256-{}", "ab".repeat(32))
        );
        assert_eq!(
            CosignTag::Signature.tag(&digest()),
            format!("sha256-{}.sig", "ab".repeat(32))
        );
        assert_eq!(CosignTag::from_suffix("sbom"), Some(CosignTag::Sbom));
        assert_eq!(CosignTag::from_suffix("pem"), None);
    }

    #[test]
    fn filters_parse_and_match() {
        assert_eq!(
            "all".parse::<ReferrerFilter>().unwrap(),
            ReferrerFilter::All
        );
        let f: ReferrerFilter = "application/spdx+json, application/x".parse().unwrap();
        let mut d = Descriptor::new(oci_spec::image::MediaType::ImageManifest, 1, digest());
        assert!(!f.wants(&d));
        d.set_artifact_type(Some("application/spdx+json".into()));
        assert!(f.wants(&d));
        assert!("sbom".parse::<ReferrerFilter>().is_err());
    }
}
