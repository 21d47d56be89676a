//! podman, driven through its command line. `podman load` reads an oci-archive on
//! stdin, zstd layers as they are, and names the image after the index's
//! `org.opencontainers.image.ref.name` annotation; its image ID is the config
//! digest's hex.
//!
//! Configuration (for [`Podman::from_env`], which the `stowage` command uses):
//! - `STOWAGE_PODMAN_ARGS`: global options for every podman call, split on
//!   whitespace (no quoting), e.g. `--root /tmp/p/root --runroot /tmp/p/run
//!   --storage-driver vfs` to use a storage of its own. [`Podman::with_args`] is the
//!   same from code.
//! - `STOWAGE_PODMAN_RUNTIME`: the OCI runtime for `run` (`--runtime`), default
//!   `runc`; empty leaves podman's own choice.
//! - `STOWAGE_PODMAN_RUN_ARGS`: options for `podman run`, default
//!   `--ulimit nofile=1024:1024 --ulimit nproc=1024:1024`; empty for none.
//!
//! The run defaults are what works where podman cannot raise a container's rlimits
//! to its own defaults (sandboxes, nested containers: plain `podman run` fails with
//! "error setting rlimits") and crun refuses to start containers.

use std::time::Instant;

use super::process::{one_line, Cli};
use super::{
    archive, check_loaded, parse_inspect, ContainerRuntime, LoadedImage, RunSpec, RuntimeError,
    RuntimeImage, RuntimeInfo, StoredImage,
};
use crate::store::Store;

/// Global options for every podman call.
pub const ARGS_ENV: &str = "STOWAGE_PODMAN_ARGS";
/// The OCI runtime `run` uses.
pub const OCI_RUNTIME_ENV: &str = "STOWAGE_PODMAN_RUNTIME";
/// Options for `podman run`.
pub const RUN_ARGS_ENV: &str = "STOWAGE_PODMAN_RUN_ARGS";
/// The OCI runtime `run` uses unless told otherwise.
pub const DEFAULT_OCI_RUNTIME: &str = "runc";
/// `podman run` options unless told otherwise.
pub const DEFAULT_RUN_ARGS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// podman through its command line.
#[derive(Debug, Clone)]
pub struct Podman {
    cli: Cli,
    oci_runtime: Option<String>,
    run_args: Vec<String>,
}

impl Default for Podman {
    fn default() -> Self {
        Self::new()
    }
}

impl Podman {
    /// `podman` from PATH, its default storage, and the run defaults above.
    pub fn new() -> Self {
        Self {
            cli: Cli {
                runtime: "podman",
                program: "podman".to_string(),
                global_args: Vec::new(),
            },
            oci_runtime: Some(DEFAULT_OCI_RUNTIME.to_string()),
            run_args: DEFAULT_RUN_ARGS.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// [`Podman::new`] adjusted by `STOWAGE_PODMAN_ARGS`, `STOWAGE_PODMAN_RUNTIME`
    /// and `STOWAGE_PODMAN_RUN_ARGS`.
    pub fn from_env() -> Self {
        let mut podman = Self::new();
        if let Some(args) = super::env_words(ARGS_ENV) {
            podman = podman.with_args(args);
        }
        if let Ok(runtime) = std::env::var(OCI_RUNTIME_ENV) {
            let runtime = runtime.trim();
            podman.oci_runtime = (!runtime.is_empty()).then(|| runtime.to_string());
        }
        if let Some(args) = super::env_words(RUN_ARGS_ENV) {
            podman.run_args = args;
        }
        podman
    }

    /// Adds global options to every call (`--root`, `--runroot`, `--storage-driver`).
    pub fn with_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.cli
            .global_args
            .extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs this program instead of `podman` from PATH.
    pub fn with_program(mut self, program: impl Into<String>) -> Self {
        self.cli.program = program.into();
        self
    }

    /// The OCI runtime for `run`; `None` leaves podman's own choice.
    pub fn with_oci_runtime(mut self, runtime: Option<String>) -> Self {
        self.oci_runtime = runtime;
        self
    }

    /// Replaces the `podman run` options.
    pub fn with_run_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.run_args = args.into_iter().map(Into::into).collect();
        self
    }
}

impl ContainerRuntime for Podman {
    fn name(&self) -> &str {
        "podman"
    }

    fn health_check(&self) -> Result<RuntimeInfo, RuntimeError> {
        let captured = self
            .cli
            .capture(&["info", "--format", "{{.Version.Version}}"])?;
        if !captured.success {
            return Err(RuntimeError::Failed {
                runtime: "podman".into(),
                command: "info".into(),
                message: one_line(&captured.stderr),
            });
        }
        Ok(RuntimeInfo {
            name: "podman".into(),
            version: captured.stdout.trim().to_string(),
        })
    }

    fn load(
        &self,
        store: &Store,
        image: &StoredImage,
        name: &str,
    ) -> Result<LoadedImage, RuntimeError> {
        let started = Instant::now();
        let bytes = self.cli.feed("load", &["load"], |stdin| {
            archive::write_oci_archive(store, image, name, stdin)
        })?;
        check_loaded(self, image, name, bytes, started)
    }

    fn inspect(&self, image_ref: &str) -> Result<Option<RuntimeImage>, RuntimeError> {
        let captured = self.cli.capture(&["image", "inspect", image_ref])?;
        if captured.success {
            parse_inspect("podman", &captured.stdout).map(Some)
        } else if captured.stderr.contains("image not known") {
            Ok(None)
        } else {
            Err(self.cli.failed("image inspect", &captured.stderr))
        }
    }

    fn run(&self, spec: &RunSpec) -> Result<i32, RuntimeError> {
        let mut args: Vec<&str> = Vec::new();
        if let Some(runtime) = &self.oci_runtime {
            args.extend(["--runtime", runtime]);
        }
        args.push("run");
        args.extend(self.run_args.iter().map(String::as_str));
        args.extend(["--rm", &spec.image]);
        args.extend(spec.command.iter().map(String::as_str));
        self.cli.interactive(&args)
    }
}
