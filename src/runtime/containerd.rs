//! containerd, driven through `ctr`, the client Debian and every containerd
//! install ship. `ctr images import -` reads an oci-archive on stdin, names the image
//! after the index's `org.opencontainers.image.ref.name` annotation (kept only when
//! it starts with `--base-name`, which is the name's repository) and unpacks it into
//! the default snapshotter, as kubelet expects. containerd records an image as its
//! manifest digest; the config digest (the ID the other runtimes report) is read
//! from that manifest in containerd's content store.
//!
//! Configuration (for [`Containerd::from_env`]; the `stowage` command also takes
//! `--containerd-address` and `--namespace`):
//! - `CONTAINERD_ADDRESS`: containerd's socket, default
//!   `/run/containerd/containerd.sock` ([`Containerd::DEFAULT_ADDRESS`]);
//! - `CONTAINERD_NAMESPACE`: the namespace images go into, default `k8s.io`
//!   ([`Containerd::DEFAULT_NAMESPACE`]), the one kubelet's CRI plugin reads.
//!
//! A socket that is not there is refused before `ctr` is asked (it would wait 10 s
//! for one to appear). `stowage run` does not drive containerd: kubelet (or
//! `ctr run`) starts its containers.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::process::{one_line, Cli};
use super::{
    archive, check_loaded, ContainerRuntime, GpuRequest, LoadedImage, RunOutcome, RunSpec,
    RuntimeError, RuntimeImage, RuntimeInfo, StoredImage,
};
use crate::store::Store;

/// containerd through `ctr`.
#[derive(Debug, Clone)]
pub struct Containerd {
    cli: Cli,
    address: PathBuf,
    namespace: String,
}

/// One line of `ctr images check`: an image and whether all its content is there.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checked {
    media_type: String,
    digest: String,
    /// `complete`, `incomplete`, ... as ctr words it (`complete (3/3)`).
    status: String,
}

impl Checked {
    fn complete(&self) -> bool {
        self.status.starts_with("complete")
    }
}

impl Containerd {
    /// containerd's socket unless told otherwise.
    pub const DEFAULT_ADDRESS: &'static str = "/run/containerd/containerd.sock";
    /// The namespace kubelet's CRI plugin keeps its images in.
    pub const DEFAULT_NAMESPACE: &'static str = "k8s.io";
    /// The environment variable `ctr` itself reads for the socket.
    pub const ADDRESS_ENV: &'static str = "CONTAINERD_ADDRESS";
    /// The environment variable `ctr` itself reads for the namespace.
    pub const NAMESPACE_ENV: &'static str = "CONTAINERD_NAMESPACE";

    /// `ctr` from PATH talking to the containerd at `address`, in `namespace`.
    pub fn new(address: impl Into<PathBuf>, namespace: impl Into<String>) -> Self {
        let address = address.into();
        let namespace = namespace.into();
        let global_args = vec![
            "--address".to_string(),
            address.display().to_string(),
            "--namespace".to_string(),
            namespace.clone(),
        ];
        Self {
            cli: Cli {
                runtime: "containerd",
                program: "ctr".to_string(),
                global_args,
            },
            address,
            namespace,
        }
    }

    /// [`Containerd::new`] with `CONTAINERD_ADDRESS` and `CONTAINERD_NAMESPACE`, or
    /// the defaults.
    pub fn from_env() -> Self {
        let value = |key: &str, default: &str| {
            std::env::var(key)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        Self::new(
            value(Self::ADDRESS_ENV, Self::DEFAULT_ADDRESS),
            value(Self::NAMESPACE_ENV, Self::DEFAULT_NAMESPACE),
        )
    }

    /// Runs this program instead of `ctr` from PATH.
    pub fn with_program(mut self, program: impl Into<String>) -> Self {
        self.cli.program = program.into();
        self
    }

    /// The socket it talks to.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The namespace images go into.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A socket at the address, or why not.
    fn socket_present(&self) -> Result<(), RuntimeError> {
        let not_running = |what: String| RuntimeError::NotRunning {
            runtime: "containerd".into(),
            message: format!(
                "{what} (give containerd's socket with --containerd-address or {})",
                Self::ADDRESS_ENV
            ),
        };
        match std::fs::metadata(&self.address) {
            Ok(meta) if meta.file_type().is_socket() => Ok(()),
            Ok(_) => Err(not_running(format!(
                "{} is not a socket",
                self.address.display()
            ))),
            Err(e) => Err(not_running(format!(
                "no socket at {}: {e}",
                self.address.display()
            ))),
        }
    }

    /// `ctr images check name==NAME`: the image and its status, if containerd names it.
    fn check(&self, name: &str) -> Result<Option<Checked>, RuntimeError> {
        self.socket_present()?;
        let filter = format!("name=={name}");
        let captured = self.cli.capture(&["images", "check", &filter])?;
        if !captured.success {
            return Err(self.cli.failed("images check", &captured.stderr));
        }
        parse_check(&captured.stdout, name)
    }

    /// The config digest of the manifest `digest` in containerd's content store.
    fn config_of(&self, digest: &str) -> Result<String, RuntimeError> {
        let captured = self.cli.capture(&["content", "get", digest])?;
        if !captured.success {
            return Err(self.cli.failed("content get", &captured.stderr));
        }
        let unreadable = |detail: String| RuntimeError::Unreadable {
            runtime: "containerd".into(),
            what: format!("manifest {digest}"),
            detail,
        };
        let manifest: serde_json::Value =
            serde_json::from_str(&captured.stdout).map_err(|e| unreadable(e.to_string()))?;
        manifest["config"]["digest"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| unreadable("no config.digest".into()))
    }
}

impl ContainerRuntime for Containerd {
    fn name(&self) -> &str {
        "containerd"
    }

    /// `ctr version`: the server's version, once the socket is there. containerd
    /// does not say which snapshotter is its default: `storage_driver` is the one
    /// `CONTAINERD_SNAPSHOTTER` names for ctr, else `default`.
    fn health_check(&self) -> Result<RuntimeInfo, RuntimeError> {
        self.socket_present()?;
        let captured = self.cli.capture(&["version"])?;
        if !captured.success {
            return Err(RuntimeError::NotRunning {
                runtime: "containerd".into(),
                message: one_line(&captured.stderr),
            });
        }
        let version = server_version(&captured.stdout).ok_or_else(|| RuntimeError::Unreadable {
            runtime: "containerd".into(),
            what: "version".into(),
            detail: "no Server: Version line".into(),
        })?;
        Ok(RuntimeInfo {
            name: "containerd".into(),
            version,
            rootless: false,
            storage_driver: std::env::var("CONTAINERD_SNAPSHOTTER")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into()),
        })
    }

    /// Streams the oci-archive into `ctr images import`, then checks containerd
    /// names the image with all its content, as the expected manifest, whose config
    /// is the expected ID.
    fn load(
        &self,
        store: &Store,
        image: &StoredImage,
        name: &str,
    ) -> Result<LoadedImage, RuntimeError> {
        self.socket_present()?;
        let started = Instant::now();
        let base = repository_of(name);
        let bytes = self.cli.feed(
            "images import",
            &["images", "import", "--base-name", base, "-"],
            |stdin| archive::write_oci_archive(store, image, name, stdin),
        )?;
        let checked = self.check(name)?.ok_or_else(|| RuntimeError::NotLoaded {
            runtime: "containerd".into(),
            name: name.to_string(),
        })?;
        let expected = image.manifest.digest().to_string();
        if checked.digest != expected {
            return Err(RuntimeError::WrongImage {
                runtime: "containerd".into(),
                name: name.to_string(),
                expected,
                actual: checked.digest,
            });
        }
        if !checked.complete() {
            return Err(RuntimeError::Failed {
                runtime: "containerd".into(),
                command: "images import".into(),
                message: format!("{name} is {} after the import", checked.status),
            });
        }
        check_loaded(self, image, name, bytes, started)
    }

    /// The image containerd names `image_ref`, when all its content is there: its
    /// ID is the config digest of its manifest (an index's own digest for an index),
    /// its one recorded digest the manifest's.
    fn inspect(&self, image_ref: &str) -> Result<Option<RuntimeImage>, RuntimeError> {
        let Some(checked) = self.check(image_ref)? else {
            return Ok(None);
        };
        if !checked.complete() {
            tracing::debug!(image = image_ref, status = %checked.status, "incomplete in containerd");
            return Ok(None);
        }
        let id = if is_index(&checked.media_type) {
            checked.digest.clone()
        } else {
            self.config_of(&checked.digest)?
        };
        Ok(Some(RuntimeImage {
            id,
            tags: vec![image_ref.to_string()],
            digests: vec![format!("{}@{}", repository_of(image_ref), checked.digest)],
        }))
    }

    fn run(&self, _spec: &RunSpec) -> Result<RunOutcome, RuntimeError> {
        Err(RuntimeError::Unsupported {
            runtime: "containerd".into(),
            what: "run: kubelet or `ctr run` starts containerd's containers; \
                   stowage warm and load put images there"
                .into(),
        })
    }

    fn gpu_args(&self, _gpu: &GpuRequest) -> Vec<String> {
        Vec::new()
    }
}

/// `host/path` of `host/path:tag` (a name [`super::runtime_name`] made).
fn repository_of(name: &str) -> &str {
    let without_digest = name.split('@').next().unwrap_or_default();
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    match without_digest[last_slash..].rfind(':') {
        Some(i) => &without_digest[..last_slash + i],
        None => without_digest,
    }
}

fn is_index(media_type: &str) -> bool {
    media_type.ends_with("image.index.v1+json") || media_type.ends_with("manifest.list.v2+json")
}

/// The server's version from `ctr version`.
fn server_version(stdout: &str) -> Option<String> {
    let server = stdout.split("Server:").nth(1)?;
    server.lines().find_map(|line| {
        line.trim()
            .strip_prefix("Version:")
            .map(|v| v.trim().to_string())
    })
}

/// Reads `ctr images check`'s table (REF TYPE DIGEST STATUS SIZE UNPACKED) for
/// the row of `name`.
fn parse_check(stdout: &str, name: &str) -> Result<Option<Checked>, RuntimeError> {
    for line in stdout.lines().skip(1) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&name) {
            continue;
        }
        if words.len() < 4 || !words[2].contains(':') {
            return Err(RuntimeError::Unreadable {
                runtime: "containerd".into(),
                what: "images check output".into(),
                detail: format!("row {line:?}"),
            });
        }
        return Ok(Some(Checked {
            media_type: words[1].to_string(),
            digest: words[2].to_string(),
            status: words[3].to_string(),
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_rows_are_read_by_name() {
        let out = "REF TYPE DIGEST STATUS SIZE UNPACKED \n\
            127.0.0.1:5000/tools/a:1 application/vnd.oci.image.manifest.v1+json \
            sha256:1e9c complete (2/2) 280.0 B/280.0 B true\n";
        let checked = parse_check(out, "127.0.0.1:5000/tools/a:1")
            .unwrap()
            .unwrap();
        assert_eq!(checked.digest, "sha256:1e9c");
        assert!(checked.complete());
        assert_eq!(parse_check(out, "127.0.0.1:5000/tools/b:1").unwrap(), None);
        let bad = "REF TYPE DIGEST\nx/y:1 application/json\n";
        assert!(parse_check(bad, "x/y:1").is_err());
    }

    #[test]
    fn names_split_into_repository_and_tag() {
        assert_eq!(
            repository_of("127.0.0.1:5000/tools/a:1"),
            "127.0.0.1:5000/tools/a"
        );
        assert_eq!(repository_of("localhost/x"), "localhost/x");
        assert_eq!(repository_of("h:5/x@sha256:ab"), "h:5/x");
    }

    #[test]
    fn the_server_version_is_read_not_the_clients() {
        let out = "Client:\n  Version:  1.6.20~ds1\n  Revision: r\n\nServer:\n  \
                   Version:  1.6.21\n  Revision: r\n";
        assert_eq!(server_version(out).as_deref(), Some("1.6.21"));
        assert_eq!(server_version("Client:\n  Version: 1\n"), None);
    }

    #[test]
    fn a_missing_socket_is_refused_without_asking_ctr() {
        let dir = tempfile::tempdir().unwrap();
        let containerd = Containerd::new(dir.path().join("none.sock"), "k8s.io")
            .with_program("/nonexistent/ctr");
        let error = containerd.health_check().unwrap_err().to_string();
        assert!(error.contains("no socket at"), "{error}");
        assert!(error.contains("--containerd-address"), "{error}");
    }
}
