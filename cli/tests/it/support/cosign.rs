//! Signatures and SBOMs made in the test as cosign writes them: a P-256 key pair, the
//! simple-signing payload, the signature manifest (one layer per signature, its
//! base64 DER signature in `dev.cosignproject.cosign/signature`), in cosign's tag
//! schema form (no subject; found under `sha256-<hex>.sig`) or OCI 1.1 form
//! (`artifactType` and `subject`); an SPDX SBOM artifact. Pushed to a registry with
//! curl, or put straight into a store with its referrers record.

use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{json, Value};
use stowage::{CosignTag, ANNOTATION_COSIGN_TAG, ARTIFACT_COSIGN_SIGNATURE};
use stowage_store::{Descriptor, Digest, Store};

use super::fixtures::sha256_digest;
use super::push::{push_blob, push_manifest};
use super::registry::Registry;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const SPDX: &str = "application/spdx+json";

/// A P-256 key pair, made from a seed so a test's key is the same every run.
pub struct CosignKey {
    signing: SigningKey,
}

impl CosignKey {
    pub fn from_seed(seed: &str) -> Self {
        let secret = sha256_digest(seed.as_bytes());
        let bytes = hex_bytes(secret.digest());
        Self {
            signing: SigningKey::from_slice(&bytes).expect("a sha256 is a valid P-256 scalar"),
        }
    }

    /// The public key as cosign writes `cosign.pub`: a PEM "PUBLIC KEY" (SPKI).
    pub fn public_pem(&self) -> String {
        self.signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("a public key encodes")
    }

    /// The base64 of the ASN.1 DER ECDSA-SHA256 signature of `payload`, as cosign
    /// puts it in the signature annotation.
    pub fn sign(&self, payload: &[u8]) -> String {
        let signature: DerSignature = self.signing.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(signature.as_bytes())
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The simple-signing payload cosign signs for `image_digest` pushed as
/// `docker_reference` (`host/repo`, or `host/repo:tag`).
pub fn simple_signing_payload(image_digest: &Digest, docker_reference: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": image_digest.to_string()},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .unwrap()
}

/// A manifest and the blobs it names (config first), ready to push or store.
#[derive(Clone)]
pub struct Artifact {
    pub manifest: Vec<u8>,
    pub digest: Digest,
    pub blobs: Vec<Vec<u8>>,
}

impl Artifact {
    fn new(manifest: Value, blobs: Vec<Vec<u8>>) -> Self {
        let manifest = serde_json::to_vec(&manifest).unwrap();
        Self {
            digest: sha256_digest(&manifest),
            manifest,
            blobs,
        }
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            oci_spec::image::MediaType::ImageManifest,
            self.manifest.len() as u64,
            self.digest.clone(),
        )
    }

    /// Pushes the blobs and then the manifest under `reference` (a tag, or the
    /// manifest's digest when `None`).
    pub fn push(&self, registry: &Registry, repo: &str, reference: Option<&str>) {
        for blob in &self.blobs {
            push_blob(registry, repo, blob);
        }
        let digest = self.digest.to_string();
        push_manifest(
            registry,
            repo,
            reference.unwrap_or(&digest),
            OCI_MANIFEST,
            &self.manifest,
        );
    }

    /// Stores the blobs and the manifest and records it as a referrer of `subject`
    /// (with the cosign tag it would have been found under, for the tag-schema form).
    pub fn put(&self, store: &Store, subject: &Digest, tag: Option<CosignTag>) {
        for blob in &self.blobs {
            store.put(blob).unwrap();
        }
        store.put(&self.manifest).unwrap();
        let manifest: oci_spec::image::ImageManifest =
            serde_json::from_slice(&self.manifest).unwrap();
        let mut descriptor = stowage::referrer_descriptor(
            &manifest,
            self.digest.clone(),
            self.manifest.len() as u64,
        );
        if let Some(tag) = tag {
            if manifest.artifact_type().is_none() {
                descriptor.set_artifact_type(Some(tag.artifact_type().into()));
            }
            let mut annotations = descriptor.annotations().clone().unwrap_or_default();
            annotations.insert(ANNOTATION_COSIGN_TAG.into(), tag.suffix().into());
            descriptor.set_annotations(Some(annotations));
        }
        store.add_referrers(subject, &[descriptor]).unwrap();
    }
}

fn blob_descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({"mediaType": media_type, "size": data.len(), "digest": sha256_digest(data).to_string()})
}

/// A cosign signature manifest over `payload` signed by `key`. With `subject`, the
/// OCI 1.1 form cosign writes for the referrers API (`artifactType`, an empty
/// config, `subject`); without, the tag-schema form (`sha256-<hex>.sig`), whose
/// config is the image config cosign writes for it.
pub fn signature(key: &CosignKey, payload: &[u8], subject: Option<&Descriptor>) -> Artifact {
    signed_with(payload, &key.sign(payload), subject)
}

/// A signature manifest whose annotation holds `signature` for `payload` as given
/// (to build tampered ones).
pub fn signed_with(payload: &[u8], signature: &str, subject: Option<&Descriptor>) -> Artifact {
    let mut layer = blob_descriptor(SIMPLE_SIGNING, payload);
    layer["annotations"] = json!({"dev.cosignproject.cosign/signature": signature});
    let (config_type, config) = match subject {
        Some(_) => (OCI_EMPTY, b"{}".to_vec()),
        None => (
            "application/vnd.oci.image.config.v1+json",
            serde_json::to_vec(&json!({
                "architecture": "", "os": "", "config": {},
                "created": "0001-01-01T00:00:00Z",
                "history": [{"created": "0001-01-01T00:00:00Z"}],
                "rootfs": {"type": "layers", "diff_ids": [sha256_digest(payload).to_string()]},
            }))
            .unwrap(),
        ),
    };
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": blob_descriptor(config_type, &config),
        "layers": [layer],
    });
    if let Some(subject) = subject {
        manifest["artifactType"] = json!(ARTIFACT_COSIGN_SIGNATURE);
        manifest["subject"] = subject_json(subject);
    }
    Artifact::new(manifest, vec![config, payload.to_vec()])
}

/// An SPDX SBOM of the image, as an OCI 1.1 artifact referring to `subject`.
pub fn sbom(subject: &Descriptor, name: &str) -> Artifact {
    let document = serde_json::to_vec(&json!({
        "spdxVersion": "SPDX-2.3",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "dataLicense": "CC0-1.0",
        "packages": [{"name": name, "SPDXID": "SPDXRef-Package", "downloadLocation": "NOASSERTION"}],
    }))
    .unwrap();
    let config = b"{}".to_vec();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SPDX,
        "config": blob_descriptor(OCI_EMPTY, &config),
        "layers": [blob_descriptor(SPDX, &document)],
        "subject": subject_json(subject),
        "annotations": {"org.opencontainers.image.created": "2026-12-03T00:00:00Z"},
    });
    Artifact::new(manifest, vec![config, document])
}

fn subject_json(subject: &Descriptor) -> Value {
    json!({
        "mediaType": subject.media_type().to_string(),
        "size": subject.size(),
        "digest": subject.digest().to_string(),
    })
}

/// A tag-schema signature, an OCI 1.1 signature and an SBOM of one image, in a store.
pub struct SignedReferrers {
    pub tag_signature: Artifact,
    pub oci_signature: Artifact,
    pub sbom: Artifact,
}

/// Signs the image `subject` with `key` for `docker_reference` both ways cosign does,
/// adds an SBOM of it, and puts all three in `store` with their referrers records.
pub fn put_signed_referrers(
    store: &Store,
    subject: &Descriptor,
    key: &CosignKey,
    docker_reference: &str,
) -> SignedReferrers {
    let digest = subject.digest();
    let payload = simple_signing_payload(digest, docker_reference);
    let tag_signature = signature(key, &payload, None);
    tag_signature.put(store, digest, Some(CosignTag::Signature));
    let oci_signature = signature(key, &payload, Some(subject));
    oci_signature.put(store, digest, None);
    let sbom = sbom(subject, "app");
    sbom.put(store, digest, None);
    SignedReferrers {
        tag_signature,
        oci_signature,
        sbom,
    }
}
