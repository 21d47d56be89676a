//! A real registry for tests: Debian's `docker-registry` (distribution 2.8) on a free
//! loopback port, with its storage, config and log in a tempdir, stopped when dropped.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The registry binary Debian installs.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How long a registry may take to answer `GET /v2/` before the start is given up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How many ports are tried when a start fails (another process took the free port).
const START_ATTEMPTS: usize = 3;

/// What to add to the generated config; the default is a plain-HTTP registry without
/// auth that is up once `GET /v2/` answers 200.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Top-level YAML sections appended verbatim (e.g. an `auth:` block).
    pub extra_yaml: String,
    /// YAML put under `http:` (e.g. a `tls:` block), indented by two spaces per line
    /// here, since YAML forbids a second top-level `http:` key.
    pub http_yaml: String,
    /// Statuses of a plain-HTTP `GET /v2/` that mean the registry is up: 200 without
    /// auth, 401 with token auth, 400 when it speaks TLS (an HTTP request to HTTPS).
    pub ready_statuses: Vec<u16>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            extra_yaml: String::new(),
            http_yaml: String::new(),
            ready_statuses: vec![200],
        }
    }
}

impl RegistryConfig {
    /// Whether the registry serves HTTPS, judged from the `http:` additions.
    fn tls(&self) -> bool {
        self.http_yaml.contains("tls:")
    }

    /// The whole config file for a registry listening on `addr` with storage in `storage`.
    fn render(&self, addr: SocketAddr, storage: &Path) -> String {
        let mut yaml = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n",
            storage.display()
        );
        for line in self.http_yaml.lines() {
            yaml.push_str("  ");
            yaml.push_str(line);
            yaml.push('\n');
        }
        yaml.push_str(&self.extra_yaml);
        if !yaml.ends_with('\n') {
            yaml.push('\n');
        }
        yaml
    }
}

/// A running registry; dropping it kills the process and waits for it.
///
/// The process also gets SIGKILL when the *thread* that started it exits
/// (`PR_SET_PDEATHSIG` follows the spawning thread), so keep a `Registry` on the
/// thread that created it rather than sharing one across tests through a static.
pub struct Registry {
    child: Child,
    addr: SocketAddr,
    tls: bool,
    dir: TempDir,
}

impl Registry {
    /// Starts a plain-HTTP registry without auth, deletes enabled.
    pub fn start() -> Self {
        Self::start_config(RegistryConfig::default())
    }

    /// Starts a registry from a full [`RegistryConfig`], retrying on another port when a
    /// start fails; panics with the log's tail after the last attempt.
    pub fn start_config(config: RegistryConfig) -> Self {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&config) {
                Ok(registry) => return registry,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "docker-registry did not come up after {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n----\n")
        );
    }

    /// One attempt: pick a port, write the config, spawn, wait for `/v2/`.
    fn try_start(config: &RegistryConfig) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("stowage-registry-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let addr = free_port()?;
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).map_err(|e| format!("mkdir storage: {e}"))?;
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config.render(addr, &storage))
            .map_err(|e| format!("write config: {e}"))?;
        let log_path = dir.path().join("registry.log");
        let log = File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("dup log: {e}"))?;

        let parent = std::process::id() as libc::pid_t;
        let mut command = Command::new(REGISTRY_BIN);
        command
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: prctl and getppid are async-signal-safe and touch no shared state.
        unsafe {
            command.pre_exec(move || {
                // Killed when the spawning thread dies, even on SIGKILL or abort of the test.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("spawn {REGISTRY_BIN}: {e}"))?;
        let mut registry = Self {
            child,
            addr,
            tls: config.tls(),
            dir,
        };
        match registry.wait_ready(&config.ready_statuses) {
            Ok(()) => Ok(registry),
            // Dropping `registry` kills the process; the message keeps the log.
            Err(e) => Err(format!("{e}\nlog tail:\n{}", registry.log_tail(40))),
        }
    }

    /// Polls `GET /v2/` until it answers one of `statuses`, the process exits, or the
    /// timeout passes.
    fn wait_ready(&mut self, statuses: &[u16]) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("docker-registry exited early: {status}"));
            }
            match http_get_status(self.addr, "/v2/") {
                Ok(status) if statuses.contains(&status) => return Ok(()),
                Ok(status) => last = format!("GET /v2/ answered {status}"),
                Err(e) => last = format!("GET /v2/: {e}"),
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "docker-registry on {} not ready after {READY_TIMEOUT:?}: {last}",
            self.addr
        ))
    }

    /// `127.0.0.1:PORT`, the form skopeo's `docker://` references take.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT` (or `https://` when configured with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The filesystem driver's root directory (`docker/registry/v2/...` lives below it).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's log file (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The last `lines` lines of the registry's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the registry now and waits for it (Drop does the same).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback address whose port was free a moment ago.
fn free_port() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind: {e}"))?;
    listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))
}

/// The status code of a plain-HTTP `GET path` to `addr`, without following redirects.
pub fn http_get_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < head.len() {
        let n = stream.read(&mut head[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if head[..len].contains(&b'\n') {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head[..len]);
    line.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP status line: {line:?}"),
            )
        })
}

/// Whether anything accepts TCP connections on `addr` (used to check a stopped registry).
pub fn port_open(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().expect("a socket address");
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}
