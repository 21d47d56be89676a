//! Referrers travel with their images: an image's signatures (cosign's tag-schema form
//! and the OCI 1.1 form) and its SBOM (itself signed) go through `export` and `import`
//! with no registry running at all, are kept by `gc` while the image is, are answered
//! by `serve`'s referrers API and tag schemas, and land on a registry without the
//! referrers API under the tag schemas when `copy` pushes the image (`copy.rs`).

mod copy;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use stowage::{CosignTag, ANNOTATION_REFERRER_SUBJECT};
use stowage_store::{Descriptor, Digest, Store, REF_NAME_ANNOTATION};

use crate::support::archive_check::{dir_blobs, fails, listed, ok, path_str};
use crate::support::cosign::{
    put_signed_referrers, signature, simple_signing_payload, Artifact, CosignKey, SignedReferrers,
};
use crate::support::fixtures::{tagged_image, Image};
use crate::support::serving::{curl, Served};

const NAME: &str = "registry.test/tools/app:1";
const SPDX: &str = "application/spdx+json";

/// A store holding one image with four referrers: a tag-schema signature, an OCI 1.1
/// signature and an SBOM of the image, and an OCI 1.1 signature of the SBOM.
struct Signed {
    dir: tempfile::TempDir,
    store: PathBuf,
    image: Image,
    tag_signature: Artifact,
    oci_signature: Artifact,
    sbom: Artifact,
    sbom_signature: Artifact,
}

impl Signed {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signed");
        let store = Store::open(&path).unwrap();
        let image = tagged_image(&store, NAME, "amd64");
        let key = CosignKey::from_seed("referrers-carry");
        let SignedReferrers {
            tag_signature,
            oci_signature,
            sbom,
        } = put_signed_referrers(&store, &image.descriptor, &key, "registry.test/tools/app");
        let sbom_payload = simple_signing_payload(&sbom.digest, "registry.test/tools/app");
        let sbom_signature = signature(&key, &sbom_payload, Some(&sbom.descriptor()));
        sbom_signature.put(&store, &sbom.digest, None);
        Self {
            dir,
            store: path,
            image,
            tag_signature,
            oci_signature,
            sbom,
            sbom_signature,
        }
    }

    fn digest(&self) -> &Digest {
        self.image.descriptor.digest()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn artifacts(&self) -> [&Artifact; 4] {
        [
            &self.tag_signature,
            &self.oci_signature,
            &self.sbom,
            &self.sbom_signature,
        ]
    }
}

/// Every referrers record of the store at `path`.
fn records(path: &Path) -> Vec<(Digest, Vec<Descriptor>)> {
    Store::open(path).unwrap().all_referrers().unwrap()
}

fn index_entries(layout: &Path) -> Vec<Value> {
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"].as_array().unwrap().clone()
}

#[test]
fn referrers_travel_through_export_and_import_with_no_registry_and_gc_keeps_them() {
    let signed = Signed::new();
    let tar = signed.path("signed.tar");
    let layout = signed.path("signed-layout");
    let exported = ok(&signed.store, &["export", NAME, "-o", path_str(&tar)]);
    assert_eq!(exported["referrers"], 4, "{exported}");
    ok(&signed.store, &["export", NAME, "-o", path_str(&layout)]);

    // index.json: the image by name, then each referrer unnamed with its artifact
    // type; only the tag-schema signature (no `subject` field) names its subject.
    let entries = index_entries(&layout);
    assert_eq!(entries.len(), 5, "{entries:?}");
    assert_eq!(entries[0]["annotations"][REF_NAME_ANNOTATION], NAME);
    for artifact in signed.artifacts() {
        let entry = entries
            .iter()
            .find(|e| e["digest"] == artifact.digest.to_string())
            .unwrap_or_else(|| panic!("{} not in {entries:?}", artifact.digest));
        assert!(
            entry["annotations"].get(REF_NAME_ANNOTATION).is_none(),
            "{entry}"
        );
        assert!(entry["artifactType"].is_string(), "{entry}");
        let subject = entry["annotations"].get(ANNOTATION_REFERRER_SUBJECT);
        if artifact.digest == signed.tag_signature.digest {
            assert_eq!(subject.unwrap(), &signed.digest().to_string());
        } else {
            assert!(subject.is_none(), "{entry}");
        }
    }
    // Every blob of the store travels: the image's and the referrers'.
    assert_eq!(dir_blobs(&layout), dir_blobs(&signed.store));

    // Imported into empty stores, with no registry anywhere: the same records, refs
    // and blobs.
    let original = records(&signed.store);
    assert_eq!(original.len(), 2, "the image and the SBOM have referrers");
    for (label, source) in [("tar", &tar), ("dir", &layout)] {
        let target = signed.path(&format!("imported-{label}"));
        let imported = ok(&target, &["import", path_str(source)]);
        assert_eq!(imported["referrers"], 4, "{label}: {imported}");
        assert_eq!(imported["unnamed"], 0, "{label}: {imported}");
        assert_eq!(records(&target), original, "{label}");
        assert_eq!(dir_blobs(&target), dir_blobs(&signed.store), "{label}");
        assert_eq!(listed(&target), listed(&signed.store), "{label}");
        let stored = Store::open(&target).unwrap();
        for artifact in signed.artifacts() {
            assert_eq!(
                stored.read_blob(&artifact.digest, 1 << 20).unwrap(),
                artifact.manifest
            );
        }
    }

    // gc keeps the referrers while the image is named, and drops them with it.
    let target = signed.path("imported-tar");
    ok(&target, &["gc"]);
    assert_eq!(records(&target), original);
    assert_eq!(dir_blobs(&target), dir_blobs(&signed.store));
    assert!(Store::open(&target).unwrap().remove_ref(NAME).unwrap());
    ok(&target, &["gc"]);
    assert_eq!(records(&target), Vec::new());
    assert_eq!(dir_blobs(&target), BTreeSet::new());
}

#[test]
fn an_image_without_referrers_exports_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let image = tagged_image(&store, NAME, "amd64");
    let layout = dir.path().join("layout");
    let exported = ok(store.root(), &["export", NAME, "-o", path_str(&layout)]);
    assert_eq!(exported["referrers"], 0);
    // The very bytes export wrote before referrers travelled: one entry, keys sorted.
    let d = &image.descriptor;
    let expected = format!(
        r#"{{"manifests":[{{"annotations":{{"{REF_NAME_ANNOTATION}":"{NAME}"}},"digest":"{}","mediaType":"{}","platform":{{"architecture":"amd64","os":"linux"}},"size":{}}}],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}}"#,
        d.digest(),
        d.media_type(),
        d.size()
    );
    assert_eq!(
        String::from_utf8(fs::read(layout.join("index.json")).unwrap()).unwrap(),
        expected
    );
}

#[test]
fn an_archive_with_a_corrupt_referrer_blob_or_a_bad_subject_is_refused_and_nothing_recorded() {
    let signed = Signed::new();
    let layout = signed.path("layout");
    ok(&signed.store, &["export", NAME, "-o", path_str(&layout)]);

    // The SBOM document, same length, one byte changed.
    let corrupt = signed.path("corrupt");
    copy_dir(&layout, &corrupt);
    let sbom_manifest: Value = serde_json::from_slice(&signed.sbom.manifest).unwrap();
    let document = sbom_manifest["layers"][0]["digest"].as_str().unwrap();
    let path = corrupt
        .join("blobs/sha256")
        .join(&document["sha256:".len()..]);
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] ^= 1;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&path, bytes).unwrap();
    let target = signed.path("from-corrupt");
    let error = fails(&target, &["import", path_str(&corrupt)]);
    assert!(error.contains(document), "{error}");
    assert_nothing_recorded(&target);

    // The tag-schema signature's subject annotation is not a digest.
    let bad = signed.path("bad-subject");
    copy_dir(&layout, &bad);
    let index_path = bad.join("index.json");
    let mut index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["digest"] == signed.tag_signature.digest.to_string())
        .unwrap();
    entry["annotations"][ANNOTATION_REFERRER_SUBJECT] = "latest".into();
    fs::set_permissions(&index_path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let target = signed.path("from-bad-subject");
    let error = fails(&target, &["import", path_str(&bad)]);
    assert!(
        error.contains("\"latest\", not a digest")
            && error.contains(&signed.tag_signature.digest.to_string()),
        "{error}"
    );
    assert_nothing_recorded(&target);
}

fn assert_nothing_recorded(store: &Path) {
    assert_eq!(listed(store), Vec::new());
    assert_eq!(records(store), Vec::new());
    assert_eq!(dir_blobs(store), BTreeSet::new());
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn serve_answers_the_referrers_api_and_the_tag_schemas_from_the_store() {
    let signed = Signed::new();
    let served = Served::start(&signed.store);
    let subject = signed.digest().to_string();
    let referrers = |path: &str| {
        let reply = curl(&[&served.url(path)]);
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(
            reply.header("content-type"),
            "application/vnd.oci.image.index.v1+json"
        );
        let index: Value = serde_json::from_slice(&reply.body).unwrap();
        let found: BTreeSet<String> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["digest"].as_str().unwrap().to_string())
            .collect();
        (reply, index, found)
    };
    let of = |artifacts: &[&Artifact]| -> BTreeSet<String> {
        artifacts.iter().map(|a| a.digest.to_string()).collect()
    };

    let (reply, index, all) = referrers(&format!("/v2/tools/app/referrers/{subject}"));
    assert!(!reply.headers.contains_key("oci-filters-applied"));
    assert_eq!(
        all,
        of(&[&signed.tag_signature, &signed.oci_signature, &signed.sbom])
    );
    let sbom_entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["digest"] == signed.sbom.digest.to_string())
        .unwrap();
    assert_eq!(sbom_entry["artifactType"], SPDX);
    assert_eq!(sbom_entry["size"], signed.sbom.manifest.len());

    let filtered =
        format!("/v2/tools/app/referrers/{subject}?artifactType=application%2Fspdx%2Bjson");
    let (reply, _, spdx) = referrers(&filtered);
    assert_eq!(reply.header("oci-filters-applied"), "artifactType");
    assert_eq!(spdx, of(&[&signed.sbom]));

    // The SBOM's own referrer; a subject with none is an empty index.
    let (_, _, of_sbom) = referrers(&format!("/v2/tools/app/referrers/{}", signed.sbom.digest));
    assert_eq!(of_sbom, of(&[&signed.sbom_signature]));
    let unknown = format!("sha256:{}", "0".repeat(64));
    let (_, index, none) = referrers(&format!("/v2/tools/app/referrers/{unknown}"));
    assert!(none.is_empty());
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );

    // A repository serve does not know is NAME_UNKNOWN, a bad digest DIGEST_INVALID.
    let reply = curl(&[&served.url(&format!("/v2/tools/other/referrers/{subject}"))]);
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (404, "NAME_UNKNOWN")
    );
    let reply = curl(&[&served.url("/v2/tools/app/referrers/sha256:nothex")]);
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (400, "DIGEST_INVALID")
    );

    // Every referrer manifest by digest from its subject's repository, byte for byte.
    for artifact in signed.artifacts() {
        let reply = curl(&[&served.url(&format!("/v2/tools/app/manifests/{}", artifact.digest))]);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, artifact.manifest);
        assert_eq!(
            reply.header("docker-content-digest"),
            artifact.digest.to_string()
        );
    }

    // The tag schemas: cosign's `.sig` tag is the tag-schema signature, the fallback
    // tag an index of every referrer; no `.att` was recorded.
    let sig_tag = CosignTag::Signature.tag(signed.digest());
    let reply = curl(&[&served.url(&format!("/v2/tools/app/manifests/{sig_tag}"))]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, signed.tag_signature.manifest);
    let fallback = stowage::fallback_tag(signed.digest());
    let reply = curl(&[&served.url(&format!("/v2/tools/app/manifests/{fallback}"))]);
    assert_eq!(reply.status, 200);
    let index: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 3, "{index}");
    let att_tag = CosignTag::Attestation.tag(signed.digest());
    let reply = curl(&[&served.url(&format!("/v2/tools/app/manifests/{att_tag}"))]);
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (404, "MANIFEST_UNKNOWN")
    );
}

#[test]
fn an_unnamed_entry_with_a_subject_field_is_recorded_from_its_manifest_as_oras_writes_it() {
    let signed = Signed::new();
    let layout = signed.path("layout");
    ok(&signed.store, &["export", NAME, "-o", path_str(&layout)]);
    // As other tools write layouts: bare descriptors, no artifactType, no annotations.
    let index_path = layout.join("index.json");
    let mut index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    for entry in index["manifests"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .skip(1)
    {
        let entry = entry.as_object_mut().unwrap();
        entry.remove("artifactType");
        entry.remove("annotations");
    }
    fs::set_permissions(&index_path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();

    let target = signed.path("imported");
    let imported = ok(&target, &["import", path_str(&layout)]);
    // The tag-schema signature names no subject any more: an unnamed entry like any.
    assert_eq!(imported["referrers"], 3, "{imported}");
    assert_eq!(imported["unnamed"], 1, "{imported}");
    let stored = Store::open(&target).unwrap();
    let of_image = stored.referrers(signed.digest()).unwrap();
    let sbom = of_image
        .iter()
        .find(|d| d.digest() == &signed.sbom.digest)
        .expect("the SBOM is recorded");
    assert_eq!(sbom.artifact_type().as_ref().unwrap().to_string(), SPDX);
    assert_eq!(
        sbom.annotations().as_ref().unwrap()["org.opencontainers.image.created"],
        "2026-12-03T00:00:00Z"
    );
    assert!(!of_image
        .iter()
        .any(|d| d.digest() == &signed.tag_signature.digest));
    assert_eq!(
        digests(&stored.referrers(&signed.sbom.digest).unwrap()),
        BTreeSet::from([signed.sbom_signature.digest.to_string()])
    );
}

fn digests(descriptors: &[Descriptor]) -> BTreeSet<String> {
    descriptors.iter().map(|d| d.digest().to_string()).collect()
}
