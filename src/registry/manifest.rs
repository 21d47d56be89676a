//! Fetching manifests and indexes: OCI and Docker schema2, capped in size, with the
//! digest computed over the exact bytes received.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};

use super::body::{read_limited, BodyError};
use super::{Client, RegistryError};
use crate::oci::reference::Reference;
use crate::store::media_type::{is_image_type, is_index_type, OCI_INDEX, OCI_MANIFEST};
pub use crate::store::MANIFEST_ACCEPT;
use crate::store::{parse_digest, Digest, Hasher, MANIFEST_LIMIT};

/// A manifest or index as the registry sent it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
}

/// A parsed manifest: an index of platform manifests, or one image.
#[derive(Debug, Clone)]
// Parsed once per manifest and consumed at once: boxing buys nothing here.
#[allow(clippy::large_enum_variant)]
pub enum ManifestKind {
    Index(ImageIndex),
    Image(ImageManifest),
}

impl FetchedManifest {
    /// A manifest read back from the store (its bytes were verified on the way in).
    pub fn from_stored(bytes: Vec<u8>, digest: Digest) -> Self {
        let media_type = sniff_media_type(&bytes);
        Self {
            bytes,
            digest,
            media_type,
        }
    }

    /// A descriptor that points at these exact bytes.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            MediaType::from(self.media_type.as_str()),
            self.bytes.len() as u64,
            self.digest.clone(),
        )
    }

    /// Parses the bytes by media type; schema 1 and unknown types are refused.
    pub fn parse(&self, reference: &str) -> Result<ManifestKind, RegistryError> {
        let bad = |detail: String| RegistryError::BadManifest {
            reference: reference.to_string(),
            detail,
        };
        let media_type = self.media_type.as_str();
        if is_index_type(media_type) {
            serde_json::from_slice(&self.bytes)
                .map(ManifestKind::Index)
                .map_err(|e| bad(format!("malformed index: {e}")))
        } else if is_image_type(media_type) {
            let manifest: ImageManifest = serde_json::from_slice(&self.bytes)
                .map_err(|e| bad(format!("malformed manifest: {e}")))?;
            check_sizes(&manifest).map_err(bad)?;
            Ok(ManifestKind::Image(manifest))
        } else if media_type.contains("manifest.v1") {
            Err(bad("Docker schema 1 manifests are not supported (re-push the image with a current tool)".into()))
        } else {
            Err(bad(format!("unsupported media type {media_type:?}")))
        }
    }
}

impl Client {
    /// GETs the manifest `target` (a tag or a digest) of `reference`'s repository. When
    /// `target` is a digest the bytes must hash to it.
    pub async fn manifest(
        &self,
        reference: &Reference,
        target: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let host = reference.api_host();
        let url = format!(
            "{}/v2/{}/manifests/{target}",
            self.base_url(host).await,
            reference.repository
        );
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let mut response = self.get(host, &reference.repository, &url, headers).await?;
        let header_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let pinned = parse_digest(target).ok();
        let mut hasher = match &pinned {
            Some(digest) => Hasher::new(digest)?,
            None => Hasher::sha256(),
        };
        let bytes = read_limited(&mut response, MANIFEST_LIMIT, self.low_speed)
            .await
            .map_err(|e| match e {
                BodyError::Http(source) => RegistryError::Http {
                    url: url.clone(),
                    source: source.without_url(),
                },
                other => RegistryError::BadManifest {
                    reference: reference.to_string(),
                    detail: other.describe("the manifest", MANIFEST_LIMIT, self.low_speed),
                },
            })?;
        hasher.update(&bytes);
        let digest = hasher.finish();
        if let Some(expected) = pinned {
            if expected != digest {
                return Err(RegistryError::DigestMismatch {
                    reference: reference.to_string(),
                    expected,
                    actual: digest,
                });
            }
        }
        let media_type = header_type
            .filter(|t| is_index_type(t) || is_image_type(t) || t.contains("manifest.v1"))
            .unwrap_or_else(|| sniff_media_type(&bytes));
        Ok(FetchedManifest {
            bytes,
            digest,
            media_type,
        })
    }
}

/// The OCI descriptor's `size` is an int64: a larger one is no size at all, and a
/// manifest whose blobs together pass it could never be stored. Refused here, before
/// anything plans, counts or allocates by them.
fn check_sizes(manifest: &ImageManifest) -> Result<(), String> {
    let mut total: u64 = 0;
    let blobs = std::iter::once(("config".to_string(), manifest.config())).chain(
        manifest
            .layers()
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("layer {i}"), l)),
    );
    for (what, descriptor) in blobs {
        let size = descriptor.size();
        total = total
            .checked_add(size)
            .filter(|t| *t <= i64::MAX as u64)
            .ok_or_else(|| {
                format!(
                    "{what} ({}) declares {size} bytes: past the largest size a descriptor may \
                     have ({}), alone or with the blobs before it",
                    descriptor.digest(),
                    i64::MAX
                )
            })?;
    }
    Ok(())
}

/// The media type a manifest names itself, or the one its shape implies.
fn sniff_media_type(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Shape {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
    }
    match serde_json::from_slice::<Shape>(bytes) {
        Ok(Shape {
            media_type: Some(t),
            ..
        }) => t,
        Ok(Shape {
            schema_version: Some(1),
            ..
        }) => "application/vnd.docker.distribution.manifest.v1+json".into(),
        Ok(Shape {
            manifests: Some(_), ..
        }) => OCI_INDEX.into(),
        _ => OCI_MANIFEST.into(),
    }
}
