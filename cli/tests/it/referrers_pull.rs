//! Referrers over the registry: `pull --referrers` finds an image's signature under
//! cosign's tag schema and its SBOM under the distribution spec's fallback tag (the
//! tests' registry has no referrers API, as ghcr has none), fetches them verified and
//! records them; a filter keeps only the types named; `lock --referrers` pins them and
//! `sync` fetches them by digest into an empty store, checks them against their pins,
//! and works offline with the registry gone once the store holds them. A tag naming
//! an index carries the index's referrers and the chosen image's; against `stowage
//! serve`, which has the referrers API, discovery goes through the API.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use stowage::{fallback_tag, CosignTag, ANNOTATION_COSIGN_TAG, ARTIFACT_COSIGN_SIGNATURE};
use stowage_faultproxy::{Faults, Proxy};
use stowage_store::{Digest, Store};

use crate::support::cosign::{
    put_signed_referrers, sbom, signature, simple_signing_payload, Artifact, CosignKey,
    SignedReferrers,
};
use crate::support::fixtures::{
    put_image, put_layer, sample_tree, sha256_digest, tagged_image, two_platform_index, Compression,
};
use crate::support::pulling::*;
use crate::support::push::push_manifest;
use crate::support::serving::Served;

const REPO: &str = "signed/app";
const SPDX: &str = "application/spdx+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An image pushed as `signed/app:1` with a cosign tag-schema signature and an SBOM
/// pushed by digest and listed in the fallback tag's index, as an OCI 1.1 client
/// leaves them on a registry without the referrers API.
struct Signed {
    env: Env,
    digest: Digest,
    signature: Artifact,
    sbom: Artifact,
}

impl Signed {
    fn new() -> Self {
        let env = Env::new();
        let layer = put_layer(&env.fixtures, &sample_tree("signed"), Compression::Gzip);
        let image = put_image(&env.fixtures, "amd64", vec![layer]);
        env.push(&image.descriptor, &format!("{REPO}:1"));
        let digest = image.descriptor.digest().clone();

        let key = CosignKey::from_seed("referrers-pull");
        let payload = simple_signing_payload(&digest, &format!("{}/{REPO}", env.proxy.addr()));
        let signature = signature(&key, &payload, None);
        signature.push(
            &env.registry,
            REPO,
            Some(&CosignTag::Signature.tag(&digest)),
        );
        let sbom = sbom(&image.descriptor, "app");
        sbom.push(&env.registry, REPO, None);
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "size": sbom.manifest.len(),
                "digest": sbom.digest.to_string(),
                "artifactType": SPDX,
            }],
        }))
        .unwrap();
        push_manifest(
            &env.registry,
            REPO,
            &fallback_tag(&digest),
            OCI_INDEX,
            &index,
        );
        Self {
            env,
            digest,
            signature,
            sbom,
        }
    }

    fn reference(&self) -> String {
        self.env.via_proxy(&format!("{REPO}:1"))
    }

    fn store_at(&self, name: &str) -> PathBuf {
        self.env.dir.path().join(name)
    }
}

fn ok(output: std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(&output)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The digests recorded as referrers of `subject` in the store at `path`.
fn recorded(path: &Path, subject: &Digest) -> Vec<String> {
    let mut digests: Vec<String> = Store::open(path)
        .unwrap()
        .referrers(subject)
        .unwrap()
        .iter()
        .map(|d| d.digest().to_string())
        .collect();
    digests.sort();
    digests
}

fn sorted(mut digests: Vec<String>) -> Vec<String> {
    digests.sort();
    digests
}

/// Every blob of `artifact`, and its manifest, is in the store at `path`.
fn assert_whole(path: &Path, artifact: &Artifact) {
    assert!(blob_present(path, &artifact.digest), "{}", artifact.digest);
    for blob in &artifact.blobs {
        let digest = sha256_digest(blob);
        assert!(
            blob_present(path, &digest),
            "blob {digest} of {}",
            artifact.digest
        );
    }
}

#[test]
fn pull_referrers_stores_what_the_tag_schemas_hold_and_a_filter_keeps_only_its_types() {
    let signed = Signed::new();
    let reference = signed.reference();

    let all = signed.store_at("all");
    let report = ok(stowage_in(&all, &["pull", "--referrers", &reference]));
    let reported: Vec<String> = report["referrers"]
        .as_array()
        .unwrap_or_else(|| panic!("no referrers array: {report}"))
        .iter()
        .map(|r| {
            assert_eq!(r["subject"], signed.digest.to_string(), "{report}");
            r["digest"].as_str().unwrap().to_string()
        })
        .collect();
    let both = sorted(vec![
        signed.signature.digest.to_string(),
        signed.sbom.digest.to_string(),
    ]);
    assert_eq!(sorted(reported), both, "{report}");
    assert_eq!(recorded(&all, &signed.digest), both);
    assert_whole(&all, &signed.signature);
    assert_whole(&all, &signed.sbom);
    // The signature keeps the tag it was found under and the type that tag implies.
    let records = Store::open(&all)
        .unwrap()
        .referrers(&signed.digest)
        .unwrap();
    let sig = records
        .iter()
        .find(|d| d.digest() == &signed.signature.digest)
        .unwrap();
    assert_eq!(
        sig.artifact_type()
            .as_ref()
            .map(|t| t.to_string())
            .as_deref(),
        Some(ARTIFACT_COSIGN_SIGNATURE)
    );
    assert_eq!(
        sig.annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_COSIGN_TAG))
            .map(String::as_str),
        Some("sig")
    );
    // The SBOM as its verified manifest describes it (what serve's referrers API will
    // list), not as the fallback index listed it (no annotations there).
    let sbom = records
        .iter()
        .find(|d| d.digest() == &signed.sbom.digest)
        .unwrap();
    assert_eq!(
        sbom.annotations()
            .as_ref()
            .and_then(|a| a.get("org.opencontainers.image.created"))
            .map(String::as_str),
        Some("2026-12-03T00:00:00Z"),
        "{sbom:?}"
    );
    // verify finds every referrer blob sound.
    ok(stowage_in(&all, &["verify"]));

    let only_sbom = signed.store_at("sbom");
    let report = ok(stowage_in(
        &only_sbom,
        &["pull", &format!("--referrers={SPDX}"), &reference],
    ));
    assert_eq!(
        report["referrers"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(
        recorded(&only_sbom, &signed.digest),
        vec![signed.sbom.digest.to_string()]
    );
    assert_whole(&only_sbom, &signed.sbom);
    assert!(!blob_present(&only_sbom, &signed.signature.digest));

    let none = signed.store_at("none");
    let report = ok(stowage_in(&none, &["pull", &reference]));
    assert!(report.get("referrers").is_none(), "{report}");
    assert!(recorded(&none, &signed.digest).is_empty());
    assert!(!blob_present(&none, &signed.sbom.digest));
    assert!(!blob_present(&none, &signed.signature.digest));

    // A human line says what was carried.
    let plain = std::process::Command::new(BIN)
        .arg("--store")
        .arg(&all)
        .args(["pull", "--referrers", &reference])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(
        text.contains("referrers: 2 stored"),
        "{text}{}",
        stderr(&plain)
    );
}

#[test]
fn lock_referrers_then_sync_fetches_them_by_digest_and_offline_sync_needs_no_registry() {
    let mut signed = Signed::new();
    let reference = signed.reference();
    let lockfile = signed.env.dir.path().join("stowage.lock");
    let file = lockfile.to_str().unwrap();
    let locked = ok(signed
        .env
        .stowage(&["lock", "--referrers", "-o", file, &reference]));
    assert_eq!(
        locked["referrers"].as_array().map(Vec::len),
        Some(2),
        "{locked}"
    );
    let text = std::fs::read_to_string(&lockfile).unwrap();
    assert!(text.starts_with("version = 1"), "{text}");
    assert!(text.contains("[[image.referrer]]"), "{text}");
    assert!(text.contains(&signed.sbom.digest.to_string()), "{text}");
    assert!(
        text.contains(&signed.signature.digest.to_string()),
        "{text}"
    );
    assert!(text.contains("cosign_tag = \"sig\""), "{text}");
    // Locking without the flag writes no referrer table.
    let plain_lock = signed.env.dir.path().join("plain.lock");
    ok(signed
        .env
        .stowage(&["lock", "-o", plain_lock.to_str().unwrap(), &reference]));
    let plain_text = std::fs::read_to_string(&plain_lock).unwrap();
    assert!(!plain_text.contains("referrer"), "{plain_text}");

    let store = signed.store_at("synced");
    let synced = ok(stowage_in(&store, &["sync", file]));
    assert_eq!(synced["images"][0]["status"], "fetched", "{synced}");
    assert_eq!(
        synced["images"][0]["referrers"].as_array().map(Vec::len),
        Some(2),
        "{synced}"
    );
    let both = sorted(vec![
        signed.signature.digest.to_string(),
        signed.sbom.digest.to_string(),
    ]);
    assert_eq!(recorded(&store, &signed.digest), both);
    assert_whole(&store, &signed.signature);
    assert_whole(&store, &signed.sbom);
    ok(stowage_in(&store, &["verify", "--lock", file]));

    // Fetched by digest, not found again: no tag-schema lookup on the second sync.
    signed.env.proxy.reset_log();
    ok(stowage_in(&store, &["sync", file]));
    let tag_lookups: Vec<String> = signed
        .env
        .proxy
        .log()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p.contains(&fallback_tag(&signed.digest)) || p.contains("/referrers/"))
        .collect();
    assert!(tag_lookups.is_empty(), "{tag_lookups:?}");

    // With the registry gone, an offline sync of the complete store succeeds.
    signed.env.registry.stop();
    let offline = ok(stowage_in(&store, &["sync", "--offline", file]));
    assert_eq!(offline["images"][0]["status"], "present", "{offline}");

    // A pinned referrer missing from the store is reported, offline and by verify.
    let sbom_blob = store.join("blobs/sha256").join(signed.sbom.digest.digest());
    std::fs::remove_file(&sbom_blob).unwrap();
    let missing = stowage_in(&store, &["sync", "--offline", file]);
    assert!(!missing.status.success());
    let report: Value = serde_json::from_slice(&missing.stdout).unwrap();
    assert_eq!(report["images"][0]["status"], "missing", "{report}");
    let detail = report["images"][0]["detail"].as_str().unwrap();
    assert!(detail.contains(&signed.sbom.digest.to_string()), "{detail}");
    let verify = stowage_in(&store, &["verify", "--lock", file]);
    assert!(!verify.status.success());
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        stderr(&verify)
    );
    assert!(
        out.contains(&format!("pinned referrer {}", signed.sbom.digest)) && out.contains("missing"),
        "{out}"
    );
}

#[test]
fn a_pinned_referrer_the_registry_does_not_hold_fails_sync_naming_the_pin_and_what_is_there() {
    let signed = Signed::new();
    let reference = signed.reference();
    let lockfile = signed.env.dir.path().join("stowage.lock");
    let file = lockfile.to_str().unwrap();
    ok(signed.env.stowage(&[
        "lock",
        &format!("--referrers={SPDX}"),
        "-o",
        file,
        &reference,
    ]));
    let text = std::fs::read_to_string(&lockfile).unwrap();
    let wrong = sha256_digest(b"not the sbom");
    std::fs::write(
        &lockfile,
        text.replace(&signed.sbom.digest.to_string(), wrong.as_ref()),
    )
    .unwrap();

    let store = signed.store_at("wrong");
    let output = stowage_in(&store, &["sync", file]);
    assert!(!output.status.success(), "a wrong referrer pin synced");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["images"][0]["status"], "failed", "{report}");
    let detail = report["images"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("referrer {wrong}"))
            && detail.contains(&signed.sbom.digest.to_string()),
        "{detail}"
    );
    assert!(recorded(&store, &signed.digest).is_empty());

    // A pin naming another referrer's digest with the SBOM's size: wrong size.
    std::fs::write(
        &lockfile,
        text.replace(
            &signed.sbom.digest.to_string(),
            signed.signature.digest.as_ref(),
        ),
    )
    .unwrap();
    let output = stowage_in(&store, &["sync", file]);
    assert!(!output.status.success());
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let detail = report["images"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("expected {} bytes", signed.sbom.manifest.len()))
            && detail.contains(&format!("{} bytes", signed.signature.manifest.len())),
        "{detail}"
    );
    assert!(recorded(&store, &signed.digest).is_empty());
}

#[test]
fn a_tag_naming_an_index_carries_the_referrers_of_the_index_and_of_the_chosen_image() {
    let env = Env::new();
    let index = two_platform_index(&env.fixtures);
    env.push(&index.descriptor, &format!("{REPO}:multi"));
    let key = CosignKey::from_seed("referrers-index");
    let index_digest = index.descriptor.digest().clone();
    let amd64 = index.images[0].descriptor.digest().clone();
    let arm64 = index.images[1].descriptor.digest().clone();
    let mut signatures = Vec::new();
    for subject in [&index_digest, &amd64, &arm64] {
        let payload = simple_signing_payload(subject, &format!("{}/{REPO}", env.proxy.addr()));
        let artifact = signature(&key, &payload, None);
        artifact.push(
            &env.registry,
            REPO,
            Some(&CosignTag::Signature.tag(subject)),
        );
        signatures.push(artifact);
    }

    let store = env.store();
    let report = env.pull(&[
        "--platform",
        "linux/amd64",
        "--referrers",
        &env.via_proxy(&format!("{REPO}:multi")),
    ]);
    assert_eq!(report["manifest_digest"], amd64.to_string(), "{report}");
    assert_eq!(
        recorded(&store, &index_digest),
        vec![signatures[0].digest.to_string()]
    );
    assert_eq!(
        recorded(&store, &amd64),
        vec![signatures[1].digest.to_string()]
    );
    // The platform not pulled keeps its signature on the registry.
    assert!(recorded(&store, &arm64).is_empty());
    assert!(!blob_present(&store, &signatures[2].digest));
    let subjects: Vec<&str> = report["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        vec![index_digest.to_string(), amd64.to_string()],
        "{report}"
    );

    // An export of the one platform cannot carry the index's signature (the index is
    // not stored): it says so, and carries the image's own.
    let archive = env.dir.path().join("amd64.tar");
    let exported = env.stowage(&[
        "export",
        &env.via_proxy(&format!("{REPO}:multi")),
        "-o",
        archive.to_str().unwrap(),
    ]);
    let warned = stderr(&exported);
    assert!(exported.status.success(), "{warned}");
    assert!(
        warned.contains(&format!("from the index {index_digest}"))
            && warned.contains("stay behind"),
        "{warned}"
    );

    // lock pins both, each with its subject.
    let lockfile = env.dir.path().join("multi.lock");
    ok(env.stowage(&[
        "lock",
        "--referrers",
        "--platform",
        "linux/amd64",
        "-o",
        lockfile.to_str().unwrap(),
        &env.via_proxy(&format!("{REPO}:multi")),
    ]));
    let text = std::fs::read_to_string(&lockfile).unwrap();
    assert!(
        text.contains(&format!("subject = \"{index_digest}\""))
            && text.contains(&format!("subject = \"{amd64}\""))
            && !text.contains(&arm64.to_string()),
        "{text}"
    );
}

#[test]
fn pull_referrers_through_the_referrers_api_of_stowage_serve() {
    // A store holding an image with a tag-schema signature, an OCI 1.1 signature and
    // an SBOM, served: `serve` answers the referrers API, so discovery goes through it.
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let store = Store::open(&source).unwrap();
    let image = tagged_image(&store, "registry.test/tools/app:1", "amd64");
    let digest = image.descriptor.digest().clone();
    let key = CosignKey::from_seed("referrers-api");
    let SignedReferrers {
        tag_signature,
        oci_signature,
        sbom,
    } = put_signed_referrers(&store, &image.descriptor, &key, "registry.test/tools/app");
    let served = Served::start(&source);
    let proxy = Proxy::start(&served.addr, Faults::default());
    let reference = format!("{}/tools/app:1", proxy.addr());

    let all = dir.path().join("all");
    let report = ok(stowage_in(&all, &["pull", "--referrers", &reference]));
    let artifacts = [&tag_signature, &oci_signature, &sbom];
    assert_eq!(
        report["referrers"].as_array().map(Vec::len),
        Some(3),
        "{report}"
    );
    assert_eq!(
        recorded(&all, &digest),
        sorted(artifacts.iter().map(|a| a.digest.to_string()).collect())
    );
    for artifact in artifacts {
        assert_whole(&all, artifact);
    }
    // Found through the API: the fallback tag was never asked for.
    let paths: Vec<String> = proxy.log().into_iter().map(|r| r.path).collect();
    let api = format!("/v2/tools/app/referrers/{digest}");
    let fallback = format!("/v2/tools/app/manifests/{}", fallback_tag(&digest));
    assert!(paths.contains(&api), "{paths:?}");
    assert!(!paths.contains(&fallback), "{paths:?}");

    let only_sbom = dir.path().join("sbom");
    ok(stowage_in(
        &only_sbom,
        &["pull", &format!("--referrers={SPDX}"), &reference],
    ));
    assert_eq!(recorded(&only_sbom, &digest), vec![sbom.digest.to_string()]);
    assert!(!blob_present(&only_sbom, &oci_signature.digest));
}
