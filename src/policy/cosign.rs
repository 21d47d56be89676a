//! Cosign signatures checked offline, from the store alone: a subject's referrers that
//! are signatures (artifact type [`ARTIFACT_COSIGN_SIGNATURE`], or a manifest with a
//! simple-signing layer carrying [`ANNOTATION_COSIGN_SIGNATURE`]), each layer's payload
//! read from the store (its digest checked as it is read), its ECDSA P-256 SHA-256
//! signature (base64 DER in the annotation) verified with the policy's keys, then the
//! payload: `critical.type`, `critical.image.docker-manifest-digest` (the subject's
//! digest) and `critical.identity.docker-reference` (against the `signedIdentity`).
//!
//! Why `p256` and not the `sigstore` crate: sigstore-rs is built around fetching
//! (signatures from registries through its own OCI client, the trust root over TUF,
//! Rekor and Fulcio online) on an async network stack of its own (its own reqwest,
//! oci-client and TUF client trees); checking bytes already in the store with a key
//! from the policy needs none of that, and cosign's key-based signature is one ECDSA
//! P-256 verification over the payload's bytes, which `p256` (RustCrypto) does.

use base64::Engine;
use oci_spec::image::{Descriptor, Digest, ImageManifest};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::Signature;
use serde_json::Value;

use crate::oci::reference::Reference;
use crate::oci::referrer::{
    CosignTag, ANNOTATION_COSIGN_SIGNATURE, ARTIFACT_COSIGN_SIGNATURE, SIMPLE_SIGNING_MEDIA_TYPE,
};
use crate::store::{Store, StoreError, MANIFEST_LIMIT};

use super::identity::{self, SignedIdentity};
use super::keys::PublicKey;

/// The `critical.type` of a cosign image signature.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// The largest payload read: simple-signing payloads are some hundred bytes.
const PAYLOAD_LIMIT: u64 = 1 << 20;

/// A signature that passed: which manifest and layer, for which subject, which key.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub subject: Digest,
    pub signature: Digest,
    pub key: String,
}

/// The outcome over every subject: the first signature that passed, or what was wrong
/// with each one tried (a line each; one line when there were none).
pub type Outcome = Result<Accepted, Vec<String>>;

/// Checks the stored signatures of each digest in `subjects` (the image's manifest,
/// and the index it was chosen from, if any) for `image`; any one that passes accepts.
pub fn verify(
    store: &Store,
    image: &Reference,
    subjects: &[Digest],
    keys: &[PublicKey],
    identity: &SignedIdentity,
) -> Result<Outcome, StoreError> {
    let mut problems = Vec::new();
    let mut tried = 0;
    for subject in subjects {
        for referrer in store.referrers(subject)? {
            let Some(layers) = signature_layers(store, &referrer, &mut problems)? else {
                continue;
            };
            for (n, layer) in layers.iter().enumerate() {
                tried += 1;
                let check = Check {
                    store,
                    image,
                    subject,
                    keys,
                    identity,
                };
                match check.layer(layer)? {
                    Ok(key) => {
                        return Ok(Ok(Accepted {
                            subject: subject.clone(),
                            signature: referrer.digest().clone(),
                            key,
                        }))
                    }
                    Err(problem) => problems.push(format!(
                        "signature {} (layer {}): {problem}",
                        referrer.digest(),
                        n + 1
                    )),
                }
            }
        }
    }
    if tried == 0 && problems.is_empty() {
        let names: Vec<String> = subjects.iter().map(ToString::to_string).collect();
        problems.push(format!(
            "no signature: the store holds no cosign signature of {} (pull with the policy \
             in force to fetch them, or import an archive that carries them)",
            names.join(" nor of ")
        ));
    }
    Ok(Err(problems))
}

/// Whether a referrer is a signature, by its descriptor alone.
fn typed_as_signature(referrer: &Descriptor) -> bool {
    referrer
        .artifact_type()
        .as_ref()
        .is_some_and(|t| t.to_string() == ARTIFACT_COSIGN_SIGNATURE)
        || CosignTag::of(referrer) == Some(CosignTag::Signature)
}

/// The simple-signing layers of a referrer that carry a signature; `None` when the
/// referrer is no signature at all (an SBOM). A referrer typed as a signature whose
/// manifest cannot be read or has no such layer is a problem, noted.
fn signature_layers(
    store: &Store,
    referrer: &Descriptor,
    problems: &mut Vec<String>,
) -> Result<Option<Vec<Descriptor>>, StoreError> {
    let typed = typed_as_signature(referrer);
    let bytes = match store.read_blob(referrer.digest(), MANIFEST_LIMIT) {
        Ok(bytes) => bytes,
        Err(StoreError::BlobNotFound(_)) if !typed => return Ok(None),
        Err(StoreError::BlobNotFound(_)) => {
            problems.push(format!(
                "signature {}: its manifest is not in the store",
                referrer.digest()
            ));
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let manifest: ImageManifest = match serde_json::from_slice(&bytes) {
        Ok(manifest) => manifest,
        Err(_) if !typed => return Ok(None),
        Err(e) => {
            problems.push(format!(
                "signature {}: its manifest is not an image manifest: {e}",
                referrer.digest()
            ));
            return Ok(None);
        }
    };
    let layers: Vec<Descriptor> = manifest
        .layers()
        .iter()
        .filter(|l| {
            l.media_type().to_string() == SIMPLE_SIGNING_MEDIA_TYPE && signature_of(l).is_some()
        })
        .cloned()
        .collect();
    if layers.is_empty() {
        if typed {
            problems.push(format!(
                "signature {}: no simple-signing layer with a {ANNOTATION_COSIGN_SIGNATURE} \
                 annotation",
                referrer.digest()
            ));
        }
        return Ok(None);
    }
    Ok(Some(layers))
}

fn signature_of(layer: &Descriptor) -> Option<&String> {
    layer
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_COSIGN_SIGNATURE))
}

struct Check<'a> {
    store: &'a Store,
    image: &'a Reference,
    subject: &'a Digest,
    keys: &'a [PublicKey],
    identity: &'a SignedIdentity,
}

impl Check<'_> {
    /// The key a signature layer verifies with, once its payload is checked too; else
    /// what is wrong with it.
    fn layer(&self, layer: &Descriptor) -> Result<Result<String, String>, StoreError> {
        let payload = match self.store.read_blob(layer.digest(), PAYLOAD_LIMIT) {
            Ok(payload) => payload,
            Err(StoreError::BlobNotFound(d)) => {
                return Ok(Err(format!("its payload {d} is not in the store")))
            }
            Err(StoreError::TooBig { limit, .. }) => {
                return Ok(Err(format!("its payload is larger than {limit} bytes")))
            }
            Err(e) => return Err(e),
        };
        let encoded = signature_of(layer).map(String::as_str).unwrap_or_default();
        let Ok(der) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return Ok(Err("bad signature: the annotation is not base64".into()));
        };
        let Ok(signature) = Signature::from_der(&der) else {
            return Ok(Err(
                "bad signature: not an ASN.1 DER ECDSA P-256 signature".into()
            ));
        };
        let Some(key) = self
            .keys
            .iter()
            .find(|k| k.key.verify(&payload, &signature).is_ok())
        else {
            let keys: Vec<&str> = self.keys.iter().map(|k| k.source.as_str()).collect();
            return Ok(Err(format!(
                "bad signature or wrong key: it does not verify over its payload with {} \
                 (made with another key, or the payload is not what was signed)",
                keys.join(" nor ")
            )));
        };
        Ok(self.payload(&payload).map(|()| key.source.clone()))
    }

    /// The payload of a verified signature: the right type, this subject's digest,
    /// and an identity the policy accepts.
    fn payload(&self, payload: &[u8]) -> Result<(), String> {
        let value: Value = serde_json::from_slice(payload)
            .map_err(|e| format!("the signed payload is not JSON: {e}"))?;
        let critical = &value["critical"];
        let kind = critical["type"].as_str().unwrap_or("(none)");
        if kind != SIGNATURE_TYPE {
            return Err(format!(
                "the signed payload's critical.type is {kind:?}, not {SIGNATURE_TYPE:?}"
            ));
        }
        let named = critical["image"]["docker-manifest-digest"]
            .as_str()
            .unwrap_or("(none)");
        if named != self.subject.to_string() {
            return Err(format!(
                "the signed payload names digest {named}, not {}",
                self.subject
            ));
        }
        let Some(reference) = critical["identity"]["docker-reference"].as_str() else {
            return Err("the signed payload has no critical.identity.docker-reference".into());
        };
        identity::accepts(self.identity, self.image, reference)
    }
}
