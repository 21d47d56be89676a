//! Lockfiles against the real registry: lock, sync, verify --lock, offline use, tamper
//! detection in the registry and in the store, bv.lock, and stable output.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::fixtures::{
    build_layer, put_image, put_layer, sample_tree, Compression, Image, Layer,
};
use crate::support::pulling::*;
use crate::support::push::{push_blob, push_manifest};
use serde_json::{json, Value};
use stowage_store::{Descriptor, MediaType};

fn lockfile(env: &Env, name: &str) -> PathBuf {
    env.dir.path().join(name)
}

fn run(env: &Env, args: &[&str]) -> Output {
    env.stowage(args)
}

fn ok(output: Output) -> Value {
    assert!(
        output.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(&output)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn lock(env: &Env, file: &Path, args: &[&str]) -> Value {
    let mut all = vec!["lock", "-o", file.to_str().unwrap()];
    all.extend_from_slice(args);
    ok(run(env, &all))
}

/// Two images that share a base layer, pushed as tools/a:1 and tools/b:1.
fn two_images(env: &Env) -> (Layer, Image, Image) {
    let base = put_layer(&env.fixtures, &sample_tree("base"), Compression::Gzip);
    let a_only = put_layer(&env.fixtures, &sample_tree("a"), Compression::Zstd);
    let b_only = put_layer(&env.fixtures, &sample_tree("b"), Compression::Gzip);
    let a = put_image(&env.fixtures, "amd64", vec![base.clone(), a_only]);
    let b = put_image(&env.fixtures, "amd64", vec![base.clone(), b_only]);
    env.push(&a.descriptor, "tools/a:1");
    env.push(&b.descriptor, "tools/b:1");
    (base, a, b)
}

#[test]
fn lock_then_sync_then_run_offline_with_the_registry_gone() {
    let mut env = Env::new();
    let (base, a, b) = two_images(&env);
    let file = lockfile(&env, "stowage.lock");
    let (ref_a, ref_b) = (env.via_proxy("tools/a:1"), env.via_proxy("tools/b:1"));
    lock(&env, &file, &[&ref_a, &ref_b]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("version = 1"), "{text}");
    assert!(text.contains(&a.descriptor.digest().to_string()), "{text}");

    env.proxy.reset_log();
    let synced = ok(run(&env, &["sync", file.to_str().unwrap()]));
    assert_eq!(synced["images"].as_array().unwrap().len(), 2);
    // Each blob once: the shared base layer is not fetched twice.
    assert_eq!(env.gets_of(base.descriptor.digest()).len(), 1);
    assert_eq!(
        env.proxy.blob_gets().len(),
        5,
        "2 configs, 1 shared + 2 own layers"
    );
    for image in [&a, &b] {
        assert!(blob_present(&env.store(), image.config.digest()));
    }

    env.registry.stop();
    env.proxy.reset_log();
    ok(run(&env, &["verify", "--lock", file.to_str().unwrap()]));
    ok(run(&env, &["sync", "--offline", file.to_str().unwrap()]));
    for reference in [&ref_a, &ref_b] {
        ok(run(&env, &["pull", "--offline", reference]));
    }
    assert!(
        env.proxy.log().is_empty(),
        "offline use reached the network"
    );
}

#[test]
fn a_layer_re_pushed_under_the_same_tag_fails_sync_with_index_and_digests() {
    let env = Env::new();
    let (base, a, _) = two_images(&env);
    let file = lockfile(&env, "stowage.lock");
    let reference = env.via_proxy("tools/a:1");
    lock(&env, &file, &[&reference]);

    let evil_layer = put_layer(&env.fixtures, &sample_tree("evil"), Compression::Zstd);
    let evil = put_image(&env.fixtures, "amd64", vec![base, evil_layer.clone()]);
    env.push(&evil.descriptor, "tools/a:1");

    let output = run(&env, &["sync", file.to_str().unwrap()]);
    assert!(!output.status.success(), "sync accepted a tampered image");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let detail = report["images"][0]["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("layer 1"), "{detail}");
    assert!(
        detail.contains(&a.layers[1].descriptor.digest().to_string()),
        "{detail}"
    );
    assert!(
        detail.contains(&evil_layer.descriptor.digest().to_string()),
        "{detail}"
    );
    let listed = ok(run(&env, &["ls"]));
    assert_eq!(listed, json!([]), "the tampered image was recorded");
    assert!(!blob_present(&env.store(), evil_layer.descriptor.digest()));
}

#[test]
fn a_tampered_store_blob_fails_verify_and_sync_repairs_it() {
    let env = Env::new();
    let (_, a, _) = two_images(&env);
    let file = lockfile(&env, "stowage.lock");
    lock(&env, &file, &[&env.via_proxy("tools/a:1")]);
    ok(run(&env, &["sync", file.to_str().unwrap()]));

    let layer = a.layers[1].descriptor.digest();
    let path = env.store().join("blobs/sha256").join(layer.digest());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[7] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();

    let output = run(&env, &["verify", "--lock", file.to_str().unwrap()]);
    assert!(!output.status.success(), "verify passed a flipped byte");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let problems = report["problems"].to_string();
    assert!(problems.contains(&layer.to_string()), "{problems}");

    env.proxy.reset_log();
    ok(run(&env, &["sync", file.to_str().unwrap()]));
    assert_eq!(
        env.gets_of(layer).len(),
        1,
        "the corrupt blob was fetched again"
    );
    ok(run(&env, &["verify", "--lock", file.to_str().unwrap()]));
}

#[test]
fn relocking_without_changes_is_byte_identical_and_update_reports_moved_tags() {
    let env = Env::new();
    let (base, a, _) = two_images(&env);
    let file = lockfile(&env, "stowage.lock");
    let (ref_a, ref_b) = (env.via_proxy("tools/a:1"), env.via_proxy("tools/b:1"));
    lock(&env, &file, &[&ref_b, &ref_a]);
    let first = std::fs::read(&file).unwrap();
    lock(&env, &file, &[&ref_a, &ref_b]);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        first,
        "a lock with no changes rewrote the file"
    );
    let updated = lock(&env, &file, &["--update"]);
    assert_eq!(updated["moved"], json!([]));
    assert_eq!(std::fs::read(&file).unwrap(), first);

    let newer = put_image(
        &env.fixtures,
        "amd64",
        vec![
            base,
            put_layer(&env.fixtures, &sample_tree("a2"), Compression::Gzip),
        ],
    );
    env.push(&newer.descriptor, "tools/a:1");
    let without_update = lock(&env, &file, &[&ref_a]);
    assert_eq!(
        without_update["moved"],
        json!([]),
        "a pinned image moved without --update"
    );
    let updated = lock(&env, &file, &["--update"]);
    let moved = updated["moved"].as_array().unwrap();
    assert_eq!(moved.len(), 1, "{updated}");
    assert_eq!(moved[0]["from"], a.descriptor.digest().to_string());
    assert_eq!(moved[0]["to"], newer.descriptor.digest().to_string());
}

/// A bv.lock as the environment tool writes it, with fields stowage does not use.
fn bv_lock(version: u32, reference: &str, image: &Image, factored: &str) -> String {
    let mut text = format!(
        r#"version = {version}

[metadata]
generated_by = "bv 0.9.1"
generated_at = "2026-11-01T12:00:00Z"
future_metadata = {{ anything = true }}

[tools.samtools]
image_reference = "{reference}"
image_digest = "{digest}"
manifest_sha256 = "{hex}"
image_size_bytes = 123456
some_newer_field = "ignored"
"#,
        digest = image.descriptor.digest(),
        hex = image.descriptor.digest().digest(),
    );
    for layer in &image.layers {
        text.push_str(&format!(
            "\n[[tools.samtools.layers]]\ndigest = \"{}\"\nsize = {}\nmedia_type = \"{}\"\n",
            layer.descriptor.digest(),
            layer.descriptor.size(),
            layer.descriptor.media_type()
        ));
    }
    text.push_str(factored);
    text
}

#[test]
fn bv_lock_is_read_as_it_is() {
    let env = Env::new();
    let (_, a, b) = two_images(&env);
    let mut factored = format!(
        "\n[tools.second]\nimage_reference = \"{}\"\nimage_digest = \"{}\"\nspec_kind = \"factored_oci\"\n",
        env.via_proxy("tools/b:1"),
        b.descriptor.digest()
    );
    for layer in &b.layers {
        factored.push_str(&format!(
            "\n[[tools.second.layers]]\ndigest = \"{}\"\nsize = {}\nmedia_type = \"{}\"\nconda_package = {{ name = \"samtools\", version = \"1.20\", build = \"h50ea8bc_0\", channel = \"bioconda\", sha256 = \"{}\" }}\n",
            layer.descriptor.digest(),
            layer.descriptor.size(),
            layer.descriptor.media_type(),
            "ab".repeat(32)
        ));
    }
    let file = lockfile(&env, "bv.lock");
    std::fs::write(
        &file,
        bv_lock(1, &env.via_proxy("tools/a:1"), &a, &factored),
    )
    .unwrap();
    let synced = ok(run(&env, &["sync", file.to_str().unwrap()]));
    assert_eq!(synced["images"].as_array().unwrap().len(), 2, "{synced}");
    ok(run(&env, &["verify", "--lock", file.to_str().unwrap()]));

    std::fs::write(&file, bv_lock(2, &env.via_proxy("tools/a:1"), &a, "")).unwrap();
    let output = run(&env, &["sync", file.to_str().unwrap()]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("version 2") && message.contains("bv.lock"),
        "{message}"
    );
}

#[test]
fn verify_lock_checks_diff_ids_against_decompressed_content() {
    let env = Env::new();
    let good = build_layer(&sample_tree("gz"), Compression::Gzip);
    let zstd = build_layer(&sample_tree("zs"), Compression::Zstd);
    for layer in [&good, &zstd] {
        push_blob(&env.registry, "lies/diffid", &layer.blob);
    }
    // The config claims the zstd layer's tar is something else.
    let wrong = format!("sha256:{}", "e".repeat(64));
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [good.diff_id.to_string(), wrong]},
    }))
    .unwrap();
    let config_digest = push_blob(&env.registry, "lies/diffid", &config);
    let config_descriptor =
        Descriptor::new(MediaType::ImageConfig, config.len() as u64, config_digest);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_descriptor,
        "layers": [good.descriptor, zstd.descriptor],
    }))
    .unwrap();
    push_manifest(
        &env.registry,
        "lies/diffid",
        "1",
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    );

    let file = lockfile(&env, "stowage.lock");
    lock(&env, &file, &[&env.via_proxy("lies/diffid:1")]);
    ok(run(&env, &["sync", file.to_str().unwrap()]));
    let output = run(&env, &["verify", "--lock", file.to_str().unwrap()]);
    assert!(!output.status.success(), "a wrong diff_id passed");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(
        problems.len(),
        1,
        "only the zstd layer is wrong: {problems:?}"
    );
    let detail = problems[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("layer 1") && detail.contains("diff_id"),
        "{detail}"
    );
    assert!(
        detail.contains(&zstd.diff_id.to_string()),
        "the actual diff_id: {detail}"
    );
}

#[test]
fn a_bv_lock_pinning_an_index_syncs_verifies_and_uses_the_ttl() {
    let env = Env::new();
    let index = crate::support::fixtures::tagged_index(&env.fixtures, "multi/tool:1");
    crate::support::fixtures::push_with_skopeo(
        env.fixtures.root(),
        "multi/tool:1",
        &env.registry,
        "multi/tool:1",
    );
    let amd64 = &index.images[0];
    let mut text = format!(
        "version = 1\n\n[tools.multi]\nimage_reference = \"{}\"\nimage_digest = \"{}\"\n",
        env.via_proxy("multi/tool:1"),
        index.descriptor.digest()
    );
    for layer in &amd64.layers {
        text.push_str(&format!(
            "\n[[tools.multi.layers]]\ndigest = \"{}\"\nsize = {}\nmedia_type = \"{}\"\n",
            layer.descriptor.digest(),
            layer.descriptor.size(),
            layer.descriptor.media_type()
        ));
    }
    let file = lockfile(&env, "bv.lock");
    std::fs::write(&file, text).unwrap();
    let path = file.to_str().unwrap();
    ok(run(&env, &["sync", "--ttl", "3600", path]));
    env.proxy.reset_log();
    // Within the TTL, from the store alone: the index pin still matches.
    ok(run(&env, &["sync", "--ttl", "3600", path]));
    assert!(env.proxy.log().is_empty(), "{:?}", env.proxy.log());
    ok(run(&env, &["verify", "--lock", path]));
    ok(run(&env, &["sync", "--offline", path]));
}

#[test]
fn sync_pulls_the_images_of_a_lockfile_at_once() {
    let env = Env::new();
    let refs: Vec<String> = (0..4)
        .map(|i| {
            let layer = put_layer(
                &env.fixtures,
                &sample_tree(&format!("own{i}")),
                Compression::Gzip,
            );
            let image = put_image(&env.fixtures, "amd64", vec![layer]);
            let tag = format!("tools/c{i}:1");
            env.push(&image.descriptor, &tag);
            env.via_proxy(&tag)
        })
        .collect();
    let file = lockfile(&env, "stowage.lock");
    let args: Vec<&str> = refs.iter().map(String::as_str).collect();
    lock(&env, &file, &args);

    // Every request waits 200 ms at the proxy. One image after another, the second
    // image's first request would come only after the first image's last blob.
    env.proxy.set_faults(stowage_faultproxy::Faults {
        delay: std::time::Duration::from_millis(200),
        ..Default::default()
    });
    env.proxy.reset_log();
    let synced = ok(run(&env, &["sync", file.to_str().unwrap()]));
    let statuses: Vec<&str> = synced["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["fetched"; 4], "{synced}");
    let log = env.proxy.log();
    let repository = |path: &str| path.split('/').nth(3).map(str::to_string);
    let first: std::collections::BTreeSet<_> = log
        .iter()
        .take(4)
        .filter_map(|r| repository(&r.path))
        .collect();
    assert_eq!(
        first.len(),
        4,
        "the first requests: {:?}",
        &log[..4.min(log.len())]
    );
}

#[test]
fn a_shared_layer_whose_first_fetch_fails_is_fetched_by_the_other_image() {
    let env = Env::new();
    let entries = [crate::support::fixtures::Entry::file(
        "shared.bin",
        noise(256 << 10, 7),
        0o644,
    )];
    let shared = put_layer(&env.fixtures, &entries, Compression::Gzip);
    let refs: Vec<String> = ["x", "y"]
        .iter()
        .map(|name| {
            let own = put_layer(&env.fixtures, &sample_tree(name), Compression::Gzip);
            let image = put_image(&env.fixtures, "amd64", vec![shared.clone(), own]);
            let tag = format!("tools/{name}:1");
            env.push(&image.descriptor, &tag);
            env.via_proxy(&tag)
        })
        .collect();
    let file = lockfile(&env, "stowage.lock");
    lock(&env, &file, &[&refs[0], &refs[1]]);

    // Only the shared layer reaches byte 100 000, and only its first GET is corrupted:
    // the image whose pull fetched it fails; the other, waiting for that fetch, must
    // then fetch the layer itself rather than take it for stored.
    env.proxy.set_faults(stowage_faultproxy::Faults {
        corrupt_blob_at: Some(100_000),
        corruptions: 1,
        ..Default::default()
    });
    env.proxy.reset_log();
    let output = run(&env, &["sync", file.to_str().unwrap()]);
    assert!(!output.status.success(), "one image must fail");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut statuses: Vec<&str> = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["failed", "fetched"], "{report}");
    assert_eq!(env.gets_of(shared.descriptor.digest()).len(), 2);
    assert!(blob_present(&env.store(), shared.descriptor.digest()));
}
