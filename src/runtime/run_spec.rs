//! What a container run asks for, and the `run` argv both runtimes share.
//!
//! A [`RunSpec`] is the environment tool's request: the image and command, bind
//! mounts, environment, working directory, user, whether the network is off, and a
//! GPU request. [`run_argv`] turns it into the words after `run` for podman or
//! docker; the two differ only in how a GPU is asked for
//! ([`ContainerRuntime::gpu_args`]). The container's exit code comes back in a
//! [`RunOutcome`], with its output either on the caller's own stdout and stderr or
//! captured.

use std::path::PathBuf;
use std::str::FromStr;

use super::ContainerRuntime;

/// A container to start.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    /// A name or ID the runtime knows.
    pub image: String,
    /// The command and arguments; empty runs the image's own.
    pub command: Vec<String>,
    /// Host paths bound into the container, in order.
    pub mounts: Vec<Mount>,
    /// Environment variables set in the container, in order (a later one wins).
    pub env: Vec<(String, String)>,
    /// The working directory inside the container; `None` keeps the image's.
    pub workdir: Option<String>,
    /// `user[:group]` (names or IDs) to run as; `None` keeps the image's.
    pub user: Option<String>,
    /// No network at all inside the container (`--network none`).
    pub network_off: bool,
    /// GPUs to hand to the container.
    pub gpu: Option<GpuRequest>,
    /// Capture the container's stdout and stderr into the [`RunOutcome`] instead of
    /// passing them through on the caller's own.
    pub capture: bool,
}

/// A host path bound into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Absolute path on the host.
    pub host: PathBuf,
    /// Absolute path inside the container.
    pub container: String,
    pub read_only: bool,
}

/// GPUs a container is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuRequest {
    /// Every GPU the host has.
    All,
    /// These devices, by index or UUID as the NVIDIA tools name them.
    Devices(Vec<String>),
}

/// How a container ended.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunOutcome {
    /// The container's exit code (128 + the signal's number when a signal ended the
    /// runtime's client).
    pub exit_code: i32,
    /// What it printed, when [`RunSpec::capture`] asked for it; empty otherwise.
    #[serde(skip)]
    pub stdout: Vec<u8>,
    #[serde(skip)]
    pub stderr: Vec<u8>,
}

/// Why a mount, variable or GPU request given as text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunSpecError {
    #[error("mount {given:?}: expected HOST:CONTAINER[:ro|:rw], {found}")]
    Mount { given: String, found: String },
    #[error("environment variable {given:?}: expected KEY=VALUE, {found}")]
    Env { given: String, found: String },
    #[error("GPU request {given:?}: expected `all` or device indexes like 0,1")]
    Gpu { given: String },
}

impl FromStr for Mount {
    type Err = RunSpecError;

    /// `HOST:CONTAINER`, `HOST:CONTAINER:ro` or `HOST:CONTAINER:rw`, as `-v` reads
    /// it in podman and docker. Both paths must be absolute (docker takes a relative
    /// host "path" for a volume name) and hold no `:`, which the runtimes cannot
    /// tell from the separator either.
    fn from_str(given: &str) -> Result<Self, Self::Err> {
        let refuse = |found: &str| RunSpecError::Mount {
            given: given.to_string(),
            found: found.to_string(),
        };
        let parts: Vec<&str> = given.split(':').collect();
        let (host, container, read_only) = match parts.as_slice() {
            [host, container] => (*host, *container, false),
            [host, container, "ro"] => (*host, *container, true),
            [host, container, "rw"] => (*host, *container, false),
            [_, _, option] => return Err(refuse(&format!("found the option {option:?}"))),
            [_] => return Err(refuse("found no `:`")),
            _ => return Err(refuse("found more than two `:`")),
        };
        if !host.starts_with('/') {
            return Err(refuse(&format!("found the relative host path {host:?}")));
        }
        if !container.starts_with('/') {
            return Err(refuse(&format!(
                "found the relative container path {container:?}"
            )));
        }
        Ok(Mount {
            host: PathBuf::from(host),
            container: container.to_string(),
            read_only,
        })
    }
}

impl FromStr for GpuRequest {
    type Err = RunSpecError;

    /// `all`, or a comma-separated list of devices (`0,1`, optionally written
    /// `device=0,1` as docker's `--gpus` takes it).
    fn from_str(given: &str) -> Result<Self, Self::Err> {
        if given == "all" {
            return Ok(GpuRequest::All);
        }
        let list = given.strip_prefix("device=").unwrap_or(given);
        let devices: Vec<String> = list.split(',').map(str::to_string).collect();
        let valid = |d: &String| {
            !d.is_empty()
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if devices.iter().all(valid) {
            Ok(GpuRequest::Devices(devices))
        } else {
            Err(RunSpecError::Gpu {
                given: given.to_string(),
            })
        }
    }
}

/// `KEY=VALUE` as a pair. The key must be non-empty and hold no `=`; the value may
/// be anything, `=` included.
pub fn parse_env(given: &str) -> Result<(String, String), RunSpecError> {
    let refuse = |found: &str| RunSpecError::Env {
        given: given.to_string(),
        found: found.to_string(),
    };
    let (key, value) = given
        .split_once('=')
        .ok_or_else(|| refuse("found no `=`"))?;
    if key.is_empty() {
        return Err(refuse("found an empty key"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// `-v HOST:CONTAINER[:ro]` for each mount, the form both runtimes read.
pub fn volume_args(mounts: &[Mount]) -> Vec<String> {
    let mut args = Vec::new();
    for mount in mounts {
        let mut volume = format!("{}:{}", mount.host.display(), mount.container);
        if mount.read_only {
            volume.push_str(":ro");
        }
        args.extend(["-v".to_string(), volume]);
    }
    args
}

/// The words after `run` (and the runtime's own run options) for `spec`: the
/// container is removed when it exits, then mounts, environment, working directory,
/// user, network, GPUs, the image and the command.
pub fn run_argv(runtime: &dyn ContainerRuntime, spec: &RunSpec) -> Vec<String> {
    let mut args = vec!["--rm".to_string()];
    args.extend(runtime.mount_args(&spec.mounts));
    for (key, value) in &spec.env {
        args.extend(["-e".to_string(), format!("{key}={value}")]);
    }
    if let Some(dir) = &spec.workdir {
        args.extend(["-w".to_string(), dir.clone()]);
    }
    if let Some(user) = &spec.user {
        args.extend(["-u".to_string(), user.clone()]);
    }
    if spec.network_off {
        args.extend(["--network".to_string(), "none".to_string()]);
    }
    if let Some(gpu) = &spec.gpu {
        args.extend(runtime.gpu_args(gpu));
    }
    // `--` would end podman's options but docker 20.10 takes it for the image name:
    // the image comes right after the options in both.
    args.push(spec.image.clone());
    args.extend(spec.command.iter().cloned());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_read_as_podman_and_docker_read_them() {
        let mount: Mount = "/data/in:/in:ro".parse().unwrap();
        assert_eq!(
            mount,
            Mount {
                host: "/data/in".into(),
                container: "/in".into(),
                read_only: true
            }
        );
        assert!(!"/a:/b".parse::<Mount>().unwrap().read_only);
        assert!(!"/a:/b:rw".parse::<Mount>().unwrap().read_only);
        for (given, found) in [
            ("/a", "found no `:`"),
            ("data:/in", "found the relative host path \"data\""),
            ("/a:in", "found the relative container path \"in\""),
            ("/a:/b:z", "found the option \"z\""),
            ("/a:/b:ro:x", "found more than two `:`"),
        ] {
            let error = given.parse::<Mount>().unwrap_err().to_string();
            assert!(error.contains(found), "{given}: {error}");
            assert!(error.contains("expected HOST:CONTAINER"), "{error}");
        }
        assert_eq!(
            volume_args(&["/a:/b:ro".parse().unwrap(), "/c:/d".parse().unwrap()]),
            ["-v", "/a:/b:ro", "-v", "/c:/d"]
        );
    }

    #[test]
    fn environment_and_gpu_requests_parse() {
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert_eq!(parse_env("A=").unwrap(), ("A".into(), String::new()));
        assert!(parse_env("=b")
            .unwrap_err()
            .to_string()
            .contains("empty key"));
        assert!(parse_env("A").unwrap_err().to_string().contains("no `=`"));
        assert_eq!("all".parse::<GpuRequest>().unwrap(), GpuRequest::All);
        let two = GpuRequest::Devices(vec!["0".into(), "1".into()]);
        assert_eq!("0,1".parse::<GpuRequest>().unwrap(), two);
        assert_eq!("device=0,1".parse::<GpuRequest>().unwrap(), two);
        assert!("0,".parse::<GpuRequest>().is_err());
        assert!("a b".parse::<GpuRequest>().is_err());
    }
}
