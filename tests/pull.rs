//! `stowage pull` against the real registry, through a counting, fault-injecting proxy.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stowage_faultproxy::{Faults, Proxy};
use stowage_store::{Digest, Store};
use support::fixtures::{
    gzip_zstd_image, put_image, put_layer, sample_tree, set_ref, skopeo_json, tagged_index,
    Compression, Entry, Image,
};
use support::push::push_docker_manifest_list;
use support::registry::Registry;

const BIN: &str = env!("CARGO_BIN_EXE_stowage");
const MIB: usize = 1 << 20;

/// A registry, a proxy in front of it, a fixture store to push from, and an empty
/// store to pull into.
struct Env {
    dir: tempfile::TempDir,
    registry: Registry,
    proxy: Proxy,
    fixtures: Store,
}

impl Env {
    fn new() -> Self {
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

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Pushes `image` to the registry as `repo:tag`.
    fn push(&self, image: &stowage_store::Descriptor, repo_tag: &str) {
        set_ref(&self.fixtures, repo_tag, image);
        support::fixtures::push_with_skopeo(
            self.fixtures.root(),
            repo_tag,
            &self.registry,
            repo_tag,
        );
    }

    /// `repo:tag` as seen through the proxy.
    fn via_proxy(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.proxy.addr())
    }

    fn stowage(&self, args: &[&str]) -> Output {
        stowage_in(&self.store(), args)
    }

    /// Pulls and returns the JSON summary; panics with stderr on failure.
    fn pull(&self, args: &[&str]) -> Value {
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

    /// Blob GETs the proxy saw for one digest.
    fn gets_of(&self, digest: &Digest) -> Vec<stowage_faultproxy::Record> {
        let suffix = format!("/blobs/{digest}");
        self.proxy
            .blob_gets()
            .into_iter()
            .filter(|r| r.path.ends_with(&suffix))
            .collect()
    }
}

fn stowage_in(store: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--store")
        .arg(store)
        .arg("--json")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `len` pseudo-random bytes (incompressible, so sizes are predictable).
fn noise(len: usize, seed: u64) -> Vec<u8> {
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
fn big_image(store: &Store, len: usize, seed: u64) -> Image {
    let layer = put_layer(
        store,
        &[Entry::file("data.bin", noise(len, seed), 0o644)],
        Compression::Zstd,
    );
    put_image(store, "amd64", vec![layer])
}

fn blob_present(store: &Path, digest: &Digest) -> bool {
    store.join("blobs/sha256").join(digest.digest()).is_file()
}

#[test]
fn cold_then_warm_then_a_sibling_fetches_only_new_layers() {
    let env = Env::new();
    let base = put_layer(&env.fixtures, &sample_tree("base"), Compression::Gzip);
    let only_a = put_layer(&env.fixtures, &sample_tree("a"), Compression::Zstd);
    let only_b = put_layer(&env.fixtures, &sample_tree("b"), Compression::Gzip);
    let a = put_image(&env.fixtures, "amd64", vec![base.clone(), only_a]);
    let b = put_image(&env.fixtures, "amd64", vec![base.clone(), only_b.clone()]);
    env.push(&a.descriptor, "tools/a:1");
    env.push(&b.descriptor, "tools/b:1");

    let cold = env.pull(&[&env.via_proxy("tools/a:1")]);
    assert_eq!(cold["manifest_digest"], a.descriptor.digest().to_string());
    assert_eq!(cold["blobs_fetched"], 3, "{cold}");
    assert_eq!(env.proxy.blob_gets().len(), 3);

    env.proxy.reset_log();
    let warm = env.pull(&[&env.via_proxy("tools/a:1")]);
    assert_eq!(warm["blobs_fetched"], 0);
    assert_eq!(warm["bytes_fetched"], 0);
    assert!(env.proxy.blob_gets().is_empty(), "{:?}", env.proxy.log());

    env.proxy.reset_log();
    let sibling = env.pull(&[&env.via_proxy("tools/b:1")]);
    let fetched: Vec<String> = env
        .proxy
        .blob_gets()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        fetched.len(),
        2,
        "config and the one new layer: {fetched:?}"
    );
    assert!(fetched
        .iter()
        .any(|p| p.ends_with(&only_b.descriptor.digest().to_string())));
    assert!(!fetched
        .iter()
        .any(|p| p.ends_with(&base.descriptor.digest().to_string())));
    assert_eq!(
        sibling["bytes_present"].as_u64().unwrap(),
        base.blob.len() as u64
    );

    // What stowage wrote is an OCI layout skopeo reads.
    let name = env.via_proxy("tools/b:1");
    let oci = format!("oci:{}:{name}", env.store().display());
    let inspected = skopeo_json(&["inspect", &oci]);
    assert_eq!(inspected["Digest"], b.descriptor.digest().to_string());
    // ...and so does podman: the image ID it reports is the config's digest. (podman
    // names the image after the layout's path, which must be lowercase.)
    let lower = std::env::temp_dir().join(format!("stowage-podman-{}", std::process::id()));
    let _ = std::fs::remove_file(&lower);
    std::os::unix::fs::symlink(env.store(), &lower).unwrap();
    let oci = format!("oci:{}:{name}", lower.display());
    let podman = env.dir.path().join("podman");
    let root = podman.join("root");
    let runroot = podman.join("run");
    let output = Command::new("podman")
        .arg("--root")
        .arg(&root)
        .arg("--runroot")
        .arg(&runroot)
        .args(["--storage-driver", "vfs", "pull", "-q", &oci])
        .output()
        .unwrap();
    assert!(output.status.success(), "podman: {}", stderr(&output));
    let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
    std::fs::remove_file(&lower).unwrap();
    assert_eq!(id, b.config.digest().digest());
    assert!(env.stowage(&["verify"]).status.success());
}

#[test]
fn an_index_resolves_to_the_requested_platform_and_a_docker_list_works_too() {
    let env = Env::new();
    let index = tagged_index(&env.fixtures, "multi/arch:1");
    support::fixtures::push_with_skopeo(
        env.fixtures.root(),
        "multi/arch:1",
        &env.registry,
        "multi/arch:1",
    );
    let arm = env.pull(&["--platform", "linux/arm64", &env.via_proxy("multi/arch:1")]);
    let arm64 = &index.images[1];
    assert_eq!(
        arm["manifest_digest"],
        arm64.descriptor.digest().to_string()
    );
    assert_eq!(arm["index_digest"], index.descriptor.digest().to_string());
    assert!(blob_present(
        &env.store(),
        arm64.layers[0].descriptor.digest()
    ));
    assert!(!blob_present(
        &env.store(),
        index.images[0].layers[0].descriptor.digest()
    ));

    let missing = env.stowage(&[
        "pull",
        "--platform",
        "linux/s390x",
        &env.via_proxy("multi/arch:1"),
    ]);
    assert!(!missing.status.success());
    let message = stderr(&missing);
    assert!(
        message.contains("linux/s390x") && message.contains("linux/amd64, linux/arm64"),
        "{message}"
    );

    let (list, children) = push_docker_manifest_list(&env.registry, "docker/list", "2");
    for (arch, digest) in &children {
        let platform = format!("linux/{arch}");
        let pulled = env.pull(&["--platform", &platform, &env.via_proxy("docker/list:2")]);
        assert_eq!(pulled["manifest_digest"], digest.to_string());
        assert_eq!(pulled["index_digest"], list.to_string());
    }
    let all = env.pull(&["--all-platforms", &env.via_proxy("docker/list:2")]);
    assert_eq!(all["manifest_digest"], list.to_string());
    assert!(env.stowage(&["verify"]).status.success());
}

#[test]
fn a_big_blob_arrives_as_ranges_and_a_registry_ignoring_range_still_works() {
    let env = Env::new();
    let image = big_image(&env.fixtures, 40 * MIB, 1);
    env.push(&image.descriptor, "big/one:1");
    let layer = image.layers[0].descriptor.digest();

    env.pull(&[&env.via_proxy("big/one:1")]);
    let gets = env.gets_of(layer);
    assert!(gets.len() >= 2, "one request for a 40 MiB blob: {gets:?}");
    assert!(gets.iter().all(|r| r.status == 206), "{gets:?}");
    for get in &gets {
        let range = get.range.as_deref().expect("a Range header");
        let (a, b) = range
            .strip_prefix("bytes=")
            .unwrap()
            .split_once('-')
            .unwrap();
        assert!(!b.is_empty(), "open-ended range {range}");
        assert!(a.parse::<u64>().unwrap() <= b.parse::<u64>().unwrap());
    }
    assert!(blob_present(&env.store(), layer));

    // A registry that answers Range with the whole body: one plain stream.
    let store = env.dir.path().join("store2");
    env.proxy.set_faults(Faults {
        ignore_range: true,
        ..Faults::default()
    });
    env.proxy.reset_log();
    let output = stowage_in(&store, &["pull", &env.via_proxy("big/one:1")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let gets = env.gets_of(layer);
    assert!(gets.iter().any(|r| r.status == 200), "{gets:?}");
    assert!(blob_present(&store, layer));
    assert!(stowage_in(&store, &["verify"]).status.success());
}

#[test]
fn a_cut_stream_resumes_with_a_range_and_fetches_little_twice() {
    let env = Env::new();
    let image = big_image(&env.fixtures, 12 * MIB, 2);
    env.push(&image.descriptor, "cut/one:1");
    let layer = &image.layers[0].descriptor;
    env.proxy.set_faults(Faults {
        cut_blob_after: Some(5 * MIB as u64),
        cuts: 1,
        ..Faults::default()
    });
    env.pull(&[&env.via_proxy("cut/one:1")]);
    let gets = env.gets_of(layer.digest());
    assert!(gets.len() >= 2, "{gets:?}");
    let resumed = gets[1].range.as_deref().expect("the retry carries a Range");
    let start: u64 = resumed["bytes=".len()..]
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(start > 0, "resumed from 0: {resumed}");
    let total: u64 = gets.iter().map(|r| r.body_bytes).sum();
    assert!(
        (total as f64) < 1.1 * layer.size() as f64,
        "fetched {total} bytes for a {}-byte blob",
        layer.size()
    );
    assert!(blob_present(&env.store(), layer.digest()));
}

/// Kills a pull once `min` bytes of the blob are on disk; returns how many were.
fn kill_mid_blob(env: &Env, args: &[&str], min: u64) -> u64 {
    let mut child = Command::new(BIN)
        .arg("--store")
        .arg(env.store())
        .arg("pull")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let on_disk = loop {
        let bytes = partial_bytes(&env.store());
        if bytes >= min {
            break bytes;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pull ended before the kill"
        );
        assert!(Instant::now() < deadline, "never reached {min} bytes");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    on_disk
}

fn partial_bytes(store: &Path) -> u64 {
    std::fs::read_dir(store.join("ingest"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "partial"))
                .map(|e| e.metadata().map_or(0, |m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn after_a_sigkill_mid_blob_the_next_run_fetches_only_the_rest() {
    let env = Env::new();
    let image = big_image(&env.fixtures, 30 * MIB, 3);
    env.push(&image.descriptor, "kill/one:1");
    let layer = &image.layers[0].descriptor;
    let reference = env.via_proxy("kill/one:1");
    // One stream, slowed down so the kill lands mid-blob.
    env.proxy.set_faults(Faults {
        rate: Some(10 * MIB as u64),
        ..Faults::default()
    });
    let single = ["--split-threshold", "1000000000000", reference.as_str()];
    let killed_at = kill_mid_blob(&env, &single, 8 * MIB as u64);
    assert!(!blob_present(&env.store(), layer.digest()));

    env.proxy.set_faults(Faults::default());
    env.proxy.reset_log();
    let summary = env.pull(&single);
    let gets = env.gets_of(layer.digest());
    assert_eq!(gets.len(), 1, "{gets:?}");
    let range = gets[0]
        .range
        .as_deref()
        .expect("a Range from the partial ingest");
    let start: u64 = range["bytes=".len()..]
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        start >= killed_at,
        "resumed at {start}, {killed_at} bytes were on disk"
    );
    assert_eq!(gets[0].body_bytes, layer.size() - start);
    // The config arrived before the kill; only the rest of the layer is new.
    assert_eq!(
        summary["bytes_fetched"].as_u64().unwrap(),
        layer.size() - start
    );
    assert!(env.stowage(&["verify"]).status.success());
}

#[test]
fn corrupted_bytes_are_refused_and_nothing_is_stored() {
    let env = Env::new();
    let image = gzip_zstd_image(&env.fixtures, "amd64");
    env.push(&image.descriptor, "bad/bytes:1");
    env.proxy.set_faults(Faults {
        corrupt_blob_at: Some(100),
        ..Faults::default()
    });
    let output = env.stowage(&["pull", &env.via_proxy("bad/bytes:1")]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    let named = std::iter::once(&image.config)
        .chain(image.layers.iter().map(|l| &l.descriptor))
        .any(|d| message.contains(&d.digest().to_string()));
    assert!(named && message.contains("expected"), "{message}");
    for layer in &image.layers {
        assert!(!blob_present(&env.store(), layer.descriptor.digest()) || layer.blob.len() <= 100);
    }
    let listed = env.stowage(&["ls"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");
}

#[test]
fn too_many_requests_waits_for_retry_after_and_endless_503_gives_up() {
    let env = Env::new();
    let image = gzip_zstd_image(&env.fixtures, "amd64");
    env.push(&image.descriptor, "busy/one:1");
    env.proxy.set_faults(Faults {
        too_many_requests: 2,
        retry_after: Some(1),
        ..Faults::default()
    });
    let started = Instant::now();
    env.pull(&["--concurrency", "1", &env.via_proxy("busy/one:1")]);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After was not honoured"
    );
    assert_eq!(
        env.proxy.log().iter().filter(|r| r.status == 429).count(),
        2
    );

    let store = env.dir.path().join("store2");
    env.proxy.set_faults(Faults {
        always_503: true,
        ..Faults::default()
    });
    let output = stowage_in(
        &store,
        &["pull", "--retries", "3", &env.via_proxy("busy/one:1")],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("gave up after 3 attempts") && message.contains("503"),
        "{message}"
    );
}

#[test]
fn pinned_pulls_refuse_another_digest_and_record_nothing() {
    let env = Env::new();
    let image = gzip_zstd_image(&env.fixtures, "amd64");
    env.push(&image.descriptor, "pin/one:1");
    let reference = env.via_proxy("pin/one:1");
    let wrong = format!("sha256:{}", "0".repeat(64));

    let output = env.stowage(&["pull", "--digest", &wrong, &reference]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(&wrong) && message.contains(&image.descriptor.digest().to_string()),
        "{message}"
    );
    let output = env.stowage(&["pull", &format!("{reference}@{wrong}")]);
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&env.stowage(&["ls"]).stdout).trim(),
        "[]"
    );

    let right = image.descriptor.digest().to_string();
    env.pull(&["--digest", &right, &reference]);
    let by_digest = env.pull(&[&format!("{}/pin/one@{right}", env.proxy.addr())]);
    assert_eq!(by_digest["blobs_fetched"], 0);
}

#[test]
fn offline_uses_only_the_store_and_ttl_skips_the_registry() {
    let mut env = Env::new();
    let image = gzip_zstd_image(&env.fixtures, "amd64");
    env.push(&image.descriptor, "off/line:1");
    let reference = env.via_proxy("off/line:1");

    let output = env.stowage(&["pull", "--offline", &reference]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("not in the store"), "{message}");
    assert!(env.proxy.log().is_empty(), "offline reached the network");

    env.pull(&["--ttl", "3600", &reference]);
    env.proxy.reset_log();
    env.pull(&["--ttl", "3600", &reference]);
    assert!(
        env.proxy.log().is_empty(),
        "a fresh cached tag asked the registry"
    );
    env.pull(&["--ttl", "0", &reference]);
    assert!(!env.proxy.log().is_empty(), "ttl 0 must ask the registry");

    // A moved tag is seen with ttl 0.
    let moved = put_image(
        &env.fixtures,
        "amd64",
        vec![put_layer(
            &env.fixtures,
            &sample_tree("moved"),
            Compression::Gzip,
        )],
    );
    env.push(&moved.descriptor, "off/line:1");
    let again = env.pull(&["--ttl", "0", &reference]);
    assert_eq!(
        again["manifest_digest"],
        moved.descriptor.digest().to_string()
    );

    env.registry.stop();
    let offline = env.pull(&["--offline", &reference]);
    assert_eq!(
        offline["manifest_digest"],
        moved.descriptor.digest().to_string()
    );
    assert_eq!(offline["bytes_fetched"], 0);
}

/// Bytes the partial ingests' sidecars record as durable.
fn recorded_bytes(store: &Path) -> u64 {
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

#[test]
fn after_a_sigkill_mid_ranges_the_next_run_fetches_only_the_holes() {
    let env = Env::new();
    let image = big_image(&env.fixtures, 48 * MIB, 4);
    env.push(&image.descriptor, "kill/ranges:1");
    let layer = &image.layers[0].descriptor;
    let reference = env.via_proxy("kill/ranges:1");
    env.proxy.set_faults(Faults {
        rate: Some(4 * MIB as u64),
        ..Faults::default()
    });
    let mut child = Command::new(BIN)
        .arg("--store")
        .arg(env.store())
        .args(["pull", &reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while recorded_bytes(&env.store()) < 16 * MIB as u64 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pull ended before the kill"
        );
        assert!(Instant::now() < deadline, "ranges never recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let recorded = recorded_bytes(&env.store());

    env.proxy.set_faults(Faults::default());
    env.proxy.reset_log();
    env.pull(&[&reference]);
    let fetched: u64 = env
        .gets_of(layer.digest())
        .iter()
        .map(|r| r.body_bytes)
        .sum();
    assert!(
        fetched <= layer.size() - recorded,
        "fetched {fetched} of {} bytes though {recorded} were recorded",
        layer.size()
    );
    assert!(blob_present(&env.store(), layer.digest()));
    assert!(env.stowage(&["verify"]).status.success());
}
