//! `stowage run` with a spec: a read-only bind mount, environment, working
//! directory, user and no network, in real podman and (when a daemon answers)
//! docker; the container's exit code, stdout and stderr become stowage's own.

use std::path::Path;

use stowage_store::Store;

use crate::runtime::images::{nonce, runnable};
use crate::runtime::tools::{
    assert_ok, docker_available, json_of, stowage, text, DockerImages, Podman,
};
use crate::support::fixtures::Compression;

/// Reads the mounted file, prints the variable, the working directory, the user and
/// the network interfaces, tries to write through the read-only mount, says a word
/// on stderr, and exits 3.
const SCRIPT: &str = "busybox cat /in/data.txt; echo \"greeting=$GREETING\"; \
    echo \"cwd=$(pwd)\"; echo \"uid=$(busybox id -u)\"; \
    echo \"interfaces=$(busybox awk -F: 'NR>2 {printf \"%s\", $1}' /proc/net/dev | busybox tr -d ' ')\"; \
    if echo x > /in/new 2>/dev/null; then echo writable; else echo read-only; fi; \
    echo 'to stderr' >&2; exit 3";

/// A store holding a runnable busybox image as `tools/spec:1`, and a host
/// directory with one file to mount.
fn setup(dir: &Path, test: &str) -> (Store, std::path::PathBuf) {
    let store = Store::open(dir.join("store")).unwrap();
    let image = runnable(&store, &nonce(test), Compression::Gzip, Compression::Gzip);
    store.set_ref("tools/spec:1", &image.manifest).unwrap();
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("data.txt"), "mounted data\n").unwrap();
    (store, data)
}

fn run_spec(store: &Store, data: &Path, runtime: &str, vars: &[(&str, &str)]) {
    let volume = format!("{}:/in:ro", data.display());
    let ran = stowage(
        store.root(),
        &[
            "run",
            "tools/spec:1",
            "--into",
            runtime,
            "-v",
            &volume,
            "-e",
            "GREETING=hello there",
            "-w",
            "/in",
            "-u",
            "1000",
            "--network",
            "none",
            "--",
            "/bin/sh",
            "-c",
            SCRIPT,
        ],
        vars,
    );
    let (stdout, stderr) = (text(&ran.stdout), text(&ran.stderr));
    assert_eq!(ran.status.code(), Some(3), "{runtime}: {stdout}\n{stderr}");
    assert_eq!(
        stdout, "mounted data\ngreeting=hello there\ncwd=/in\nuid=1000\ninterfaces=lo\nread-only\n",
        "{runtime}: {stderr}"
    );
    assert!(stderr.contains("to stderr"), "{runtime}: {stderr}");
    assert!(!data.join("new").exists(), "{runtime} wrote through :ro");
}

#[test]
fn podman_runs_a_spec_and_its_exit_code_becomes_stowages() {
    let dir = tempfile::tempdir().unwrap();
    let (store, data) = setup(dir.path(), "run-spec-podman");
    let podman = Podman::new(dir.path());
    let (key, value) = podman.env();
    let vars = [(key, value.as_str())];

    // The health check says how podman stores images and whether it is rootless.
    let loaded = stowage(
        store.root(),
        &["--json", "load", "tools/spec:1", "--into", "podman"],
        &vars,
    );
    assert_ok(&loaded, "stowage load");
    let info = &json_of(&loaded)["runtime"];
    assert_eq!(info["storage_driver"], "vfs", "{info}");
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    assert_eq!(info["rootless"], !root, "{info}");

    run_spec(&store, &data, "podman", &vars);
}

#[test]
fn docker_runs_a_spec_and_its_exit_code_becomes_stowages() {
    if !docker_available("docker_runs_a_spec_and_its_exit_code_becomes_stowages") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, data) = setup(dir.path(), "run-spec-docker");
    let _cleanup = DockerImages(vec!["localhost/tools/spec:1".to_string()]);
    run_spec(&store, &data, "docker", &[]);
}

#[test]
fn run_refuses_a_missing_mount_source_and_a_malformed_variable() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let missing = dir.path().join("missing");
    let volume = format!("{}:/in", missing.display());
    let ran = stowage(&store, &["run", "x", "-v", &volume], &[]);
    assert_eq!(ran.status.code(), Some(2));
    let stderr = text(&ran.stderr);
    assert!(
        stderr.contains(&format!("no {} on this host", missing.display())),
        "{stderr}"
    );
    let ran = stowage(&store, &["run", "x", "-v", "/tmp:relative"], &[]);
    assert!(
        text(&ran.stderr).contains("relative container path \"relative\""),
        "{}",
        text(&ran.stderr)
    );
    let ran = stowage(&store, &["run", "x", "-e", "=v"], &[]);
    assert!(
        text(&ran.stderr).contains("empty key"),
        "{}",
        text(&ran.stderr)
    );
}
