//! Manifests and indexes as bytes: OCI and Docker schema2, parsed by the media type
//! they carry or imply, with the blob sizes they declare checked before anyone counts
//! by them; and picking a platform's entry out of an index. No I/O: the registry
//! client hands these bytes over as it received them, the store as it keeps them.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

use crate::oci::platform::Platform;
use crate::store::media_type::{is_image_type, is_index_type, OCI_INDEX, OCI_MANIFEST};
use crate::store::Digest;

/// A manifest or index as bytes, with the digest of exactly those bytes and the media
/// type they are read by.
#[derive(Debug, Clone)]
pub struct RawManifest {
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

/// A manifest or index that stowage cannot use. (The registry client reports it as
/// `RegistryError::BadManifest`, with the same text.)
#[derive(Debug, Clone, thiserror::Error)]
#[error("manifest {reference}: {detail}")]
pub struct ManifestError {
    pub reference: String,
    pub detail: String,
}

impl RawManifest {
    /// A manifest read back from the store (its bytes were verified on the way in):
    /// its media type is the one it names, or the one its shape implies.
    pub fn from_stored(bytes: Vec<u8>, digest: Digest) -> Self {
        let media_type = sniff_media_type(&bytes);
        Self {
            bytes,
            digest,
            media_type,
        }
    }

    /// A manifest as a registry sent it: the media type of its `Content-Type` when
    /// that is a manifest type (schema 1 included, so that it is refused by name),
    /// else the one the bytes name or imply.
    pub fn received(bytes: Vec<u8>, digest: Digest, content_type: Option<&str>) -> Self {
        let media_type = content_type
            .filter(|t| is_index_type(t) || is_image_type(t) || t.contains("manifest.v1"))
            .map(str::to_string)
            .unwrap_or_else(|| sniff_media_type(&bytes));
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
    /// `reference` names the manifest in the error.
    pub fn parse(&self, reference: &str) -> Result<ManifestKind, ManifestError> {
        let bad = |detail: String| ManifestError {
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

/// The first entry of `index` for `platform`.
pub fn platform_entry<'i>(index: &'i ImageIndex, platform: &Platform) -> Option<&'i Descriptor> {
    index
        .manifests()
        .iter()
        .find(|d| d.platform().as_ref().is_some_and(|p| platform.matches(p)))
}

/// The platforms `index` lists (`os/arch[/variant]`), in its order; entries without
/// one are left out.
pub fn platforms(index: &ImageIndex) -> Vec<String> {
    index
        .manifests()
        .iter()
        .filter_map(|d| d.platform().as_ref().map(Platform::describe))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        format!("sha256:{}", "0".repeat(64)).parse().unwrap()
    }

    fn image(size: u64) -> Vec<u8> {
        let descriptor = |n: char, size: u64| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": format!("sha256:{}", n.to_string().repeat(64)),
                "size": size,
            })
        };
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": descriptor('c', 2),
            "layers": [descriptor('a', size), descriptor('b', size)],
        }))
        .unwrap()
    }

    #[test]
    fn the_media_type_is_named_or_implied() {
        let index = br#"{"schemaVersion": 2, "manifests": []}"#.to_vec();
        let stored = RawManifest::from_stored(index.clone(), digest());
        assert_eq!(stored.media_type, OCI_INDEX);
        assert!(matches!(stored.parse("x"), Ok(ManifestKind::Index(_))));
        let stored = RawManifest::from_stored(image(1), digest());
        assert_eq!(stored.media_type, OCI_MANIFEST);
        assert!(matches!(stored.parse("x"), Ok(ManifestKind::Image(_))));
        // A Content-Type that is no manifest type is not believed; one that is, is.
        let received = RawManifest::received(index.clone(), digest(), Some("text/plain"));
        assert_eq!(received.media_type, OCI_INDEX);
        let received = RawManifest::received(index, digest(), Some(OCI_MANIFEST));
        assert!(
            received.parse("x").is_err(),
            "read as the type it came with"
        );
    }

    #[test]
    fn schema_1_and_unknown_types_are_refused_by_name() {
        let v1 = br#"{"schemaVersion": 1, "name": "x", "fsLayers": []}"#.to_vec();
        let err = RawManifest::from_stored(v1, digest())
            .parse("x")
            .unwrap_err();
        assert!(
            err.to_string().starts_with("manifest x: Docker schema 1"),
            "{err}"
        );
        let other = RawManifest {
            bytes: image(1),
            digest: digest(),
            media_type: "application/json".into(),
        };
        let err = other.parse("x").unwrap_err();
        assert!(err.to_string().contains("unsupported media type"), "{err}");
    }

    #[test]
    fn declared_sizes_together_fit_an_int64() {
        let err = RawManifest::from_stored(image(i64::MAX as u64 / 2 + 1), digest())
            .parse("x")
            .unwrap_err();
        assert!(err.detail.starts_with("layer 1 "), "{err}");
    }

    #[test]
    fn an_index_entry_is_picked_by_platform() {
        let index: ImageIndex = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": digest().to_string(), "size": 1},
                {"mediaType": OCI_MANIFEST, "digest": digest().to_string(), "size": 2,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": OCI_MANIFEST, "digest": digest().to_string(), "size": 3,
                 "platform": {"os": "linux", "architecture": "amd64"}},
            ],
        }))
        .unwrap();
        assert_eq!(platforms(&index), ["linux/arm64/v8", "linux/amd64"]);
        let amd64: Platform = "linux/amd64".parse().unwrap();
        assert_eq!(platform_entry(&index, &amd64).map(|d| d.size()), Some(3));
        let s390x: Platform = "linux/s390x".parse().unwrap();
        assert!(platform_entry(&index, &s390x).is_none());
    }
}
