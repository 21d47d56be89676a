//! The pull side of the policy, against the real registry (which has no referrers
//! API): `pull` and `sync` fetch an image's signatures (cosign's tag schema, or an OCI
//! 1.1 signature listed under the fallback tag) when its scope needs them, then check
//! them; a refused image leaves no ref behind.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use stowage::{fallback_tag, CosignTag, ARTIFACT_COSIGN_SIGNATURE};
use stowage_store::{Digest, Store};

use crate::support::cosign::{signature, simple_signing_payload, CosignKey, OCI_MANIFEST};
use crate::support::fixtures::{put_image, put_layer, sample_tree, Compression};
use crate::support::pulling::{stderr, stowage_in, Env};
use crate::support::push::push_manifest;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A registry holding `tools/tagged:1` (signed under cosign's tag), `tools/oci:1`
/// (signed in the OCI 1.1 form, listed under the fallback tag) and `tools/unsigned:1`,
/// and a policy requiring the site's key for `<registry>/tools`.
struct Registry {
    env: Env,
    policy: PathBuf,
    scope: String,
}

impl Registry {
    fn new() -> Self {
        let env = Env::new();
        let key = CosignKey::from_seed("the site's cosign key");
        let host = env.proxy.addr().to_string();
        let image = |label: &str| {
            let layer = put_layer(&env.fixtures, &sample_tree(label), Compression::Gzip);
            put_image(&env.fixtures, "amd64", vec![layer])
        };
        let tagged = image("tagged");
        env.push(&tagged.descriptor, "tools/tagged:1");
        let digest = tagged.descriptor.digest();
        let payload = simple_signing_payload(digest, &format!("{host}/tools/tagged:1"));
        signature(&key, &payload, None).push(
            &env.registry,
            "tools/tagged",
            Some(&CosignTag::Signature.tag(digest)),
        );

        let oci = image("oci");
        env.push(&oci.descriptor, "tools/oci:1");
        let digest = oci.descriptor.digest();
        let payload = simple_signing_payload(digest, &format!("{host}/tools/oci:1"));
        let signed = signature(&key, &payload, Some(&oci.descriptor));
        signed.push(&env.registry, "tools/oci", None);
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{
                "mediaType": OCI_MANIFEST,
                "size": signed.manifest.len(),
                "digest": signed.digest.to_string(),
                "artifactType": ARTIFACT_COSIGN_SIGNATURE,
            }],
        }))
        .unwrap();
        push_manifest(
            &env.registry,
            "tools/oci",
            &fallback_tag(digest),
            OCI_INDEX,
            &index,
        );

        env.push(&image("unsigned").descriptor, "tools/unsigned:1");

        let dir = env.dir.path();
        std::fs::write(dir.join("cosign.pub"), key.public_pem()).unwrap();
        let scope = format!("{host}/tools");
        let policy = dir.join("policy.json");
        let json = json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {&scope: [{"type": "sigstoreSigned", "keyPath": "cosign.pub"}]}},
        });
        std::fs::write(&policy, serde_json::to_vec(&json).unwrap()).unwrap();
        Self { env, policy, scope }
    }

    fn reference(&self, repo_tag: &str) -> String {
        self.env.via_proxy(repo_tag)
    }

    fn pull(&self, repo_tag: &str) -> std::process::Output {
        self.env.stowage(&[
            "pull",
            &self.reference(repo_tag),
            "--policy",
            self.policy.to_str().unwrap(),
        ])
    }

    fn refs(&self) -> Vec<String> {
        refs_of(&self.env.store())
    }
}

fn refs_of(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = Store::open(store)
        .unwrap()
        .refs()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    names.sort();
    names
}

fn signatures_of(store: &Path, subject: &Digest) -> usize {
    Store::open(store)
        .unwrap()
        .referrers(subject)
        .unwrap()
        .len()
}

#[test]
fn pull_fetches_the_signatures_the_scope_needs_and_accepts_both_forms() {
    let site = Registry::new();
    for repo_tag in ["tools/tagged:1", "tools/oci:1"] {
        let pulled = site.pull(repo_tag);
        assert!(pulled.status.success(), "{repo_tag}: {}", stderr(&pulled));
        let report: Value = serde_json::from_slice(&pulled.stdout).unwrap();
        let digest: Digest = report["manifest_digest"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            signatures_of(&site.env.store(), &digest),
            1,
            "{repo_tag}: the signature was stored"
        );
    }
    assert_eq!(
        site.refs(),
        [
            site.reference("tools/oci:1"),
            site.reference("tools/tagged:1")
        ]
    );
}

#[test]
fn pull_of_an_unsigned_image_is_refused_and_records_no_ref() {
    let site = Registry::new();
    let pulled = site.pull("tools/unsigned:1");
    let message = stderr(&pulled);
    assert!(!pulled.status.success(), "{message}");
    let name = site.reference("tools/unsigned:1");
    assert!(
        message.contains(&name)
            && message.contains(&format!("transports.docker.{:?}", site.scope))
            && message.contains("no signature"),
        "{message}"
    );
    assert!(site.refs().is_empty(), "{:?}", site.refs());
    // Without the policy (and none where podman looks) the same pull is taken.
    let plain = site.env.stowage(&["pull", &name]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert_eq!(site.refs(), [name]);
}

#[test]
fn sync_refuses_the_unsigned_image_of_a_lockfile_and_keeps_the_signed_one() {
    let site = Registry::new();
    let lockfile = site.env.dir.path().join("stowage.lock");
    let signed = site.reference("tools/tagged:1");
    let unsigned = site.reference("tools/unsigned:1");
    let scratch = site.env.dir.path().join("lock-store");
    let locked = stowage_in(
        &scratch,
        &["lock", "-o", lockfile.to_str().unwrap(), &signed, &unsigned],
    );
    assert!(locked.status.success(), "{}", stderr(&locked));

    let synced = site.env.stowage(&[
        "sync",
        lockfile.to_str().unwrap(),
        "--policy",
        site.policy.to_str().unwrap(),
    ]);
    assert!(!synced.status.success(), "{}", stderr(&synced));
    let report: Value = serde_json::from_slice(&synced.stdout).unwrap();
    let status = |name: &str| {
        report["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {report}"))
            .clone()
    };
    assert_eq!(status(&signed)["status"], "fetched", "{report}");
    let refused = status(&unsigned);
    assert_eq!(refused["status"], "failed", "{report}");
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains(&unsigned) && detail.contains("no signature"),
        "{detail}"
    );
    assert_eq!(site.refs(), [signed]);
}

/// cosign's usual case: the tag names a multi-platform index and the index is what is
/// signed. A pull of this machine's platform keeps the index (a few KiB) beside the
/// image, so later offline checks (`run`, `load`, `import` all ask the same
/// `Policy::check`) still find that the stored index lists the image, even after gc.
#[test]
fn a_signed_index_pulled_for_one_platform_still_vouches_for_it_later_offline() {
    let env = Env::new();
    let key = CosignKey::from_seed("the site's cosign key");
    let index = crate::support::fixtures::two_platform_index(&env.fixtures);
    env.push(&index.descriptor, "tools/multi:1");
    let host = env.proxy.addr().to_string();
    let payload =
        simple_signing_payload(index.descriptor.digest(), &format!("{host}/tools/multi:1"));
    signature(&key, &payload, None).push(
        &env.registry,
        "tools/multi",
        Some(&CosignTag::Signature.tag(index.descriptor.digest())),
    );
    let dir = env.dir.path();
    std::fs::write(dir.join("cosign.pub"), key.public_pem()).unwrap();
    let policy = dir.join("policy.json");
    let json = json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {format!("{host}/tools"): [{"type": "sigstoreSigned", "keyPath": "cosign.pub"}]}},
    });
    std::fs::write(&policy, serde_json::to_vec(&json).unwrap()).unwrap();
    let name = env.via_proxy("tools/multi:1");
    let pulled = env.stowage(&[
        "pull",
        "--platform",
        "linux/amd64",
        &name,
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    let report: Value = serde_json::from_slice(&pulled.stdout).unwrap();
    let manifest: Digest = report["manifest_digest"].as_str().unwrap().parse().unwrap();
    assert_ne!(
        &manifest,
        index.descriptor.digest(),
        "one platform was chosen"
    );

    let store = Store::open(env.store()).unwrap();
    assert!(
        store.has(index.descriptor.digest()),
        "the index was not kept"
    );
    store.gc(&[], false).unwrap();
    assert!(
        store.has(index.descriptor.digest()),
        "gc took the index the ref names"
    );
    let site = stowage::Policy::load(&policy).unwrap();
    let subjects = stowage::signed_subjects(&store, &manifest).unwrap();
    assert_eq!(
        subjects,
        [manifest.clone(), index.descriptor.digest().clone()]
    );
    site.check(&store, &name, &subjects)
        .unwrap_or_else(|e| panic!("the index's signature no longer stands for the image: {e}"));
    // And the platform alone, without the index's word for it, is refused.
    assert!(site.check(&store, &name, &[manifest]).is_err());
}
