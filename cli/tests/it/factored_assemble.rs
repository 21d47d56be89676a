//! `ensure-layers` fetches only what a store lacks (counted at a proxy); `assemble`
//! builds an image from local layers with no network, checking every diff_id.

use crate::support::fixtures::{
    put_image, put_layer, sample_tree, skopeo_json, Compression, Layer,
};
use crate::support::pulling::*;
use serde_json::{json, Value};

fn spec(layer: &Layer, diff_id: &str) -> Value {
    json!({
        "digest": layer.descriptor.digest().to_string(),
        "size": layer.descriptor.size(),
        "media_type": layer.descriptor.media_type().to_string(),
        "diff_id": diff_id,
        "annotations": {"org.conda.package.name": "tool"},
    })
}

fn arg(layer: &Layer) -> String {
    format!("{}:{}", layer.descriptor.digest(), layer.descriptor.size())
}

#[test]
fn ensure_layers_fetches_only_missing_layers() {
    let env = Env::new();
    let shared = put_layer(&env.fixtures, &sample_tree("python"), Compression::Zstd);
    let only_a = put_layer(&env.fixtures, &sample_tree("samtools"), Compression::Zstd);
    let only_b = put_layer(&env.fixtures, &sample_tree("bwa"), Compression::Gzip);
    let a = put_image(&env.fixtures, "amd64", vec![shared.clone(), only_a.clone()]);
    let b = put_image(&env.fixtures, "amd64", vec![shared.clone(), only_b.clone()]);
    env.push(&a.descriptor, "envs/a:1");
    env.push(&b.descriptor, "envs/b:1");

    let first = env.json(&[
        "ensure-layers",
        &env.via_proxy("envs/a"),
        &arg(&shared),
        &arg(&only_a),
    ]);
    assert_eq!(first["fetched"], 2, "{first}");
    env.proxy.reset_log();
    let second = env.json(&[
        "ensure-layers",
        &env.via_proxy("envs/b"),
        &arg(&shared),
        &arg(&only_b),
    ]);
    assert_eq!(second["fetched"], 1, "{second}");
    assert_eq!(second["bytes_present"], shared.descriptor.size());
    assert_eq!(second["bytes_fetched"], only_b.descriptor.size());
    let gets = env.proxy.blob_gets();
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert!(gets[0]
        .path
        .ends_with(&only_b.descriptor.digest().to_string()));
    // Nothing to do the second time.
    env.proxy.reset_log();
    let again = env.json(&[
        "ensure-layers",
        &env.via_proxy("envs/b"),
        &arg(&shared),
        &arg(&only_b),
    ]);
    assert_eq!(again["fetched"], 0);
    assert!(env.proxy.blob_gets().is_empty());
}

#[test]
fn assemble_builds_from_local_layers_and_names_a_wrong_diff_id() {
    let env = Env::new();
    let base_layer = put_layer(&env.fixtures, &sample_tree("base"), Compression::Gzip);
    let base = put_image(&env.fixtures, "amd64", vec![base_layer]);
    env.push(&base.descriptor, "envs/base:1");
    let base_name = env.pull(&[&env.via_proxy("envs/base:1")])["reference"]
        .as_str()
        .unwrap()
        .to_string();
    let zstd = put_layer(&env.fixtures, &sample_tree("pkg-zstd"), Compression::Zstd);
    let gzip = put_layer(&env.fixtures, &sample_tree("pkg-gzip"), Compression::Gzip);
    let extra = put_image(&env.fixtures, "amd64", vec![zstd.clone(), gzip.clone()]);
    env.push(&extra.descriptor, "envs/pkgs:1");
    let layers_file = env.dir.path().join("layers.json");
    // Runs `assemble local/env:1 --base BASE --layers FILE EXTRA...` with `specs` in FILE.
    let assemble = |specs: Value, extra: &[&str]| {
        std::fs::write(&layers_file, serde_json::to_vec(&specs).unwrap()).unwrap();
        let mut args = vec![
            "assemble",
            "local/env:1",
            "--base",
            &base_name,
            "--layers",
            layers_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        env.stowage(&args)
    };

    // A layer not in the store is named, and nothing is recorded.
    let output = assemble(json!([spec(&zstd, zstd.diff_id.as_ref())]), &[]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(&zstd.descriptor.digest().to_string())
            && message.contains("ensure-layers"),
        "{message}"
    );

    env.json(&[
        "ensure-layers",
        &env.via_proxy("envs/pkgs"),
        &arg(&zstd),
        &arg(&gzip),
    ]);
    env.without_network(|| {
        // A wrong diff_id for the gzip layer (index 2 after the base layer) is named.
        let wrong = format!("sha256:{}", "f".repeat(64));
        let output = assemble(
            json!([spec(&zstd, zstd.diff_id.as_ref()), spec(&gzip, &wrong)]),
            &[],
        );
        assert!(!output.status.success());
        let message = stderr(&output);
        assert!(
            message.contains("layer 2") && message.contains(&gzip.descriptor.digest().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&wrong) && message.contains(gzip.diff_id.as_ref()),
            "{message}"
        );

        let good = json!([
            spec(&zstd, zstd.diff_id.as_ref()),
            spec(&gzip, gzip.diff_id.as_ref())
        ]);
        let extra = [
            "--env",
            "PATH=/opt/conda/bin:/usr/bin:/bin",
            "--cmd",
            "[\"tool\", \"--version\"]",
        ];
        let json_of = |output: std::process::Output| -> Value {
            assert!(output.status.success(), "{}", stderr(&output));
            serde_json::from_slice(&output.stdout).unwrap()
        };
        let made = json_of(assemble(good.clone(), &extra));
        let again = json_of(assemble(good, &extra));
        assert_eq!(
            made["manifest_digest"], again["manifest_digest"],
            "assemble is not deterministic"
        );
        let oci = format!("oci:{}:local/env:1", env.store().display());
        let config = skopeo_json(&["inspect", "--config", &oci]);
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        assert_eq!(diff_ids.len(), 3);
        assert_eq!(diff_ids[1], zstd.diff_id.to_string());
        assert_eq!(diff_ids[2], gzip.diff_id.to_string());
        assert_eq!(config["config"]["Cmd"], json!(["tool", "--version"]));
        assert!(env.stowage(&["verify"]).status.success());
    });
}
