//! What the serve tests share: a `stowage serve` process on a free loopback port,
//! curl's view of an HTTP reply, and the digest an OCI layout directory holds.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::pulling::BIN;

/// A `stowage serve` process on a free loopback port.
pub struct Served {
    child: Child,
    pub addr: String,
    _stdout: BufReader<ChildStdout>,
}

/// How to start `stowage serve` beyond [`Served::start`]'s defaults.
#[derive(Default)]
pub struct ServeSetup<'a> {
    /// `serve` arguments after `--addr`.
    pub args: &'a [&'a str],
    /// The open-file limit (soft and hard) to run under, set with util-linux `prlimit`.
    pub nofile: Option<u64>,
    /// A file for serve's stderr, inherited when `None`.
    pub stderr: Option<&'a Path>,
}

impl Served {
    /// Starts `stowage --store STORE serve --addr 127.0.0.1:0` and reads the address
    /// from the line it prints.
    pub fn start(store: &Path) -> Self {
        Self::start_with(store, &ServeSetup::default())
    }

    /// [`Served::start`] with more arguments, an open-file limit or stderr to a file.
    pub fn start_with(store: &Path, setup: &ServeSetup) -> Self {
        Self::start_on(store, "127.0.0.1:0", setup)
    }

    /// [`Served::start_with`] listening on `addr` (another loopback address, such as
    /// `127.0.0.3:0`, for a fleet of nodes on one machine).
    pub fn start_on(store: &Path, addr: &str, setup: &ServeSetup) -> Self {
        let mut command = match setup.nofile {
            // prlimit execs the command: the child's pid is serve's.
            Some(n) => {
                let mut command = Command::new("prlimit");
                command.arg(format!("--nofile={n}:{n}")).arg("--").arg(BIN);
                command
            }
            None => Command::new(BIN),
        };
        command
            .arg("--store")
            .arg(store)
            .args(["serve", "--addr", addr])
            .args(setup.args)
            .stdout(Stdio::piped());
        match setup.stderr {
            Some(path) => command.stderr(std::fs::File::create(path).unwrap()),
            None => command.stderr(Stdio::inherit()),
        };
        let mut child = command.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let expected = format!("serving {} on http://", store.display());
        let addr = line
            .trim()
            .strip_prefix(&expected)
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Self {
            child,
            addr,
            _stdout: stdout,
        }
    }

    /// The serve process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `docker://ADDR/repo:tag`
    pub fn docker(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.addr)
    }

    /// Sends SIGTERM and waits (at most 20 s) for the process to exit.
    pub fn stop(&mut self) -> ExitStatus {
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP reply as curl saw it.
pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    /// The first error code of a distribution-spec error document.
    pub fn error_code(&self) -> String {
        assert_eq!(self.header("content-type"), "application/json");
        let document: Value = serde_json::from_slice(&self.body).unwrap();
        document["errors"][0]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error document: {document}"))
            .to_string()
    }
}

/// `curl -i ARGS`, split into status, headers (lower-case names) and body.
pub fn curl(args: &[&str]) -> Reply {
    let output = Command::new("curl")
        .args(["-sS", "-i"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let raw = output.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// The digest of the one image an OCI layout directory holds.
pub fn layout_digest(dir: &Path) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    manifests[0]["digest"].as_str().unwrap().to_string()
}
