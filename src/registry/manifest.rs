//! Fetching manifests and indexes: capped in size, with the digest computed over the
//! exact bytes received. Reading them is `oci::manifest`'s, below all I/O.

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};

use super::body::{read_limited, BodyError};
use super::{Client, RegistryError};
use crate::oci::manifest::RawManifest;
use crate::oci::reference::Reference;
pub use crate::store::MANIFEST_ACCEPT;
use crate::store::{parse_digest, Hasher, MANIFEST_LIMIT};

impl Client {
    /// GETs the manifest `target` (a tag or a digest) of `reference`'s repository. When
    /// `target` is a digest the bytes must hash to it.
    pub async fn manifest(
        &self,
        reference: &Reference,
        target: &str,
    ) -> Result<RawManifest, RegistryError> {
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
        Ok(RawManifest::received(bytes, digest, header_type.as_deref()))
    }
}
