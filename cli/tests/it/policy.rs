//! Signature policy (containers-policy.json), checked offline against the cosign
//! signatures in the store: images and signatures are made in the test (a P-256 key
//! pair, signature manifests as cosign writes them, in the tag-schema form and the
//! OCI 1.1 form with a subject) and stored; `load` and `run` are refused before any
//! runtime is called (podman's storage for the test is never even created), `import`
//! of an unsigned image leaves no ref behind, and a refusal names the image, the
//! scope and what was wrong with each signature.

mod pull;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use stowage::CosignTag;
use stowage_store::{Digest, Store};

use crate::runtime::tools::Podman;
use crate::support::cosign::{signature, signed_with, simple_signing_payload, Artifact, CosignKey};
use crate::support::fixtures::{sha256_digest, tagged_image, tagged_index};
use crate::support::pulling::BIN;

/// The image every test signs (or not), and the scope its policies name.
const NAME: &str = "registry.example/tools/signed:1.0";
const SCOPE: &str = "registry.example/tools";
const SCOPE_LABEL: &str = "transports.docker.\"registry.example/tools\"";

/// A store with one image in it, the site's key, and podman with a storage of its
/// own that only a load that got past the policy creates.
struct Site {
    dir: tempfile::TempDir,
    store: Store,
    key: CosignKey,
    podman: Podman,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        let key = CosignKey::from_seed("the site's cosign key");
        std::fs::write(dir.path().join("cosign.pub"), key.public_pem()).unwrap();
        let podman = Podman::new(dir.path());
        Self {
            dir,
            store,
            key,
            podman,
        }
    }

    fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Writes a policy beside `cosign.pub` whose `default` rejects and whose scope
    /// for `registry.example/tools` holds `requirements`.
    fn policy(&self, requirements: Value) -> PathBuf {
        self.write_policy(json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {SCOPE: requirements}},
        }))
    }

    fn write_policy(&self, policy: Value) -> PathBuf {
        let path = self.dir.path().join("policy.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
        path
    }

    /// `stowage ARGS` with an empty HOME (no policy of the user's) and podman's
    /// storage under the test's folder.
    fn stowage(&self, args: &[&str]) -> Output {
        let (key, value) = self.podman.env();
        Command::new(BIN)
            .arg("--store")
            .arg(self.store_dir())
            .args(args)
            .env("HOME", self.dir.path().join("home"))
            .env(key, value)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `stowage load NAME --into podman --policy POLICY`.
    fn load(&self, policy: &Path) -> Output {
        self.stowage(&[
            "load",
            NAME,
            "--into",
            "podman",
            "--policy",
            policy.to_str().unwrap(),
        ])
    }

    /// Whether podman was ever called for this test (its storage exists).
    fn podman_was_called(&self) -> bool {
        self.dir.path().join("podman-root").exists()
    }

    /// The signature of `digest` as `NAME`, made with the site's key.
    fn signature_of(
        &self,
        digest: &Digest,
        subject: Option<&stowage_store::Descriptor>,
    ) -> Artifact {
        signature(&self.key, &simple_signing_payload(digest, NAME), subject)
    }
}

fn sigstore_signed() -> Value {
    json!([{"type": "sigstoreSigned", "keyPath": "cosign.pub"}])
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_loaded(site: &Site, output: &Output) {
    assert!(
        output.status.success(),
        "load was refused: {}",
        stderr(output)
    );
    assert!(
        site.podman.id(NAME).is_some(),
        "podman does not hold {NAME}"
    );
}

/// The load failed with a message naming the image, the scope and `reason`, and
/// podman was never called.
fn assert_refused(site: &Site, output: &Output, scope: &str, reason: &str) -> String {
    let message = stderr(output);
    assert!(!output.status.success(), "load was accepted: {message}");
    assert!(
        message.contains(NAME) && message.contains(scope) && message.contains(reason),
        "the refusal does not name {NAME}, {scope} and {reason:?}: {message}"
    );
    assert!(
        message.contains("refused by the signature policy"),
        "{message}"
    );
    assert!(!site.podman_was_called(), "podman was called: {message}");
    message
}

#[test]
fn a_signature_under_the_cosign_tag_schema_is_accepted() {
    let site = Site::new();
    let image = tagged_image(&site.store, NAME, "amd64");
    let digest = image.descriptor.digest();
    site.signature_of(digest, None)
        .put(&site.store, digest, Some(CosignTag::Signature));
    let policy = site.policy(sigstore_signed());
    assert_loaded(&site, &site.load(&policy));
}

#[test]
fn an_oci_1_1_signature_with_a_subject_is_accepted_and_match_repository_takes_cosigns_identity() {
    let site = Site::new();
    let image = tagged_image(&site.store, NAME, "amd64");
    let digest = image.descriptor.digest();
    // cosign's own docker-reference: the repository alone, which the default identity
    // (matchRepoDigestOrExact) refuses for a tagged image and matchRepository takes.
    let payload = simple_signing_payload(digest, "registry.example/tools/signed");
    signature(&site.key, &payload, Some(&image.descriptor)).put(&site.store, digest, None);
    let strict = site.policy(sigstore_signed());
    let refused = site.load(&strict);
    assert_refused(&site, &refused, SCOPE_LABEL, "matchRepository");
    let by_repository = site.policy(json!([{
        "type": "sigstoreSigned",
        "keyPath": "cosign.pub",
        "signedIdentity": {"type": "matchRepository"},
    }]));
    assert_loaded(&site, &site.load(&by_repository));
}

#[test]
fn a_signature_of_the_index_stands_for_the_platform_image_chosen_from_it() {
    let site = Site::new();
    let index = tagged_index(&site.store, NAME);
    let digest = index.descriptor.digest();
    site.signature_of(digest, Some(&index.descriptor))
        .put(&site.store, digest, None);
    // The index's signature names the index: the platform manifest load hands over
    // has no signature of its own.
    assert!(site
        .store
        .referrers(index.images[0].descriptor.digest())
        .unwrap()
        .is_empty());
    let policy = site.policy(sigstore_signed());
    assert_loaded(&site, &site.load(&policy));
}

#[test]
fn a_platform_chosen_from_an_index_the_store_lacks_is_refused_saying_so() {
    let site = Site::new();
    let image = tagged_image(&site.store, NAME, "amd64");
    // As a pull of one platform records it: the index's digest on the ref, the index
    // itself not stored; its signature is recorded, but nothing shows it lists the image.
    let index = sha256_digest(b"the index the platform was chosen from");
    let mut descriptor = image.descriptor.clone();
    descriptor.set_annotations(Some(
        [(
            stowage_store::INDEX_ANNOTATION.to_string(),
            index.to_string(),
        )]
        .into(),
    ));
    site.store.set_ref(NAME, &descriptor).unwrap();
    site.signature_of(&index, None)
        .put(&site.store, &index, Some(CosignTag::Signature));
    let policy = site.policy(sigstore_signed());
    let message = assert_refused(&site, &site.load(&policy), SCOPE_LABEL, "no signature");
    assert!(
        message.contains(&format!("chosen from the index {index}"))
            && message.contains("--all-platforms"),
        "{message}"
    );
}

#[test]
fn anything_is_accepted_under_insecure_accept_anything() {
    let site = Site::new();
    tagged_image(&site.store, NAME, "amd64");
    let policy = site.policy(json!([{"type": "insecureAcceptAnything"}]));
    assert_loaded(&site, &site.load(&policy));
}

#[test]
fn a_tampered_payload_is_refused() {
    let site = Site::new();
    let image = tagged_image(&site.store, NAME, "amd64");
    let digest = image.descriptor.digest();
    let signed = simple_signing_payload(digest, NAME);
    // The signature is the key's, over other bytes: the payload stored is not what
    // was signed (one field changed).
    let stored = String::from_utf8(signed.clone())
        .unwrap()
        .replace(
            "cosign container image signature",
            "cosign container image signaturE",
        )
        .into_bytes();
    let tampered = signed_with(&stored, &site.key.sign(&signed), None);
    tampered.put(&site.store, digest, Some(CosignTag::Signature));
    let policy = site.policy(sigstore_signed());
    let message = assert_refused(&site, &site.load(&policy), SCOPE_LABEL, "bad signature");
    assert!(message.contains(&tampered.digest.to_string()), "{message}");
}

#[test]
fn a_validly_signed_payload_for_another_digest_is_refused() {
    let site = Site::new();
    let image = tagged_image(&site.store, NAME, "amd64");
    let digest = image.descriptor.digest();
    let other = sha256_digest(b"another image's manifest");
    site.signature_of(&other, None)
        .put(&site.store, digest, Some(CosignTag::Signature));
    let policy = site.policy(sigstore_signed());
    assert_refused(
        &site,
        &site.load(&policy),
        SCOPE_LABEL,
        &format!("the signed payload names digest {other}, not {digest}"),
    );
}

#[test]
fn a_signature_made_with_another_key_is_refused() {
    let site = Site::new();
    let image = tagged_image(&site.store, NAME, "amd64");
    let digest = image.descriptor.digest();
    let stranger = CosignKey::from_seed("someone else's key");
    signature(
        &stranger,
        &simple_signing_payload(digest, NAME),
        Some(&image.descriptor),
    )
    .put(&site.store, digest, None);
    let policy = site.policy(sigstore_signed());
    let message = assert_refused(&site, &site.load(&policy), SCOPE_LABEL, "wrong key");
    assert!(message.contains("cosign.pub"), "names the key: {message}");
}

#[test]
fn an_unsigned_image_is_refused_under_sigstore_signed_and_run_never_reaches_podman() {
    let site = Site::new();
    let image = tagged_image(&site.store, NAME, "amd64");
    let policy = site.policy(sigstore_signed());
    let message = assert_refused(&site, &site.load(&policy), SCOPE_LABEL, "no signature");
    assert!(
        message.contains(&image.descriptor.digest().to_string()),
        "{message}"
    );
    let ran = site.stowage(&[
        "run",
        NAME,
        "--into",
        "podman",
        "--policy",
        policy.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_refused(&site, &ran, SCOPE_LABEL, "no signature");
}

#[test]
fn reject_refuses_even_a_signed_image_and_the_default_scope_is_named() {
    let site = Site::new();
    let image = tagged_image(&site.store, NAME, "amd64");
    let digest = image.descriptor.digest();
    site.signature_of(digest, None)
        .put(&site.store, digest, Some(CosignTag::Signature));
    let policy = site.policy(json!([{"type": "reject"}]));
    assert_refused(
        &site,
        &site.load(&policy),
        SCOPE_LABEL,
        "rejects every image",
    );
    // No scope for this registry: the policy's default (reject) applies.
    let policy = site.write_policy(json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {"other.example": [{"type": "insecureAcceptAnything"}]}},
    }));
    assert_refused(
        &site,
        &site.load(&policy),
        "(scope default)",
        "rejects every image",
    );
}

#[test]
fn every_requirement_of_a_scope_must_be_met() {
    let site = Site::new();
    let image = tagged_image(&site.store, NAME, "amd64");
    let digest = image.descriptor.digest();
    site.signature_of(digest, None)
        .put(&site.store, digest, Some(CosignTag::Signature));
    let policy = site.policy(json!([
        {"type": "sigstoreSigned", "keyPath": "cosign.pub"},
        {"type": "reject"},
    ]));
    assert_refused(
        &site,
        &site.load(&policy),
        SCOPE_LABEL,
        "rejects every image",
    );
}

#[test]
fn the_users_policy_is_found_where_podman_looks_and_gpg_is_refused_when_read() {
    let site = Site::new();
    tagged_image(&site.store, NAME, "amd64");
    let user_policy = site.dir.path().join("home/.config/containers/policy.json");
    std::fs::create_dir_all(user_policy.parent().unwrap()).unwrap();
    std::fs::write(&user_policy, r#"{"default": [{"type": "reject"}]}"#).unwrap();
    let loaded = site.stowage(&["load", NAME, "--into", "podman"]);
    let message = assert_refused(&site, &loaded, "(scope default)", "rejects every image");
    assert!(
        message.contains(&user_policy.display().to_string()),
        "{message}"
    );

    let gpg = site.policy(json!([{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}]));
    let loaded = site.load(&gpg);
    let message = stderr(&loaded);
    assert!(!loaded.status.success(), "{message}");
    assert!(
        message.contains("signedBy")
            && message.contains("not supported")
            && message.contains(SCOPE_LABEL),
        "{message}"
    );
    assert!(!site.podman_was_called());
}

#[test]
fn import_of_an_unsigned_image_is_refused_and_its_ref_stays_as_it_was() {
    let source = Site::new();
    tagged_image(&source.store, NAME, "amd64");
    let other = "registry.example/tools/other:2";
    tagged_image(&source.store, other, "arm64");
    let archive = source.dir.path().join("images.tar");
    let exported = source.stowage(&["export", NAME, other, "-o", archive.to_str().unwrap()]);
    assert!(exported.status.success(), "{}", stderr(&exported));

    let site = Site::new();
    // The site holds another image under one of the names already: it must still
    // name that one after the refusal, and the other name must not be recorded.
    let before = tagged_index(&site.store, NAME);
    let policy = site.policy(sigstore_signed());
    let imported = site.stowage(&[
        "import",
        archive.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    let message = stderr(&imported);
    assert!(!imported.status.success(), "{message}");
    assert!(
        message.contains(NAME)
            && message.contains(other)
            && message.contains(SCOPE_LABEL)
            && message.contains("no signature"),
        "{message}"
    );
    let refs: Vec<(String, Digest)> = site
        .store
        .refs()
        .unwrap()
        .into_iter()
        .map(|r| (r.name, r.descriptor.digest().clone()))
        .collect();
    assert_eq!(
        refs,
        [(NAME.to_string(), before.descriptor.digest().clone())]
    );

    // Under insecureAcceptAnything the same archive is taken.
    let open = site.policy(json!([{"type": "insecureAcceptAnything"}]));
    let imported = site.stowage(&[
        "import",
        archive.to_str().unwrap(),
        "--policy",
        open.to_str().unwrap(),
    ]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert_eq!(site.store.refs().unwrap().len(), 2);
}

#[test]
fn a_signed_image_exported_with_its_signature_is_accepted_on_import_offline() {
    let source = Site::new();
    let image = tagged_image(&source.store, NAME, "amd64");
    let digest = image.descriptor.digest();
    source
        .signature_of(digest, Some(&image.descriptor))
        .put(&source.store, digest, None);
    let archive = source.dir.path().join("signed.tar");
    let exported = source.stowage(&["export", NAME, "-o", archive.to_str().unwrap()]);
    assert!(exported.status.success(), "{}", stderr(&exported));

    let site = Site::new();
    let policy = site.policy(sigstore_signed());
    let imported = site.stowage(&[
        "import",
        archive.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert_eq!(site.store.referrers(digest).unwrap().len(), 1);
    assert_loaded(&site, &site.load(&policy));
}
