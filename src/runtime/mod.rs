//! Container runtimes: handing images from the store to podman, docker or containerd.
//!
//! A [`ContainerRuntime`] drives a runtime's own command line (`podman`, `docker`)
//! as child processes: it loads a stored image by streaming an archive of it into
//! `load` on stdin (see [`archive`]), or for a local podman by having it pull from a
//! layout of links into the store (see [`layout_view`]), checks the runtime then
//! reports the expected image ID (the config digest), answers whether it already
//! holds an image, and runs one. A runtime that is missing or not running is one clear [`RuntimeError`].
//!
//! Names: an image is loaded under its store ref when that is a valid, fully
//! qualified docker reference (`127.0.0.1:5000/tools/a:1`), else under a sanitized
//! `localhost/...` name; see [`runtime_name`].

pub mod archive;
mod containerd;
mod docker;
pub mod docker_archive;
mod image;
mod layout_view;
mod naming;
mod podman;
mod process;
mod run_spec;
mod unpack;
pub mod warm;

use std::time::Instant;

pub use archive::LoadArchiveError;
pub use containerd::Containerd;
pub use docker::Docker;
pub use image::{ImageError, StoredImage};
pub use naming::runtime_name;
pub use podman::Podman;
pub use run_spec::{
    parse_env, run_argv, volume_args, GpuRequest, Mount, RunOutcome, RunSpec, RunSpecError,
};
pub use unpack::{unpack, UnpackError, UnpackOptions, UnpackReport, UnpackedLayer};

use crate::store::Store;

/// Why a runtime could not do what was asked. Each reads as one line.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{runtime} is not installed: no `{program}` on PATH")]
    NotInstalled { runtime: String, program: String },
    #[error("{runtime} is not running: {message}")]
    NotRunning { runtime: String, message: String },
    #[error("no container runtime named {0:?} (use podman, docker or containerd)")]
    Unknown(String),
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{runtime} {command} failed: {message}")]
    Failed {
        runtime: String,
        command: String,
        message: String,
    },
    #[error("{runtime} printed {what} stowage cannot read: {detail}")]
    Unreadable {
        runtime: String,
        what: String,
        detail: String,
    },
    #[error("{runtime} loaded the archive but has no image {name} afterwards")]
    NotLoaded { runtime: String, name: String },
    #[error("{runtime} holds {name} as image {actual}, not the expected {expected}")]
    WrongImage {
        runtime: String,
        name: String,
        expected: String,
        actual: String,
    },
    #[error("{runtime} cannot {what}")]
    Unsupported { runtime: String, what: String },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Archive(#[from] LoadArchiveError),
    #[error("laying out {name} for {runtime} under {}: {source}", dir.display())]
    View {
        runtime: String,
        name: String,
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A runtime that answered its health check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeInfo {
    pub name: String,
    /// The version of the runtime itself (for docker, the daemon's).
    pub version: String,
    /// Whether it runs without root (rootless podman, or a rootless docker daemon):
    /// bind mounts and `--user` then map through the caller's user namespace.
    pub rootless: bool,
    /// Its storage driver as it names it (`overlay`, `vfs`, `fuse-overlayfs`, ...).
    pub storage_driver: String,
}

/// An image as a runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuntimeImage {
    /// `sha256:<hex>` of the image config (podman prints the hex alone; normalized).
    pub id: String,
    pub tags: Vec<String>,
    /// `name@sha256:...` manifest digests the runtime recorded (podman does for
    /// oci-archives; docker's loads record none).
    pub digests: Vec<String>,
}

impl RuntimeImage {
    /// Whether `digest` is this image's ID (config digest) or one of its recorded
    /// manifest digests. A bare hex digest is taken as sha256.
    pub fn matches(&self, digest: &str) -> bool {
        let digest = with_algorithm(digest);
        self.id == digest
            || self
                .digests
                .iter()
                .any(|d| d.ends_with(&format!("@{digest}")))
    }
}

/// What a load did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadedImage {
    /// The name the runtime holds it under.
    pub name: String,
    /// `sha256:<config hex>`, checked against the runtime's answer.
    pub id: String,
    /// Bytes of archive streamed into the runtime.
    pub bytes: u64,
    pub seconds: f64,
}

/// A container runtime driven through its command line.
pub trait ContainerRuntime {
    /// `podman` or `docker`.
    fn name(&self) -> &str;

    /// Whether the runtime answers (for docker: the daemon is running).
    fn health_check(&self) -> Result<RuntimeInfo, RuntimeError>;

    /// Streams `image` from `store` into the runtime under `name`, then checks the
    /// runtime reports `name` as the image (ID = config digest).
    fn load(
        &self,
        store: &Store,
        image: &StoredImage,
        name: &str,
    ) -> Result<LoadedImage, RuntimeError>;

    /// The image `image_ref` (a name or ID) names in the runtime, if any.
    fn inspect(&self, image_ref: &str) -> Result<Option<RuntimeImage>, RuntimeError>;

    /// Starts the container `spec` asks for (removed when it exits) and waits for
    /// it; its output goes to the caller's stdout and stderr unless the spec
    /// captures it. A container that exits non-zero is an outcome, not an error.
    fn run(&self, spec: &RunSpec) -> Result<RunOutcome, RuntimeError>;

    /// The options that bind `mounts` into a container.
    fn mount_args(&self, mounts: &[Mount]) -> Vec<String> {
        volume_args(mounts)
    }

    /// The options that hand the GPUs `gpu` asks for to a container.
    fn gpu_args(&self, gpu: &GpuRequest) -> Vec<String>;

    /// Whether the runtime holds `image_ref` as the image `digest`: its ID (config
    /// digest, which both runtimes report) or a manifest digest it recorded. Asks the
    /// runtime every time; a runtime that cannot answer holds nothing.
    fn is_locally_available(&self, image_ref: &str, digest: &str) -> bool {
        match self.inspect(image_ref) {
            Ok(Some(image)) => image.matches(digest),
            Ok(None) => false,
            Err(e) => {
                tracing::debug!(runtime = self.name(), error = %e, "inspect failed");
                false
            }
        }
    }
}

/// The runtime called `name`, configured from the environment
/// ([`Podman::from_env`], [`Docker::from_env`], [`Containerd::from_env`]).
pub fn by_name(name: &str) -> Result<Box<dyn ContainerRuntime>, RuntimeError> {
    match name {
        "podman" => Ok(Box::new(Podman::from_env())),
        "docker" => Ok(Box::new(Docker::from_env())),
        "containerd" => Ok(Box::new(Containerd::from_env())),
        other => Err(RuntimeError::Unknown(other.to_string())),
    }
}

/// The last step of every load: the runtime must now hold `name` as `image`.
pub(crate) fn check_loaded(
    runtime: &dyn ContainerRuntime,
    image: &StoredImage,
    name: &str,
    bytes: u64,
    started: Instant,
) -> Result<LoadedImage, RuntimeError> {
    let expected = image.config.digest().to_string();
    let found = runtime
        .inspect(name)?
        .ok_or_else(|| RuntimeError::NotLoaded {
            runtime: runtime.name().to_string(),
            name: name.to_string(),
        })?;
    if found.id != expected {
        return Err(RuntimeError::WrongImage {
            runtime: runtime.name().to_string(),
            name: name.to_string(),
            expected,
            actual: found.id,
        });
    }
    Ok(LoadedImage {
        name: name.to_string(),
        id: expected,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Reads `[{"Id": ..., "RepoTags": [...], "RepoDigests": [...]}]`, what both
/// `podman image inspect` and `docker image inspect` print.
pub(crate) fn parse_inspect(runtime: &str, stdout: &str) -> Result<RuntimeImage, RuntimeError> {
    let unreadable = |detail: String| RuntimeError::Unreadable {
        runtime: runtime.to_string(),
        what: "image inspect output".to_string(),
        detail,
    };
    let value: serde_json::Value =
        serde_json::from_str(stdout).map_err(|e| unreadable(e.to_string()))?;
    let first = value
        .as_array()
        .and_then(|a| a.first())
        .ok_or_else(|| unreadable("no image in the answer".to_string()))?;
    let id = first["Id"]
        .as_str()
        .ok_or_else(|| unreadable("no Id".to_string()))?;
    let strings = |key: &str| -> Vec<String> {
        first[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(RuntimeImage {
        id: with_algorithm(id),
        tags: strings("RepoTags"),
        digests: strings("RepoDigests"),
    })
}

/// The whitespace-separated words of environment variable `key`, if it is set.
pub(crate) fn env_words(key: &str) -> Option<Vec<String>> {
    let value = std::env::var(key).ok()?;
    Some(value.split_whitespace().map(String::from).collect())
}

fn with_algorithm(digest: &str) -> String {
    if digest.contains(':') {
        digest.to_string()
    } else {
        format!("sha256:{digest}")
    }
}
