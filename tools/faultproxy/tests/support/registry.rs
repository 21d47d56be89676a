//! A real upstream for the proxy's tests: Debian's `docker-registry` on a free
//! loopback port, storage in a tempdir, killed when dropped.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::client::{request, Reply};

/// The registry binary Debian installs.
const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running registry.
pub struct Registry {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Registry {
    /// Starts a registry and waits until `GET /v2/` answers 200 (retrying on another
    /// port if the one picked was taken in between).
    pub fn start() -> Registry {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(registry) => return registry,
                Err(e) => last = e,
            }
        }
        panic!("docker-registry did not start: {last}");
    }

    fn try_start() -> Result<Registry, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?;
        let config = dir.path().join("config.yml");
        let yaml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("storage").display()
        );
        fs::write(&config, yaml).map_err(|e| e.to_string())?;
        let log = fs::File::create(dir.path().join("registry.log")).map_err(|e| e.to_string())?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {REGISTRY_BIN}: {e}"))?;
        let mut registry = Registry {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = registry.child.try_wait() {
                return Err(format!("exited early: {status}"));
            }
            if request(&registry.addr(), "GET", "/v2/", &[], Vec::new()).status == 200 {
                return Ok(registry);
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(format!("not ready on {addr}"))
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Pushes `data` as a blob of repository `repo` through `addr` (the registry or a
/// proxy) with a monolithic upload (POST, then PUT with the digest); returns the
/// digest and the replies to the POST and PUT.
pub fn push_blob(addr: &str, repo: &str, data: &[u8]) -> (String, Reply, Reply) {
    let digest = digest(data);
    let post = request(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        Vec::new(),
    );
    assert_eq!(post.status, 202, "POST upload: {post:?}");
    let location = post.header("location").expect("upload Location");
    let sep = if location.contains('?') { '&' } else { '?' };
    let target = format!("{location}{sep}digest={digest}");
    let (host, path) = split_url(&target);
    assert_eq!(host, addr, "the Location points back at {addr}");
    let put = request(
        addr,
        "PUT",
        path,
        &[("content-type", "application/octet-stream")],
        data.to_vec(),
    );
    assert_eq!(put.status, 201, "PUT upload: {put:?}");
    (digest, post, put)
}

/// Splits `http://HOST/PATH` into its host and path.
pub fn split_url(url: &str) -> (&str, &str) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let slash = rest.find('/').unwrap_or(rest.len());
    rest.split_at(slash)
}

/// `len` bytes of a fixed pseudo-random pattern (incompressible enough, reproducible).
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
