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
    check_loaded, docker_archive, parse_inspect, ContainerRuntime, LoadedImage, RunSpec,
    RuntimeError, RuntimeImage, RuntimeInfo, StoredImage,
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

    /// Asks the daemon for its version: a daemon that is down (or a socket that
    /// cannot be reached) is "docker is not running: <docker's message>".
    fn health_check(&self) -> Result<RuntimeInfo, RuntimeError> {
        let captured = self
            .cli
            .capture(&["version", "--format", "{{.Server.Version}}"])?;
        if !captured.success {
            return Err(RuntimeError::NotRunning {
                runtime: "docker".into(),
                message: one_line(&captured.stderr),
            });
        }
        Ok(RuntimeInfo {
            name: "docker".into(),
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

    fn run(&self, spec: &RunSpec) -> Result<i32, RuntimeError> {
        let mut args = vec!["run", "--rm", spec.image.as_str()];
        args.extend(spec.command.iter().map(String::as_str));
        self.cli.interactive(&args)
    }
}
