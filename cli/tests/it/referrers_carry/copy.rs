//! `copy` carries referrers: pushed to a registry without the referrers API, each
//! manifest lands by digest and under the tag schemas (cosign's tag, the fallback
//! index, merged on a second copy), and `pull --referrers` brings them back; with a
//! registry source, `--referrers` fetches them through the store first.

use std::collections::BTreeSet;

use serde_json::Value;
use stowage::CosignTag;
use stowage_store::{Digest, Store};

use super::{records, Signed, NAME};
use crate::support::archive_check::ok;
use crate::support::cosign::{signature, simple_signing_payload, CosignKey};
use crate::support::fixtures::tagged_image;
use crate::support::pulling::{stderr, stowage_in, Env};
use crate::support::registry::Registry;
use crate::support::serving::curl;

/// `GET` of a manifest on `registry`, or `None` on 404.
fn remote_manifest(registry: &Registry, repo: &str, reference: &str) -> Option<Vec<u8>> {
    let url = format!("{}/v2/{repo}/manifests/{reference}", registry.url());
    let reply = curl(&[
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        &url,
    ]);
    match reply.status {
        200 => Some(reply.body),
        404 => None,
        other => panic!("GET {url}: {other}"),
    }
}

#[test]
fn copy_pushes_referrers_under_the_tag_schemas_to_a_registry_without_the_api() {
    let signed = Signed::new();
    let registry = Registry::start();
    let target = format!("{}/dst/app:1", registry.addr());
    let copied = ok(&signed.store, &["copy", NAME, &target]);
    assert_eq!(copied["referrers_pushed"], 4, "{copied}");
    assert_eq!(copied["referrers_api"], false, "{copied}");

    // Each referrer manifest by digest.
    for artifact in signed.artifacts() {
        let pushed = remote_manifest(&registry, "dst/app", artifact.digest.as_ref());
        assert_eq!(pushed.as_deref(), Some(&artifact.manifest[..]));
    }
    // The tag-schema signature under cosign's tag, the OCI 1.1 referrers in the
    // fallback index (the SBOM's signature in the SBOM's).
    let sig_tag = CosignTag::Signature.tag(signed.digest());
    assert_eq!(
        remote_manifest(&registry, "dst/app", &sig_tag).as_deref(),
        Some(&signed.tag_signature.manifest[..])
    );
    let fallback_digests = |subject: &Digest| -> BTreeSet<String> {
        let tag = stowage::fallback_tag(subject);
        let bytes = remote_manifest(&registry, "dst/app", &tag).expect("a fallback index");
        let index: Value = serde_json::from_slice(&bytes).unwrap();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["digest"].as_str().unwrap().to_string())
            .collect()
    };
    let expected: BTreeSet<String> = [&signed.oci_signature, &signed.sbom]
        .iter()
        .map(|a| a.digest.to_string())
        .collect();
    assert_eq!(fallback_digests(signed.digest()), expected);
    assert_eq!(
        fallback_digests(&signed.sbom.digest),
        BTreeSet::from([signed.sbom_signature.digest.to_string()])
    );

    // Copied again: the fallback index is merged, not duplicated.
    ok(&signed.store, &["copy", NAME, &target]);
    assert_eq!(fallback_digests(signed.digest()), expected);

    // Pulled back with its referrers, found through the tag schemas.
    let back = signed.path("back");
    ok(&back, &["pull", "--referrers", &target]);
    let recorded = Store::open(&back)
        .unwrap()
        .referrers(signed.digest())
        .unwrap();
    let recorded: BTreeSet<String> = recorded.iter().map(|d| d.digest().to_string()).collect();
    let image_referrers: BTreeSet<String> =
        [&signed.tag_signature, &signed.oci_signature, &signed.sbom]
            .iter()
            .map(|a| a.digest.to_string())
            .collect();
    assert_eq!(recorded, image_referrers);
    let stored = Store::open(&back).unwrap();
    for artifact in [&signed.tag_signature, &signed.oci_signature, &signed.sbom] {
        assert_eq!(
            stored.read_blob(&artifact.digest, 1 << 20).unwrap(),
            artifact.manifest
        );
    }
}

#[test]
fn copy_with_referrers_from_a_registry_pulls_them_through_the_store_and_pushes_them() {
    let env = Env::new();
    let image = tagged_image(&env.fixtures, "src/app:1", "amd64");
    env.push(&image.descriptor, "src/app:1");
    let digest = image.descriptor.digest();
    let key = CosignKey::from_seed("referrers-copy");
    let payload = simple_signing_payload(digest, &format!("{}/src/app", env.registry.addr()));
    let tag_signature = signature(&key, &payload, None);
    let sig_tag = CosignTag::Signature.tag(digest);
    tag_signature.push(&env.registry, "src/app", Some(&sig_tag));

    let second = Registry::start();
    let source = format!("{}/src/app:1", env.registry.addr());
    let target = format!("{}/dst/app:1", second.addr());
    // Without the flag, only the image: the store holds no referrer of it.
    let plain = env.json(&["copy", &source, &target]);
    assert_eq!(plain["referrers_pushed"], 0, "{plain}");
    assert_eq!(remote_manifest(&second, "dst/app", &sig_tag), None);

    let copied = env.json(&[
        "copy",
        "--referrers",
        &source,
        &format!("{}/dst/signed:1", second.addr()),
    ]);
    // The first copy stored the source: --referrers fetches its referrers from the
    // source registry into the store, and pushes them after it.
    assert_eq!(copied["referrers_pushed"], 1, "{copied}");
    assert_eq!(
        remote_manifest(&second, "dst/signed", &sig_tag).as_deref(),
        Some(&tag_signature.manifest[..])
    );
    assert_eq!(records(&env.store()).len(), 1);

    // Into an empty store, the pull of the source brings them.
    let fresh = env.dir.path().join("fresh");
    let output = stowage_in(&fresh, &["copy", "--referrers", &source, &target]);
    assert!(output.status.success(), "{}", stderr(&output));
    let copied: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(copied["referrers_pushed"], 1, "{copied}");
    assert_eq!(
        remote_manifest(&second, "dst/app", &sig_tag).as_deref(),
        Some(&tag_signature.manifest[..])
    );
    assert_eq!(records(&fresh).len(), 1);
}
