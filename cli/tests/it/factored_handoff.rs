//! The environment tool's path for a factored image, on a node whose store is empty:
//! `ensure-layers` fetches the layers a lockfile pins, `assemble` builds the image from
//! them with no network, and `load` + `run` hand it to podman and, where a Docker
//! engine answers, to docker (which gets the zstd layers decompressed on the fly).

use crate::factored_layers::conda_build;
use crate::runtime::tools;

use crate::support::base_images::busybox_base;
use crate::support::pulling::*;
use conda_build::{long_placeholder, Format, Spec};
use serde_json::{json, Value};
use tools::Podman;

#[test]
fn ensure_layers_then_assemble_then_load_and_run_on_an_empty_node() {
    let env = Env::new();
    busybox_base(&env.store(), "base");
    let pkgs = env.dir.path().join("pkgs");
    std::fs::create_dir_all(&pkgs).unwrap();
    let p = long_placeholder();
    let hello = Spec::new("hello", "2.0", "h0_0")
        .with_prefix(
            "bin/hello",
            format!("#!/bin/sh\necho \"hello from {p}\"\n"),
            0o755,
            &p,
            "text",
        )
        .write(&pkgs, Format::Conda);
    let name = "factored/hello:1";
    env.json(&["factor", name, "--base", "base", hello.to_str().unwrap()]);
    let remote = format!("{}/{name}", env.registry.addr());
    env.json(&["copy", name, &remote]);
    let oci = format!("oci:{}:{name}", env.store().display());
    let manifest = crate::support::fixtures::skopeo_json(&["inspect", "--raw", &oci]);
    let config = crate::support::fixtures::skopeo_json(&["inspect", "--config", &oci]);
    let layers = manifest["layers"].as_array().unwrap();
    let media_types: Vec<&str> = layers
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert!(
        media_types.contains(&"application/vnd.oci.image.layer.v1.tar+zstd"),
        "{media_types:?}"
    );

    // The node knows the layers by digest (as a lockfile pins them), nothing else.
    let node = env.dir.path().join("node");
    let wanted: Vec<String> = layers
        .iter()
        .map(|l| format!("{}:{}", l["digest"].as_str().unwrap(), l["size"]))
        .collect();
    let via_proxy = env.via_proxy(name);
    let mut args = vec!["ensure-layers", &via_proxy];
    args.extend(wanted.iter().map(String::as_str));
    let fetched = stowage_in(&node, &args);
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    let report: Value = serde_json::from_slice(&fetched.stdout).unwrap();
    assert_eq!(report["fetched"], layers.len(), "{report}");
    assert_eq!(
        env.proxy.blob_gets().len(),
        layers.len(),
        "only the layers: no manifest or config is needed"
    );

    let specs: Vec<Value> = layers
        .iter()
        .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
        .map(|(l, diff_id)| {
            json!({
                "digest": l["digest"], "size": l["size"], "media_type": l["mediaType"],
                "diff_id": diff_id, "annotations": l.get("annotations").cloned().unwrap_or(json!({})),
            })
        })
        .collect();
    let layers_file = env.dir.path().join("layers.json");
    std::fs::write(&layers_file, serde_json::to_vec(&specs).unwrap()).unwrap();
    let assembled = stowage_in(
        &node,
        &[
            "assemble",
            "local/hello:1",
            "--layers",
            layers_file.to_str().unwrap(),
            "--env",
            "PATH=/opt/conda/bin:/bin",
            "--cmd",
            "hello",
        ],
    );
    assert!(assembled.status.success(), "{}", stderr(&assembled));

    let podman = Podman::new(env.dir.path());
    let (var, value) = podman.env();
    let loaded = tools::stowage_ok(
        &node,
        &["load", "local/hello:1", "--into", "podman"],
        &[(var, &value)],
    );
    assert!(podman.id("localhost/local/hello:1").is_some(), "{loaded}");
    let stdout = podman.output(&[
        "--runtime",
        "runc",
        "run",
        "--rm",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "localhost/local/hello:1",
    ]);
    tools::assert_ok(&stdout, "podman run");
    assert_eq!(tools::text(&stdout.stdout).trim(), "hello from /opt/conda");

    if tools::docker_available("factored hand-off to docker") {
        let _loaded = tools::DockerImages(vec!["localhost/local/hello:1".into()]);
        tools::stowage_ok(&node, &["load", "local/hello:1", "--into", "docker"], &[]);
        let output = std::process::Command::new("docker")
            .args(["run", "--rm", "localhost/local/hello:1"])
            .output()
            .unwrap();
        tools::assert_ok(&output, "docker run");
        assert_eq!(tools::text(&output.stdout).trim(), "hello from /opt/conda");
    }
}
