//! podman, driven through its command line. A local podman loads an image with
//! `podman pull oci:VIEW:image` from a [`LayoutView`] of links into the store, so it
//! reads only the blobs it lacks; podman names such an image after the view's path,
//! so it is then tagged with its own name and that one is removed. A remote podman
//! (`--remote`, `--url`, `--connection` in `STOWAGE_PODMAN_ARGS`, or
//! `CONTAINER_HOST` / `CONTAINER_CONNECTION` set), or a temporary
//! directory whose path is no repository name (upper case, say), gets an
//! oci-archive on `podman load`'s stdin instead, zstd layers as they are; podman
//! names that image after the index's `org.opencontainers.image.ref.name`
//! annotation. Either way its image ID is the config digest's hex.
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

use std::path::PathBuf;
use std::time::Instant;

use super::layout_view::{LayoutView, VIEW_IMAGE};
use super::process::{one_line, Cli};
use super::{
    archive, check_loaded, parse_inspect, run_argv, ContainerRuntime, GpuRequest, LoadedImage,
    RunOutcome, RunSpec, RuntimeError, RuntimeImage, RuntimeInfo, StoredImage,
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

    /// `podman info`: its version, whether it is rootless, its storage driver.
    fn health_check(&self) -> Result<RuntimeInfo, RuntimeError> {
        let captured = self.cli.capture(&["info", "--format", "json"])?;
        if !captured.success {
            return Err(RuntimeError::Failed {
                runtime: "podman".into(),
                command: "info".into(),
                message: one_line(&captured.stderr),
            });
        }
        parse_info(&captured.stdout)
    }

    fn load(
        &self,
        store: &Store,
        image: &StoredImage,
        name: &str,
    ) -> Result<LoadedImage, RuntimeError> {
        let started = Instant::now();
        if let Some(parent) = self.view_parent() {
            self.pull_view(store, image, name, parent)?;
            return Ok(LoadedImage {
                name: name.to_string(),
                id: image.config.digest().to_string(),
                bytes: 0,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
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

    fn run(&self, spec: &RunSpec) -> Result<RunOutcome, RuntimeError> {
        self.cli.run(&self.run_command(spec), spec.capture)
    }

    /// CDI names the devices: `nvidia.com/gpu=all`, or one `--device` per GPU. The
    /// host needs a CDI spec for them (`nvidia-ctk cdi generate`), as podman's own
    /// GPU documentation says.
    fn gpu_args(&self, gpu: &GpuRequest) -> Vec<String> {
        let devices = match gpu {
            GpuRequest::All => vec!["all".to_string()],
            GpuRequest::Devices(devices) => devices.clone(),
        };
        devices
            .into_iter()
            .flat_map(|d| ["--device".to_string(), format!("nvidia.com/gpu={d}")])
            .collect()
    }
}

impl Podman {
    /// Where a [`LayoutView`] for this podman goes: the temporary directory, when
    /// podman runs here and that path can name a repository; else `None`.
    fn view_parent(&self) -> Option<PathBuf> {
        let remote = self.cli.global_args.iter().any(|a| {
            let flag = a.split('=').next().unwrap_or(a);
            matches!(flag, "--remote" | "-r" | "--url" | "--connection" | "-c")
        }) || ["CONTAINER_HOST", "CONTAINER_CONNECTION"]
            .iter()
            .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()));
        let parent = std::env::temp_dir().canonicalize().ok()?;
        let nameable = parent.to_str().is_some_and(|p| {
            p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"/._-".contains(&b))
                && !p.contains("/.")
        });
        (!remote && nameable).then_some(parent)
    }

    /// `podman pull` from a view of the image, then its own name on it and the
    /// view's name off it. The ID podman prints is checked, so no inspect follows.
    fn pull_view(
        &self,
        store: &Store,
        image: &StoredImage,
        name: &str,
        parent: PathBuf,
    ) -> Result<(), RuntimeError> {
        let _lease = store.lease()?;
        let view =
            LayoutView::write(store, image, &parent).map_err(|source| RuntimeError::View {
                runtime: "podman".into(),
                name: name.to_string(),
                dir: parent,
                source,
            })?;
        let source = format!("oci:{}:{VIEW_IMAGE}", view.path().display());
        let pulled = self.cli.capture(&["pull", "-q", &source])?;
        if !pulled.success {
            return Err(match LayoutView::find_corrupt(store, image) {
                Some(corrupt) => self.cli.failed("pull", &corrupt.to_string()),
                None => self.cli.failed("pull", &pulled.stderr),
            });
        }
        // podman prints the image ID, the config digest's hex: the image is the
        // stored one, and the tag (by ID) names it.
        let id = pulled.stdout.trim();
        let expected = image.config.digest();
        let right = id == expected.digest();
        let tagged = right.then(|| self.cli.capture(&["tag", id, name]));
        // The view's name goes whatever else happens.
        let view_name = format!("localhost{}:latest", view.path().display());
        let untagged = self.cli.capture(&["untag", id, &view_name])?;
        match tagged.transpose()? {
            None => {
                return Err(RuntimeError::WrongImage {
                    runtime: "podman".into(),
                    name: source,
                    expected: expected.to_string(),
                    actual: id.to_string(),
                })
            }
            Some(tagged) if !tagged.success => {
                return Err(self.cli.failed("tag", &tagged.stderr));
            }
            Some(_) => {}
        }
        if !untagged.success {
            tracing::warn!(image = id, name = view_name, stderr = %one_line(&untagged.stderr),
                "podman kept the name it gave the pulled layout");
        }
        Ok(())
    }

    /// The words after podman's global options that run `spec`: the OCI runtime,
    /// `run`, the configured run options, then the spec's own ([`run_argv`]).
    pub fn run_command(&self, spec: &RunSpec) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(runtime) = &self.oci_runtime {
            args.extend(["--runtime".to_string(), runtime.clone()]);
        }
        args.push("run".to_string());
        args.extend(self.run_args.iter().cloned());
        args.extend(run_argv(self, spec));
        args
    }
}

/// Reads `podman info --format json`.
fn parse_info(stdout: &str) -> Result<RuntimeInfo, RuntimeError> {
    let unreadable = |detail: &str| RuntimeError::Unreadable {
        runtime: "podman".into(),
        what: "info".into(),
        detail: detail.to_string(),
    };
    let info: serde_json::Value =
        serde_json::from_str(stdout).map_err(|e| unreadable(&e.to_string()))?;
    let version = info["version"]["Version"]
        .as_str()
        .ok_or_else(|| unreadable("no version.Version"))?;
    Ok(RuntimeInfo {
        name: "podman".into(),
        version: version.to_string(),
        rootless: info["host"]["security"]["rootless"]
            .as_bool()
            .ok_or_else(|| unreadable("no host.security.rootless"))?,
        storage_driver: info["store"]["graphDriverName"]
            .as_str()
            .ok_or_else(|| unreadable("no store.graphDriverName"))?
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            image: "localhost/tools/a:1".into(),
            command: vec!["nvidia-smi".into()],
            mounts: vec!["/data:/data:ro".parse().unwrap()],
            env: vec![("K".into(), "v".into())],
            workdir: Some("/data".into()),
            user: Some("1000:1000".into()),
            network_off: true,
            gpu: Some(GpuRequest::All),
            capture: false,
        }
    }

    #[test]
    fn a_gpu_request_becomes_cdi_devices() {
        let podman = Podman::new();
        assert_eq!(
            podman.run_command(&spec()).join(" "),
            "--runtime runc run --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --rm \
             -v /data:/data:ro -e K=v -w /data -u 1000:1000 --network none \
             --device nvidia.com/gpu=all localhost/tools/a:1 nvidia-smi"
        );
        let two = GpuRequest::Devices(vec!["0".into(), "GPU-5c1e".into()]);
        assert_eq!(
            podman.gpu_args(&two),
            [
                "--device",
                "nvidia.com/gpu=0",
                "--device",
                "nvidia.com/gpu=GPU-5c1e"
            ]
        );
    }

    #[test]
    fn info_names_rootless_and_the_storage_driver() {
        let info = parse_info(
            r#"{"host":{"security":{"rootless":true}},"store":{"graphDriverName":"overlay"},
                "version":{"Version":"4.3.1"}}"#,
        )
        .unwrap();
        assert!(info.rootless);
        assert_eq!(info.storage_driver, "overlay");
        assert_eq!(info.version, "4.3.1");
        let error = parse_info(r#"{"version":{"Version":"4.3.1"}}"#).unwrap_err();
        assert!(
            error.to_string().contains("host.security.rootless"),
            "{error}"
        );
    }
}
