//! Driving podman, docker and stowage from the tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::support::pulling::BIN;

/// `podman run` as it works on this machine (plain `podman run` fails on rlimits).
pub const PODMAN_RUN: [&str; 8] = [
    "--runtime",
    "runc",
    "run",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
    "--rm",
];

/// podman with a storage of its own under `dir`.
pub struct Podman {
    pub args: Vec<String>,
}

impl Podman {
    pub fn new(dir: &Path) -> Self {
        let root = dir.join("podman-root");
        let run = dir.join("podman-run");
        let args = vec![
            "--root".to_string(),
            root.display().to_string(),
            "--runroot".to_string(),
            run.display().to_string(),
            "--storage-driver".to_string(),
            "vfs".to_string(),
        ];
        Self { args }
    }

    /// `STOWAGE_PODMAN_ARGS` for stowage.
    pub fn env(&self) -> (&'static str, String) {
        ("STOWAGE_PODMAN_ARGS", self.args.join(" "))
    }

    pub fn output(&self, args: &[&str]) -> Output {
        Command::new("podman")
            .args(&self.args)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn id(&self, name: &str) -> Option<String> {
        let output = self.output(&["image", "inspect", "--format", "{{.Id}}", name]);
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    }
}

/// Whether a docker daemon answers here.
pub fn docker_available(test: &str) -> bool {
    let answers = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !answers {
        eprintln!("skipping {test}: no docker daemon answers `docker version` here");
    }
    answers
}

/// Removes the docker images it names when the test ends, passed or not.
pub struct DockerImages(pub Vec<String>);

impl Drop for DockerImages {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("docker")
                .args(["rmi", "-f"])
                .args(&self.0)
                .output();
        }
    }
}

pub fn docker_id(name: &str) -> Option<String> {
    let output = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", name])
        .output()
        .unwrap();
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Runs `stowage --store STORE args` with extra environment variables.
pub fn stowage(store: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .arg("--store")
        .arg(store)
        .args(args)
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// [`stowage`], which must succeed; returns stdout.
pub fn stowage_ok(store: &Path, args: &[&str], vars: &[(&str, &str)]) -> String {
    let output = stowage(store, args, vars);
    assert_ok(&output, &format!("stowage {args:?}"));
    text(&output.stdout)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstderr: {}\nstdout: {}",
        output.status,
        text(&output.stderr),
        text(&output.stdout)
    );
}

pub fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&output.stdout)))
}

pub fn vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A temporary directory whose path can name a repository (lower case, no `/.`), as
/// podman needs of a layout it pulls from: `/tmp/stowage-it-PID-N`, removed on drop.
pub struct NameableTmp(pub PathBuf);

impl NameableTmp {
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/stowage-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for NameableTmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
