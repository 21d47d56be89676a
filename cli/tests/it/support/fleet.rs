//! A fleet of stowage nodes on one machine, for the fleet tests: each node a `stowage
//! serve --upstream` on its own loopback address (127.0.0.2, 127.0.0.3, ...) over its
//! own store, and a `stowage sync --peers` of one lockfile into that same store. The
//! upstream is the env's registry behind its counting proxy, so what upstream served
//! the whole fleet is known.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

use stowage_faultproxy::{Faults, Proxy};
use stowage_store::{Digest, Store};

use super::fixtures::{put_image, put_layer, Compression, Entry, Image, Layer};
use super::pulling::{noise, stderr, stowage_in, Env, BIN};
use super::serving::{ServeSetup, Served};

/// One fleet at a time: each is 32 processes, and two at once on two cores would
/// only make both slow.
static ONE_FLEET: Mutex<()> = Mutex::new(());

/// Holds the fleet lock (a failed fleet test leaves it poisoned; the next still runs).
pub fn one_fleet() -> MutexGuard<'static, ()> {
    ONE_FLEET.lock().unwrap_or_else(|p| p.into_inner())
}

/// The three images of the fleet's lockfile, pushed, and every distinct blob of them.
pub struct ImageSet {
    pub references: Vec<String>,
    /// Distinct blobs (configs and layers) with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// The big image's one layer.
    pub big_layer: Digest,
}

impl ImageSet {
    /// Bytes of all distinct blobs: what one node fetches.
    pub fn bytes(&self) -> u64 {
        self.blobs.iter().map(|(_, size)| size).sum()
    }
}

fn noise_layer(env: &Env, len: usize, seed: u64) -> Layer {
    put_layer(
        &env.fixtures,
        &[Entry::file("data.bin", noise(len, seed), 0o644)],
        Compression::Zstd,
    )
}

/// Pushes three images through the env: one `big` layer; `small_count` layers of
/// `small` bytes; and a factored-style image of `factored_count` small layers (half of
/// `small` each), its first two shared with the many-layer image, as factored images
/// share their packages' layers. Returns their references through the proxy.
pub fn push_images(
    env: &Env,
    big: usize,
    small: usize,
    small_count: usize,
    factored_count: usize,
) -> ImageSet {
    let big_image = put_image(&env.fixtures, "amd64", vec![noise_layer(env, big, 7)]);
    let many: Vec<Layer> = (0..small_count)
        .map(|i| noise_layer(env, small, 1000 + i as u64))
        .collect();
    let shared: Vec<Layer> = many.iter().take(2).cloned().collect();
    let many_image = put_image(&env.fixtures, "amd64", many);
    let factored: Vec<Layer> = shared
        .into_iter()
        .chain((2..factored_count).map(|i| noise_layer(env, small / 2, 5000 + i as u64)))
        .collect();
    let factored_image = put_image(&env.fixtures, "amd64", factored);
    let images: [(&Image, &str); 3] = [
        (&big_image, "fleet/big:1"),
        (&many_image, "fleet/many:1"),
        (&factored_image, "fleet/factored:1"),
    ];
    let mut blobs: Vec<(Digest, u64)> = Vec::new();
    for (image, name) in images {
        env.push(&image.descriptor, name);
        let all = std::iter::once(&image.config)
            .chain(image.layers.iter().map(|l| &l.descriptor))
            .map(|d| (d.digest().clone(), d.size()));
        for blob in all {
            if !blobs.iter().any(|(d, _)| *d == blob.0) {
                blobs.push(blob);
            }
        }
    }
    ImageSet {
        references: images.iter().map(|(_, n)| env.via_proxy(n)).collect(),
        blobs,
        big_layer: big_image.layers[0].descriptor.digest().clone(),
    }
}

/// `stowage lock` of the set into `DIR/stowage.lock` (through the proxy, whose log is
/// then cleared); returns the lockfile's path.
pub fn lock(env: &Env, set: &ImageSet) -> PathBuf {
    let lockfile = env.dir.path().join("stowage.lock");
    let scratch = env.dir.path().join("lock-store");
    let mut args = vec!["lock"];
    args.extend(set.references.iter().map(String::as_str));
    args.extend(["-o", lockfile.to_str().unwrap()]);
    let output = stowage_in(&scratch, &args);
    assert!(output.status.success(), "lock: {}", stderr(&output));
    env.proxy.reset_log();
    lockfile
}

/// One node: its store, its serve, and the address its peers know it by (a fault
/// proxy's in front of the serve, for a node made to lie).
pub struct Node {
    pub store: PathBuf,
    pub serve: Served,
    pub front: Option<Proxy>,
    pub addr: String,
    pub serve_log: PathBuf,
}

impl Node {
    /// Kills the serve (SIGKILL: a node that dies, not one that shuts down).
    pub fn kill(&mut self) {
        unsafe { libc::kill(self.serve.pid() as libc::pid_t, libc::SIGKILL) };
    }
}

/// `count` free addresses, node `i`'s on 127.0.0.`i + 2`, so the peer list (and each
/// blob's owner) is known before any node starts.
pub fn reserve_addrs(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let socket = std::net::TcpListener::bind(format!("127.0.0.{}:0", i + 2)).unwrap();
            socket.local_addr().unwrap().to_string()
        })
        .collect()
}

/// Starts a node on each of `addrs`, its serve with `--upstream` the env's proxy. A
/// node in `lying` has its serve on another port and a fault proxy on its address
/// that flips a bit of every blob the serve sends.
pub fn start_nodes(env: &Env, addrs: &[String], lying: &[usize]) -> Vec<Node> {
    let upstream = format!("http://{}", env.proxy.addr());
    addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let store = env.dir.path().join(format!("node{i}"));
            Store::open(&store).unwrap();
            let serve_log = env.dir.path().join(format!("serve{i}.log"));
            let ip = addr.rsplit_once(':').unwrap().0;
            let liar = lying.contains(&i);
            let listen = if liar {
                format!("{ip}:0")
            } else {
                addr.clone()
            };
            let serve = Served::start_on(
                &store,
                &listen,
                &ServeSetup {
                    args: &["--upstream", &upstream],
                    stderr: Some(&serve_log),
                    ..ServeSetup::default()
                },
            );
            let front = liar.then(|| {
                let faults = Faults {
                    corrupt_blob_at: Some(1000),
                    corruptions: 0,
                    ..Faults::default()
                };
                Proxy::bind(addr, &serve.addr, faults).unwrap()
            });
            Node {
                store,
                serve,
                front,
                addr: addr.clone(),
                serve_log,
            }
        })
        .collect()
}

/// The peer list every node is given: all the nodes' addresses.
pub fn peer_list(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| n.addr.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts `stowage sync LOCKFILE --peers LIST --self ADDR ARGS` on every node at once.
pub fn start_syncs(nodes: &[Node], lockfile: &Path, args: &[&str]) -> Vec<Child> {
    let list = peer_list(nodes);
    nodes
        .iter()
        .map(|node| {
            Command::new(BIN)
                .arg("--store")
                .arg(&node.store)
                .arg("sync")
                .arg(lockfile)
                .args(["--peers", &list, "--self", &node.addr])
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

/// Waits for every sync; their outputs in node order.
pub fn wait_all(syncs: Vec<Child>) -> Vec<Output> {
    syncs
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// `stowage verify --lock LOCKFILE` on the node's store: every pinned blob present and
/// intact.
pub fn verify_lock(node: &Node, lockfile: &Path) -> Output {
    stowage_in(
        &node.store,
        &["verify", "--lock", lockfile.to_str().unwrap()],
    )
}

/// `stowage verify` of every blob in the node's store: nothing corrupt stored.
pub fn verify_all(node: &Node) -> Output {
    stowage_in(&node.store, &["verify"])
}

/// The node's serve log, for a failure message.
pub fn serve_log(node: &Node) -> String {
    let log = std::fs::read_to_string(&node.serve_log).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    format!(
        "serve {} log (last lines):\n{}",
        node.addr,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}
