//! docker, driven through its command line. The engine here is 20.10: `docker load`
//! reads only a docker-archive, and no zstd layers in it, so stowage writes one with
//! zstd layers decompressed on the fly ([`docker_archive::write_docker_archive`]). Its image
//! ID is `sha256:` and the config digest's hex.
//!
//! `STOWAGE_DOCKER_ARGS` (for [`Docker::from_env`]) adds global options to every
//! call, split on whitespace, e.g. `--host unix:///run/other.sock`; plain `DOCKER_HOST`
//! and docker contexts work as they do for docker itself.

use std::time::Instant;

use super::process::{one_line, Cli};
use super::{
    check_loaded, docker_archive, parse_inspect, run_argv, ContainerRuntime, GpuRequest,
    LoadedImage, RunOutcome, RunSpec, RuntimeError, RuntimeImage, RuntimeInfo, StoredImage,
};
use crate::store::Store;

/// Global options for every docker call.
pub const ARGS_ENV: &str = "STOWAGE_DOCKER_ARGS";

/// docker through its command line.
#[derive(Debug, Clone)]
pub struct Docker {
    cli: Cli,
}

impl Default for Docker {
    fn default() -> Self {
        Self::new()
    }
}

impl Docker {
    /// `docker` from PATH, talking to the daemon it is configured for.
    pub fn new() -> Self {
        Self {
            cli: Cli {
                runtime: "docker",
                program: "docker".to_string(),
                global_args: Vec::new(),
            },
        }
    }

    /// [`Docker::new`] with the global options of `STOWAGE_DOCKER_ARGS`.
    pub fn from_env() -> Self {
        let docker = Self::new();
        match super::env_words(ARGS_ENV) {
            Some(args) => docker.with_args(args),
            None => docker,
        }
    }

    /// Adds global options to every call (`--host`, `--context`).
    pub fn with_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.cli
            .global_args
            .extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs this program instead of `docker` from PATH.
    pub fn with_program(mut self, program: impl Into<String>) -> Self {
        self.cli.program = program.into();
        self
    }
}

impl ContainerRuntime for Docker {
    fn name(&self) -> &str {
        "docker"
    }

    /// `docker info`: a daemon that is down (or a socket that cannot be reached) is
    /// "docker is not running: <docker's message>"; one that answers tells its
    /// version, storage driver and whether it runs rootless.
    fn health_check(&self) -> Result<RuntimeInfo, RuntimeError> {
        let captured = self.cli.capture(&["info", "--format", "{{json .}}"])?;
        if !captured.success {
            return Err(RuntimeError::NotRunning {
                runtime: "docker".into(),
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
        let bytes = self.cli.feed("load", &["load"], |stdin| {
            docker_archive::write_docker_archive(store, image, name, stdin)
        })?;
        check_loaded(self, image, name, bytes, started)
    }

    fn inspect(&self, image_ref: &str) -> Result<Option<RuntimeImage>, RuntimeError> {
        let captured = self.cli.capture(&["image", "inspect", image_ref])?;
        if captured.success {
            parse_inspect("docker", &captured.stdout).map(Some)
        } else if captured
            .stderr
            .to_ascii_lowercase()
            .contains("no such image")
        {
            Ok(None)
        } else {
            Err(self.cli.failed("image inspect", &captured.stderr))
        }
    }

    fn run(&self, spec: &RunSpec) -> Result<RunOutcome, RuntimeError> {
        self.cli.run(&self.run_command(spec), spec.capture)
    }

    /// `--gpus all`, or `--gpus "device=0,1"`: docker reads the value as CSV, so a
    /// list of devices is quoted inside it, as docker's own documentation writes it.
    /// The host needs the NVIDIA Container Toolkit.
    fn gpu_args(&self, gpu: &GpuRequest) -> Vec<String> {
        let value = match gpu {
            GpuRequest::All => "all".to_string(),
            GpuRequest::Devices(devices) => format!("\"device={}\"", devices.join(",")),
        };
        vec!["--gpus".to_string(), value]
    }
}

impl Docker {
    /// The words after docker's global options that run `spec`: `run`, then the
    /// spec's own ([`run_argv`]).
    pub fn run_command(&self, spec: &RunSpec) -> Vec<String> {
        let mut args = vec!["run".to_string()];
        args.extend(run_argv(self, spec));
        args
    }
}

/// Reads `docker info --format '{{json .}}'`.
fn parse_info(stdout: &str) -> Result<RuntimeInfo, RuntimeError> {
    let unreadable = |detail: &str| RuntimeError::Unreadable {
        runtime: "docker".into(),
        what: "info".into(),
        detail: detail.to_string(),
    };
    let info: serde_json::Value =
        serde_json::from_str(stdout).map_err(|e| unreadable(&e.to_string()))?;
    let version = info["ServerVersion"]
        .as_str()
        .ok_or_else(|| unreadable("no ServerVersion"))?;
    let rootless = info["SecurityOptions"]
        .as_array()
        .is_some_and(|options| options.iter().any(|o| o == "name=rootless"));
    Ok(RuntimeInfo {
        name: "docker".into(),
        version: version.to_string(),
        rootless,
        storage_driver: info["Driver"].as_str().unwrap_or_default().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_request_becomes_gpus() {
        let docker = Docker::new();
        let spec = RunSpec {
            image: "localhost/tools/a:1".into(),
            command: vec!["nvidia-smi".into()],
            mounts: vec!["/data:/data:ro".parse().unwrap()],
            env: vec![("K".into(), "v".into())],
            workdir: Some("/data".into()),
            network_off: true,
            gpu: Some(GpuRequest::All),
            ..RunSpec::default()
        };
        assert_eq!(
            docker.run_command(&spec).join(" "),
            "run --rm -v /data:/data:ro -e K=v -w /data --network none --gpus all \
             localhost/tools/a:1 nvidia-smi"
        );
        let two = GpuRequest::Devices(vec!["0".into(), "1".into()]);
        assert_eq!(docker.gpu_args(&two), ["--gpus", "\"device=0,1\""]);
    }

    #[test]
    fn info_names_rootless_and_the_storage_driver() {
        let info = parse_info(
            r#"{"ServerVersion":"20.10.24","Driver":"overlay2",
                "SecurityOptions":["name=seccomp,profile=default","name=rootless"]}"#,
        )
        .unwrap();
        assert!(info.rootless);
        assert_eq!(info.storage_driver, "overlay2");
        let info = parse_info(
            r#"{"ServerVersion":"20.10.24","Driver":"fuse-overlayfs",
            "SecurityOptions":["name=seccomp,profile=default"]}"#,
        )
        .unwrap();
        assert!(!info.rootless);
    }
}
