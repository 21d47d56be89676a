//! A real containerd for one test: Debian's containerd 1.6 with its own root, state,
//! socket and config under a directory of the test's, killed when dropped. The CRI
//! plugin is off (there is no kubelet; it would also want CNI), so the daemon holds
//! content, images and snapshots only, which is what `ctr images import` and
//! `ctr images pull` need. Snapshots use containerd's default, overlayfs (the tests
//! run as root, and overlayfs mounts work on this machine).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long containerd may take to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A containerd process of the test's own.
pub struct Containerd {
    child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

/// One image as `ctr images ls` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub media_type: String,
    pub digest: String,
}

impl Containerd {
    /// Starts containerd under `dir/containerd` and waits for its socket to answer.
    pub fn start(dir: &Path) -> Self {
        let dir = dir.join("containerd");
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("c.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\n\
                 root = \"{root}\"\n\
                 state = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{socket}\"\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                socket = socket.display(),
                opt = dir.join("opt").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd is installed (Debian's containerd package)");
        let mut containerd = Self { child, dir, socket };
        containerd.wait_until_it_answers();
        containerd
    }

    fn wait_until_it_answers(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("containerd exited with {status}: {}", self.log_tail());
            }
            if self.socket.exists() && self.ctr("default", &["version"]).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within {START_TIMEOUT:?}: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The end of containerd's log, for a failure message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The socket as the `--containerd-address` value.
    pub fn address(&self) -> &str {
        self.socket.to_str().unwrap()
    }

    /// `ctr --address SOCK --namespace NS ARGS`.
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The images `ctr images ls` lists in `namespace`.
    pub fn images(&self, namespace: &str) -> Vec<Listed> {
        let output = self.ctr(namespace, &["images", "ls"]);
        assert!(
            output.status.success(),
            "ctr images ls: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .skip(1)
            .filter_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                (words.len() >= 3).then(|| Listed {
                    name: words[0].to_string(),
                    media_type: words[1].to_string(),
                    digest: words[2].to_string(),
                })
            })
            .collect()
    }

    /// The digest containerd records for `name` in `namespace`, if it lists it.
    pub fn digest_of(&self, namespace: &str, name: &str) -> Option<String> {
        self.images(namespace)
            .into_iter()
            .find(|i| i.name == name)
            .map(|i| i.digest)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Snapshots unpacked by overlayfs hold no mounts once an import or pull
        // returns; what is left is plain files the test's tempdir removes.
    }
}

/// A `hosts.toml` directory (`DIR/<host>/hosts.toml`, what `ctr --hosts-dir` and
/// containerd's `config_path` read) sending pulls of `upstream` to `mirror`
/// (`http://127.0.0.1:PORT`) for pull and resolve.
pub fn hosts_dir(dir: &Path, upstream: &str, mirror: &str) -> PathBuf {
    let hosts = dir.join("certs.d");
    let host_dir = hosts.join(upstream);
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(
        host_dir.join("hosts.toml"),
        format!(
            "server = \"https://{upstream}\"\n\n\
             [host.\"{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
    hosts
}
