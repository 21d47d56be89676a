//! Referrers records: recorded only for stored referrers, answered as the referrers
//! API's index, kept by gc exactly while their subject is.

use stowage_store::{Descriptor, Digest, MediaType, Store, StoreError};

/// Stores a manifest with one layer holding `content` (and a subject, when given),
/// and returns its descriptor with `artifact_type` set.
fn manifest(
    store: &Store,
    content: &[u8],
    artifact_type: Option<&str>,
    subject: Option<&Descriptor>,
) -> (Descriptor, Digest) {
    let layer = store.put(content).unwrap();
    let config = store.put(b"{}").unwrap();
    let mut json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config.to_string(), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": layer.to_string(), "size": content.len()}],
    });
    if let Some(t) = artifact_type {
        json["artifactType"] = t.into();
    }
    if let Some(s) = subject {
        json["subject"] = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": s.digest().to_string(),
            "size": s.size(),
        });
    }
    let bytes = serde_json::to_vec(&json).unwrap();
    let digest = store.put(&bytes).unwrap();
    let mut descriptor = Descriptor::new(MediaType::ImageManifest, bytes.len() as u64, digest);
    descriptor.set_artifact_type(artifact_type.map(Into::into));
    (descriptor, layer)
}

const SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SBOM: &str = "application/spdx+json";

#[test]
fn a_referrer_is_recorded_only_when_stored_and_answers_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (image, _) = manifest(&store, b"image layer", None, None);
    assert!(store.referrers(image.digest()).unwrap().is_empty());

    let absent = Descriptor::new(
        MediaType::ImageManifest,
        10,
        stowage_store::sha256_of(b"not stored"),
    );
    match store.add_referrers(image.digest(), &[absent]) {
        Err(StoreError::BlobNotFound(_)) => {}
        other => panic!("a referrer that is not stored was recorded: {other:?}"),
    }
    assert!(store.referrers(image.digest()).unwrap().is_empty());

    let (sig, _) = manifest(&store, b"signature", Some(SIG), Some(&image));
    let (sbom, _) = manifest(&store, b"sbom", Some(SBOM), Some(&image));
    store
        .add_referrers(image.digest(), std::slice::from_ref(&sig))
        .unwrap();
    store
        .add_referrers(image.digest(), &[sbom.clone(), sig.clone()])
        .unwrap();
    assert_eq!(
        store.referrers(image.digest()).unwrap(),
        [sig.clone(), sbom.clone()],
        "recorded once each, in the order first recorded"
    );
    let only_sbom = store.referrers_index(image.digest(), Some(SBOM)).unwrap();
    assert_eq!(only_sbom.manifests(), std::slice::from_ref(&sbom));
    assert_eq!(
        store.all_referrers().unwrap(),
        [(image.digest().clone(), vec![sig, sbom])]
    );
}

#[test]
fn gc_keeps_referrers_while_their_subject_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (image, image_layer) = manifest(&store, b"image layer", None, None);
    store.set_ref("example/app:1", &image).unwrap();
    let (sig, sig_layer) = manifest(&store, b"signature", Some(SIG), Some(&image));
    // A referrer of the referrer (an attestation of the signature) lives with it.
    let (att, att_layer) = manifest(
        &store,
        b"attestation",
        Some("application/x-att"),
        Some(&sig),
    );
    store
        .add_referrers(image.digest(), std::slice::from_ref(&sig))
        .unwrap();
    store
        .add_referrers(sig.digest(), std::slice::from_ref(&att))
        .unwrap();
    // A signature carried for an image that is not stored: nothing keeps it.
    let orphan_subject = stowage_store::sha256_of(b"another image");
    let (orphan, orphan_layer) = manifest(&store, b"orphan signature", Some(SIG), None);
    store
        .add_referrers(&orphan_subject, std::slice::from_ref(&orphan))
        .unwrap();

    let report = store.gc(&[], false).unwrap();
    for kept in [
        image.digest(),
        &image_layer,
        sig.digest(),
        &sig_layer,
        att.digest(),
        &att_layer,
    ] {
        assert!(
            store.has(kept),
            "gc took {kept}, which a kept subject's referrer needs"
        );
    }
    assert!(!store.has(orphan.digest()) && !store.has(&orphan_layer));
    assert!(store.referrers(&orphan_subject).unwrap().is_empty());
    assert_eq!(report.referrer_records_removed, 1);

    store.remove_ref("example/app:1").unwrap();
    let report = store.gc(&[], false).unwrap();
    for gone in [
        image.digest(),
        sig.digest(),
        &sig_layer,
        att.digest(),
        &att_layer,
    ] {
        assert!(!store.has(gone), "gc kept {gone} after its subject went");
    }
    assert!(store.referrers(image.digest()).unwrap().is_empty());
    assert!(store.referrers(sig.digest()).unwrap().is_empty());
    assert_eq!(report.referrer_records_removed, 2);
}

#[test]
fn gc_keeps_the_referrers_of_the_index_a_ref_was_chosen_from() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (image, _) = manifest(&store, b"platform image", None, None);
    // Pulled from an index for one platform: the index is not stored, its digest
    // rides on the ref.
    let index_digest = stowage_store::sha256_of(b"the index, not stored");
    let mut named = image.clone();
    named.set_annotations(Some(
        [(
            stowage_store::INDEX_ANNOTATION.to_string(),
            index_digest.to_string(),
        )]
        .into(),
    ));
    store.set_ref("example/app:1", &named).unwrap();
    let (sig, sig_layer) = manifest(&store, b"index signature", Some(SIG), None);
    store
        .add_referrers(&index_digest, std::slice::from_ref(&sig))
        .unwrap();
    // A second ref from an index that is stored (pull keeps it): the index blob is
    // kept with the ref, and none of the platforms it lists that are not stored.
    let (other, _) = manifest(&store, b"another platform image", None, None);
    let stored_index = store
        .put(format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{}}}]}}"#, other.digest(), other.size()).as_bytes())
        .unwrap();
    let mut from_stored = other.clone();
    from_stored.set_annotations(Some(
        [(
            stowage_store::INDEX_ANNOTATION.to_string(),
            stored_index.to_string(),
        )]
        .into(),
    ));
    store.set_ref("example/other:1", &from_stored).unwrap();

    store.gc(&[], false).unwrap();
    assert!(store.has(sig.digest()) && store.has(&sig_layer));
    assert!(store.has(&stored_index), "gc took the index a ref names");
    store.remove_ref("example/other:1").unwrap();
    store.gc(&[], false).unwrap();
    assert!(!store.has(&stored_index));
    assert_eq!(
        store.referrers(&index_digest).unwrap(),
        std::slice::from_ref(&sig)
    );

    store.remove_ref("example/app:1").unwrap();
    store.gc(&[], false).unwrap();
    assert!(!store.has(sig.digest()));
    assert!(store.referrers(&index_digest).unwrap().is_empty());
}
