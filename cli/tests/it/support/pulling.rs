//! What the pull and lockfile tests share: a registry, a counting proxy in front of
//! it, a fixture store to push from, an empty store to pull into, and the `stowage`
//! binary run against them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use stowage_faultproxy::{Faults, Proxy};
use stowage_store::{Digest, Store};

use super::fixtures::{put_image, put_layer, set_ref, Compression, Entry, Image};
use super::registry::Registry;

pub const BIN: &str = env!("CARGO_BIN_EXE_stowage");
pub const MIB: usize = 1 << 20;

/// A registry, a proxy in front of it, a fixture store to push from, and an empty
/// store to pull into.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub registry: Registry,
    pub proxy: Proxy,
    pub fixtures: Store,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::start();
        let proxy = Proxy::start(&registry.addr(), Faults::default());
        let fixtures = Store::open(dir.path().join("fixtures")).unwrap();
        Self {
            dir,
            registry,
            proxy,
            fixtures,
        }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Pushes `image` to the registry as `repo:tag`.
    pub fn push(&self, image: &stowage_store::Descriptor, repo_tag: &str) {
        set_ref(&self.fixtures, repo_tag, image);
        super::fixtures::push_with_skopeo(self.fixtures.root(), repo_tag, &self.registry, repo_tag);
    }

    /// `repo:tag` as seen through the proxy.
    pub fn via_proxy(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.proxy.addr())
    }

    pub fn stowage(&self, args: &[&str]) -> Output {
        stowage_in(&self.store(), args)
    }

    /// Runs `stowage ARGS` without `--json`, as a person at a shell would.
    pub fn stowage_plain(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--store")
            .arg(self.store())
            .args(args)
            .output()
            .unwrap()
    }

    /// Pulls and returns the JSON summary; panics with stderr on failure.
    pub fn pull(&self, args: &[&str]) -> Value {
        let mut all = vec!["pull"];
        all.extend_from_slice(args);
        let output = self.stowage(&all);
        assert!(
            output.status.success(),
            "pull {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Runs `stowage --json ARGS` and returns the JSON summary; panics with stderr on
    /// failure.
    pub fn json(&self, args: &[&str]) -> Value {
        let output = self.stowage(args);
        assert!(
            output.status.success(),
            "stowage {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Runs `work` and checks it sent nothing through the proxy (no network).
    pub fn without_network(&self, work: impl FnOnce()) {
        self.proxy.reset_log();
        work();
        assert!(
            self.proxy.log().is_empty(),
            "reached the network: {:?}",
            self.proxy.log()
        );
    }

    /// The paths of every blob GET the proxy saw, in order.
    pub fn blob_get_paths(&self) -> Vec<String> {
        self.proxy.blob_gets().into_iter().map(|r| r.path).collect()
    }

    /// Blob GETs the proxy saw for one digest.
    pub fn gets_of(&self, digest: &Digest) -> Vec<stowage_faultproxy::Record> {
        let suffix = format!("/blobs/{digest}");
        self.proxy
            .blob_gets()
            .into_iter()
            .filter(|r| r.path.ends_with(&suffix))
            .collect()
    }
}

pub fn stowage_in(store: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--store")
        .arg(store)
        .arg("--json")
        .args(args)
        .output()
        .unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `len` pseudo-random bytes (incompressible, so sizes are predictable).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An image whose one layer holds `len` bytes of noise (zstd, which skopeo pushes
/// as it is; it would compress an uncompressed layer and change its digest).
pub fn big_image(store: &Store, len: usize, seed: u64) -> Image {
    let layer = put_layer(
        store,
        &[Entry::file("data.bin", noise(len, seed), 0o644)],
        Compression::Zstd,
    );
    put_image(store, "amd64", vec![layer])
}

pub fn blob_present(store: &Path, digest: &Digest) -> bool {
    store.join("blobs/sha256").join(digest.digest()).is_file()
}

/// Bytes the partial ingests' sidecars record as durable.
pub fn recorded_bytes(store: &Path) -> u64 {
    let Ok(dir) = std::fs::read_dir(store.join("ingest")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
        .flat_map(|v| v["ranges"].as_array().cloned().unwrap_or_default())
        .map(|r| r[1].as_u64().unwrap() - r[0].as_u64().unwrap())
        .sum()
}

/// Bytes of partial ingests on disk (file lengths).
pub fn partial_bytes(store: &Path) -> u64 {
    std::fs::read_dir(store.join("ingest"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "partial"))
                .map(|e| e.metadata().map_or(0, |m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}
