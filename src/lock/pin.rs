//! What every lockfile becomes: an image pinned by manifest digest with every layer
//! pinned by digest and size ([`Pin`]), whichever file (`stowage.lock`, `bv.lock`) it
//! came from. Below both readers, so neither imports the other's types.

use serde::{Deserialize, Serialize};

use crate::pull::expect::{Expectations, ExpectedLayer};
use crate::store::{parse_digest, Descriptor, Digest, MediaType, StoreError};

/// Whether an image is ordinary or factored (one layer per conda package).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageKind {
    Oci,
    FactoredOci,
}

/// A pinned image, whichever lockfile it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// What the lockfile calls it (a reference, or a bv tool id and its reference).
    pub name: String,
    pub reference: String,
    /// The manifest digest the registry must serve (a platform manifest, or for bv an
    /// index whose platform child `manifest` then pins).
    pub digest: Digest,
    /// The platform manifest's digest when `digest` may be an index's (bv.lock).
    pub manifest: Option<Digest>,
    pub platform: Option<String>,
    pub kind: ImageKind,
    pub layers: Vec<LayerPin>,
    /// The referrers `lock --referrers` pinned (of the index or the image), fetched
    /// by digest on `sync`; empty for a lockfile without them.
    pub referrers: Vec<ReferrerPin>,
}

impl Pin {
    /// The store's name for the image (`alpine:3` is `docker.io/library/alpine:3`),
    /// or the reference as written when it does not parse.
    pub fn store_name(&self) -> String {
        self.reference
            .parse::<crate::oci::reference::Reference>()
            .map_or_else(|_| self.reference.clone(), |r| r.to_string())
    }

    /// What the registry's (or the store's) manifest must be for this pin.
    pub fn expectations(&self) -> Expectations {
        Expectations {
            digest: Some(self.digest.clone()),
            manifest: self.manifest.clone(),
            layers: Some(
                self.layers
                    .iter()
                    .map(|l| ExpectedLayer {
                        digest: l.digest.clone(),
                        size: l.size,
                    })
                    .collect(),
            ),
        }
    }
}

/// A pinned layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPin {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub package: Option<String>,
}

impl LayerPin {
    /// A pin from a lockfile's fields; the digest must parse.
    pub fn new(
        digest: &str,
        size: u64,
        media_type: &str,
        package: Option<String>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            digest: parse_digest(digest)?,
            size,
            media_type: media_type.to_string(),
            package,
        })
    }

    /// The descriptor to fetch this layer by (what `ensure_layers` takes).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            MediaType::from(self.media_type.as_str()),
            self.size,
            self.digest.clone(),
        )
    }
}

/// A pinned referrer: a manifest (signature, SBOM, attestation) referring to
/// `subject`, pinned by digest and size like a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerPin {
    /// The manifest it refers to: the image's, or the index's it was chosen from.
    pub subject: Digest,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub artifact_type: Option<String>,
    /// The cosign tag suffix (`sig`, `att`, `sbom`) it was found under, if any.
    pub cosign_tag: Option<String>,
}

impl ReferrerPin {
    /// The descriptor to fetch and record it by, as its referrers record holds it.
    pub fn descriptor(&self) -> Descriptor {
        let mut descriptor = Descriptor::new(
            MediaType::from(self.media_type.as_str()),
            self.size,
            self.digest.clone(),
        );
        descriptor.set_artifact_type(self.artifact_type.as_deref().map(Into::into));
        if let Some(tag) = &self.cosign_tag {
            descriptor.set_annotations(Some(
                [(
                    crate::oci::referrer::ANNOTATION_COSIGN_TAG.to_string(),
                    tag.clone(),
                )]
                .into_iter()
                .collect(),
            ));
        }
        descriptor
    }
}
