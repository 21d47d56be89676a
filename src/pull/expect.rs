//! What a pinned image must be: its manifest digest (or its index's), and each layer's
//! digest and size in order. Checked against a registry's manifest before anything is
//! fetched, and against a stored manifest by `verify --lock`. Layer pins are digests of
//! compressed blobs: they are compared with manifest layer digests, never diff_ids.

use oci_spec::image::ImageManifest;

use crate::store::Digest;

/// One pinned layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedLayer {
    pub digest: Digest,
    pub size: u64,
}

/// What an image must match; every part is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    /// The digest of the index or of the platform manifest (a docker RepoDigest or a
    /// lockfile pin: either is accepted).
    pub digest: Option<Digest>,
    /// The platform manifest's digest, exactly.
    pub manifest: Option<Digest>,
    /// Every layer, in order.
    pub layers: Option<Vec<ExpectedLayer>>,
}

/// How an image differs from what was expected. `found_in` says where the actual
/// value came from ("the registry", "the store").
#[derive(Debug, Clone, thiserror::Error)]
pub enum Mismatch {
    #[error("{image}: layer {index}: expected {expected}, {found_in} has {actual}")]
    Layer {
        image: String,
        index: usize,
        expected: String,
        actual: String,
        found_in: &'static str,
    },
    #[error("{image}: {found_in} has {actual} layers, expected {expected} (the first {actual_or_expected} match)", actual_or_expected = actual.min(expected))]
    LayerCount {
        image: String,
        expected: usize,
        actual: usize,
        found_in: &'static str,
    },
    #[error("{image}: {found_in}'s manifest is {actual}, expected {expected}")]
    Digest {
        image: String,
        expected: Digest,
        actual: String,
        found_in: &'static str,
    },
}

impl Expectations {
    /// Whether nothing is expected.
    pub fn is_empty(&self) -> bool {
        self.digest.is_none() && self.manifest.is_none() && self.layers.is_none()
    }

    /// Checks a platform manifest (and the index it came from, if any). Layers are
    /// compared first, since a differing layer says most about what changed.
    pub fn check(
        &self,
        image: &str,
        found_in: &'static str,
        index: Option<&Digest>,
        manifest_digest: &Digest,
        manifest: &ImageManifest,
    ) -> Result<(), Mismatch> {
        if let Some(expected) = &self.layers {
            let actual = manifest.layers();
            for (index, (want, have)) in expected.iter().zip(actual).enumerate() {
                if &want.digest != have.digest() || want.size != have.size() {
                    return Err(Mismatch::Layer {
                        image: image.to_string(),
                        index,
                        expected: format!("{} ({} bytes)", want.digest, want.size),
                        actual: format!("{} ({} bytes)", have.digest(), have.size()),
                        found_in,
                    });
                }
            }
            if expected.len() != actual.len() {
                return Err(Mismatch::LayerCount {
                    image: image.to_string(),
                    expected: expected.len(),
                    actual: actual.len(),
                    found_in,
                });
            }
        }
        if let Some(expected) = &self.manifest {
            if expected != manifest_digest {
                return Err(Mismatch::Digest {
                    image: image.to_string(),
                    expected: expected.clone(),
                    actual: manifest_digest.to_string(),
                    found_in,
                });
            }
        }
        if let Some(expected) = &self.digest {
            if expected != manifest_digest && Some(expected) != index {
                let actual = match index {
                    Some(index) => format!("{index} (platform manifest {manifest_digest})"),
                    None => manifest_digest.to_string(),
                };
                return Err(Mismatch::Digest {
                    image: image.to_string(),
                    expected: expected.clone(),
                    actual,
                    found_in,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sha256_of;

    fn manifest(layers: &[(&[u8], u64)]) -> ImageManifest {
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|(data, size)| {
                serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256_of(data).to_string(), "size": size})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256_of(b"{}").to_string(), "size": 2},
            "layers": layers,
        }))
        .unwrap()
    }

    fn layer(data: &[u8], size: u64) -> ExpectedLayer {
        ExpectedLayer {
            digest: sha256_of(data),
            size,
        }
    }

    #[test]
    fn layers_are_checked_in_order_then_the_digest_of_index_or_manifest() {
        let image = manifest(&[(b"a", 1), (b"b", 1)]);
        let (digest, index) = (sha256_of(b"manifest"), sha256_of(b"index"));
        let pinned = |digest: Option<Digest>, layers| Expectations {
            digest,
            manifest: None,
            layers: Some(layers),
        };
        let check =
            |e: &Expectations| e.check("app", "the registry", Some(&index), &digest, &image);
        assert!(Expectations::default().is_empty());
        assert!(check(&pinned(
            Some(digest.clone()),
            vec![layer(b"a", 1), layer(b"b", 1)]
        ))
        .is_ok());
        // The index's digest is as good as the platform manifest's (docker's RepoDigest).
        assert!(check(&pinned(
            Some(index.clone()),
            vec![layer(b"a", 1), layer(b"b", 1)]
        ))
        .is_ok());
        let err = check(&pinned(None, vec![layer(b"a", 1), layer(b"c", 1)])).unwrap_err();
        assert!(matches!(err, Mismatch::Layer { index: 1, .. }), "{err}");
        let err = check(&pinned(None, vec![layer(b"a", 1), layer(b"b", 2)])).unwrap_err();
        assert!(err.to_string().contains("2 bytes"), "{err}");
        let err = check(&pinned(None, vec![layer(b"a", 1)])).unwrap_err();
        assert!(
            matches!(
                err,
                Mismatch::LayerCount {
                    expected: 1,
                    actual: 2,
                    ..
                }
            ),
            "{err}"
        );
        let only_digest = Expectations {
            digest: Some(sha256_of(b"other")),
            ..Expectations::default()
        };
        let err = check(&only_digest).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&index.to_string()) && text.contains(&digest.to_string()),
            "{text}"
        );
    }
}
