//! The air-gap round trip of #17, end to end against the real registry: an image with
//! a cosign signature under cosign's tag schema, a second signature and an SBOM in
//! the OCI 1.1 form (listed under the distribution spec's fallback tag, as an OCI 1.1
//! client leaves them on a registry without the referrers API), all made in the test
//! with a P-256 key pair. The connected site pulls them with the image under its
//! policy and exports; the registry is stopped; the air-gapped site imports into an
//! empty store under the same policy, and the signatures and the SBOM are there and
//! verify offline; its `serve` hands them on through the referrers API, where they
//! verify again under a policy naming the mirror.

use std::path::Path;

use serde_json::{json, Value};
use stowage::{fallback_tag, CosignTag, ARTIFACT_COSIGN_SIGNATURE};
use stowage_faultproxy::{Faults, Proxy};
use stowage_store::{Digest, Store};

use crate::support::cosign::{sbom, signature, simple_signing_payload, CosignKey, SPDX};
use crate::support::fixtures::gzip_image;
use crate::support::pulling::{stderr, stowage_in, Env};
use crate::support::push::push_manifest;
use crate::support::serving::Served;

const REPO: &str = "tools/signed";

fn ok(store: &Path, args: &[&str]) -> Value {
    let output = stowage_in(store, args);
    assert!(
        output.status.success(),
        "stowage {args:?} failed: {}",
        stderr(&output)
    );
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

/// The artifact types recorded for `subject` in the store at `dir`, sorted.
fn recorded_types(dir: &Path, subject: &Digest) -> Vec<String> {
    let mut types: Vec<String> = Store::open(dir)
        .unwrap()
        .referrers(subject)
        .unwrap()
        .iter()
        .map(|d| d.artifact_type().as_ref().unwrap().to_string())
        .collect();
    types.sort();
    types
}

#[test]
fn signatures_and_an_sbom_cross_the_gap_and_verify_offline_under_the_sites_policy() {
    let mut env = Env::new();
    let work = env.dir.path().to_path_buf();
    let image = gzip_image(&env.fixtures, "amd64");
    env.push(&image.descriptor, &format!("{REPO}:1"));
    let digest = image.descriptor.digest().clone();
    let reference = format!("{}/{REPO}:1", env.registry.addr());

    let key = CosignKey::from_seed("the connected site's release key");
    std::fs::write(work.join("cosign.pub"), key.public_pem()).unwrap();
    let signed_repository = format!("{}/{REPO}", env.registry.addr());
    let payload = simple_signing_payload(&digest, &signed_repository);
    // cosign's tag schema: the signature manifest itself under sha256-<hex>.sig.
    let tagged = signature(&key, &payload, None);
    tagged.push(
        &env.registry,
        REPO,
        Some(&CosignTag::Signature.tag(&digest)),
    );
    // The OCI 1.1 form: pushed by digest, listed in the fallback tag's index.
    let with_subject = signature(&key, &payload, Some(&image.descriptor));
    let document = sbom(&image.descriptor, "signed");
    let mut listed = Vec::new();
    for (artifact, artifact_type) in [
        (&with_subject, ARTIFACT_COSIGN_SIGNATURE),
        (&document, SPDX),
    ] {
        artifact.push(&env.registry, REPO, None);
        listed.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": artifact.digest.to_string(),
            "size": artifact.manifest.len(),
            "artifactType": artifact_type,
        }));
    }
    let fallback = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": listed,
    }))
    .unwrap();
    push_manifest(
        &env.registry,
        REPO,
        &fallback_tag(&digest),
        "application/vnd.oci.image.index.v1+json",
        &fallback,
    );

    let policy = work.join("policy.json");
    std::fs::write(
        &policy,
        serde_json::to_vec_pretty(&json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {
                format!("{}/{REPO}", env.registry.addr()):
                    [{"type": "sigstoreSigned", "keyPath": "cosign.pub",
                      // cosign signs the repository alone, not the tag.
                      "signedIdentity": {"type": "matchRepository"}}],
            }},
        }))
        .unwrap(),
    )
    .unwrap();
    let policy = policy.to_str().unwrap();

    // The connected site: the image and all three referrers, checked on the way in.
    let connected = work.join("connected");
    let pulled = ok(
        &connected,
        &["pull", "--referrers", "--policy", policy, &reference],
    );
    let carried = pulled["referrers"].as_array().expect("a referrers report");
    assert_eq!(carried.len(), 3, "{pulled}");
    let expected_types = {
        let mut t = vec![
            ARTIFACT_COSIGN_SIGNATURE.to_string(),
            ARTIFACT_COSIGN_SIGNATURE.to_string(),
            SPDX.to_string(),
        ];
        t.sort();
        t
    };
    assert_eq!(recorded_types(&connected, &digest), expected_types);
    let archive = work.join("carry.tar");
    ok(
        &connected,
        &["export", &reference, "-o", archive.to_str().unwrap()],
    );

    // The air gap: no registry anywhere.
    env.registry.stop();
    let site = work.join("site");
    ok(
        &site,
        &["import", archive.to_str().unwrap(), "--policy", policy],
    );
    assert_eq!(recorded_types(&site, &digest), expected_types);
    let store = Store::open(&site).unwrap();
    for artifact in [&tagged, &with_subject, &document] {
        assert!(
            store.has(&artifact.digest),
            "{} was not carried",
            artifact.digest
        );
        for blob in &artifact.blobs {
            assert!(
                store.has(&crate::support::fixtures::sha256_digest(blob)),
                "a blob of {} was not carried",
                artifact.digest
            );
        }
    }
    // Offline, the stored signatures still satisfy the policy: `verify` and a load
    // check would both reach the same check; `import` again is the cheapest caller.
    ok(
        &site,
        &["import", archive.to_str().unwrap(), "--policy", policy],
    );

    // The same signatures under another key's policy are refused, offline.
    let other = CosignKey::from_seed("somebody else's key");
    std::fs::write(work.join("other.pub"), other.public_pem()).unwrap();
    let strict = work.join("strict.json");
    std::fs::write(
        &strict,
        std::fs::read_to_string(policy)
            .unwrap()
            .replace("cosign.pub", "other.pub"),
    )
    .unwrap();
    let elsewhere = work.join("elsewhere");
    let refused = stowage_in(
        &elsewhere,
        &[
            "import",
            archive.to_str().unwrap(),
            "--policy",
            strict.to_str().unwrap(),
        ],
    );
    assert!(
        !refused.status.success(),
        "another key's policy accepted the image"
    );
    let message = stderr(&refused);
    assert!(
        message.contains(&reference) || message.contains(REPO),
        "{message}"
    );
    assert!(
        Store::open(&elsewhere).unwrap().refs().unwrap().is_empty(),
        "a refused import recorded a ref"
    );

    // The site's serve answers the referrers API: a third store gets all three
    // through it, and asks no tag schema (a proxy in front counts the requests).
    let served = Served::start(&site);
    let proxy = Proxy::start(&served.addr, Faults::default());
    let downstream = work.join("downstream");
    let through_serve = format!("{}/{REPO}:1", proxy.addr());
    // Under a policy of its own: the signatures found through the API verify there
    // too (named by the mirror, they were signed for the first registry's repository).
    let mirrored = work.join("mirrored.json");
    std::fs::write(
        &mirrored,
        serde_json::to_vec(&json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {
                format!("{}/{REPO}", proxy.addr()):
                    [{"type": "sigstoreSigned", "keyPath": "cosign.pub",
                      "signedIdentity": {"type": "exactRepository",
                                         "dockerRepository": signed_repository}}],
            }},
        }))
        .unwrap(),
    )
    .unwrap();
    let again = ok(
        &downstream,
        &[
            "pull",
            "--referrers",
            "--policy",
            mirrored.to_str().unwrap(),
            &through_serve,
        ],
    );
    assert_eq!(again["referrers"].as_array().unwrap().len(), 3, "{again}");
    assert_eq!(recorded_types(&downstream, &digest), expected_types);
    let paths: Vec<String> = proxy.log().into_iter().map(|r| r.path).collect();
    let api = format!("/v2/{REPO}/referrers/{digest}");
    assert!(
        paths.iter().any(|p| p.starts_with(&api)),
        "the referrers API was not asked: {paths:?}"
    );
    assert!(
        !paths
            .iter()
            .any(|p| p.ends_with(&format!("/manifests/{}", fallback_tag(&digest)))),
        "the fallback tag was asked although the API answered: {paths:?}"
    );
}
