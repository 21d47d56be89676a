//! One `stowage` run from a clean workspace, for the tests that pull from a registry
//! with auth turned on: a source store holding the fixture image, a destination
//! store, a HOME without credentials, what each run printed, and checks on both
//! (the pull landed, nothing was pulled, no secret was printed).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stowage_store::Store;
use tempfile::TempDir;

use super::fixtures::{self, Compression, Image};

const BIN: &str = env!("CARGO_BIN_EXE_stowage");

/// The logging the secret checks run under: `-vv` (debug logs), and `-vv` with
/// `RUST_LOG=trace`, which turns on every crate's trace logs (reqwest, hyper, h2,
/// rustls) as a user chasing a problem would.
pub const LOUD: [(&str, &[(&str, &str)]); 2] =
    [("DEBUG", &[]), ("TRACE", &[("RUST_LOG", "trace")])];

/// How long one stowage run may take before the test kills it.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The ref the fixture image has in the source store.
pub const SOURCE_REF: &str = "fixture";

/// What one stowage run left behind.
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with both streams unless the run succeeded.
    pub fn assert_success(&self, what: &str) {
        assert!(
            self.success,
            "{what} failed:\nstderr:\n{}\nstdout:\n{}",
            self.stderr, self.stdout
        );
    }

    /// Panics unless the run failed.
    pub fn assert_failure(&self, what: &str) {
        assert!(
            !self.success,
            "{what} succeeded, but must fail:\nstderr:\n{}\nstdout:\n{}",
            self.stderr, self.stdout
        );
    }

    /// The `--json` summary on stdout.
    pub fn report(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// Panics unless stderr holds log lines of `level` (else a secret check proves
    /// nothing).
    pub fn assert_logged(&self, level: &str) {
        assert!(
            self.stderr.contains(level),
            "no {level} log lines on stderr:\n{}",
            self.stderr
        );
    }

    /// Panics if any secret appears in stdout or stderr.
    pub fn assert_no_secret(&self, secrets: &[String]) {
        for secret in secrets {
            assert!(!secret.is_empty(), "an empty secret matches everything");
            for (stream, text) in [("stderr", &self.stderr), ("stdout", &self.stdout)] {
                assert!(
                    !text.contains(secret.as_str()),
                    "a secret ({} chars) appears in stowage's {stream}:\n{text}",
                    secret.len()
                );
            }
        }
    }
}

/// A source store holding the fixture image, a destination store for pulls, and a
/// HOME without any docker or podman credentials.
pub struct Workspace {
    _tmp: TempDir,
    source: Store,
    pub image: Image,
    dest: PathBuf,
    home: PathBuf,
}

impl Workspace {
    /// The fixture is [`fixtures::tagged_image`] (two layers), or with `many_layers`
    /// an image of four layers, so a pull fetches five blobs.
    pub fn new(many_layers: bool) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let source = Store::open(tmp.path().join("source")).expect("open the source store");
        let image = if many_layers {
            let layers = (0..4)
                .map(|i| {
                    let compression = if i % 2 == 0 {
                        Compression::Gzip
                    } else {
                        Compression::Zstd
                    };
                    fixtures::put_layer(
                        &source,
                        &fixtures::sample_tree(&format!("layer{i}")),
                        compression,
                    )
                })
                .collect();
            let image = fixtures::put_image(&source, "amd64", layers);
            fixtures::set_ref(&source, SOURCE_REF, &image.descriptor);
            image
        } else {
            fixtures::tagged_image(&source, SOURCE_REF, "amd64")
        };
        let home = tmp.path().join("home");
        fs::create_dir(&home).expect("mkdir home");
        Self {
            dest: tmp.path().join("dest"),
            _tmp: tmp,
            source,
            image,
            home,
        }
    }

    pub fn source_dir(&self) -> &Path {
        self.source.root()
    }

    pub fn manifest_digest(&self) -> String {
        self.image.descriptor.digest().to_string()
    }

    /// Runs `stowage --store DEST args`, feeding `stdin` when given; the environment
    /// holds no credentials (HOME is empty; DOCKER_CONFIG, REGISTRY_AUTH_FILE,
    /// XDG_RUNTIME_DIR and RUST_LOG are unset) unless `env` adds some.
    pub fn stowage(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
        let out_dir = tempfile::tempdir().expect("tempdir");
        let (out_path, err_path) = (out_dir.path().join("out"), out_dir.path().join("err"));
        let mut command = Command::new(BIN);
        command
            .arg("--store")
            .arg(&self.dest)
            .args(args)
            .env("HOME", &self.home)
            .env_remove("DOCKER_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("RUST_LOG")
            .env_remove("STOWAGE_STORE")
            .envs(env.iter().copied())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(File::create(&out_path).expect("stdout file"))
            .stderr(File::create(&err_path).expect("stderr file"));
        let mut child = command.spawn().expect("run stowage");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
        let deadline = Instant::now() + RUN_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for stowage") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "stowage {args:?} ran longer than {RUN_TIMEOUT:?}; stderr:\n{}",
                    fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            success: status.success(),
            stdout: fs::read_to_string(&out_path).expect("read stdout"),
            stderr: fs::read_to_string(&err_path).expect("read stderr"),
        }
    }

    /// Checks a successful `--json` pull of `reference`: the registry's manifest is
    /// the fixture's, `blobs` blobs came over the wire, and the store names it.
    pub fn assert_pulled(&self, run: &Run, reference: &str, blobs: usize) {
        run.assert_success(&format!("stowage pull {reference}"));
        let report = run.report();
        assert_eq!(
            report["manifest_digest"],
            self.manifest_digest(),
            "{report}"
        );
        assert_eq!(
            report["layers"],
            self.image.layers.len(),
            "layers in {report}"
        );
        assert_eq!(report["blobs_fetched"], blobs, "blobs in {report}");
        let name = report["reference"].as_str().expect("a reference");
        let store = Store::open(&self.dest).expect("open the pulled store");
        let stored = store
            .resolve_ref(name)
            .expect("read refs")
            .unwrap_or_else(|| panic!("no ref {name} in the store after the pull"));
        assert_eq!(stored.digest().to_string(), self.manifest_digest());
    }

    /// Removes the destination store, so the next pull fetches everything again.
    pub fn clear_dest(&self) {
        if self.dest.exists() {
            fs::remove_dir_all(&self.dest).expect("remove the destination store");
        }
    }

    /// Panics if the destination store names any image.
    pub fn assert_nothing_pulled(&self) {
        if !self.dest.exists() {
            return;
        }
        let refs = Store::open(&self.dest)
            .expect("open the pulled store")
            .refs()
            .expect("read refs");
        assert!(refs.is_empty(), "a failed pull left refs: {refs:?}");
    }
}
