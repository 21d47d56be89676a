//! `stowage serve` against real clients: a store filled by `stowage pull` from the real
//! registry is served, and skopeo, podman and curl pull from it.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stowage::mirror::serve::{ServeOptions, Server};
use stowage_store::Store;
use support::fixtures::{
    gzip_zstd_image, run_output, sha256_digest, skopeo, tagged_image, tagged_index, Image, Index,
};
use support::pulling::{big_image, Env, BIN, MIB};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A `stowage serve` process on a free loopback port.
struct Served {
    child: Child,
    addr: String,
    _stdout: BufReader<ChildStdout>,
}

impl Served {
    /// Starts `stowage --store STORE serve --addr 127.0.0.1:0` and reads the address
    /// from the line it prints.
    fn start(store: &Path) -> Self {
        let mut child = Command::new(BIN)
            .arg("--store")
            .arg(store)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
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

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `docker://ADDR/repo:tag`
    fn docker(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.addr)
    }

    /// Sends SIGTERM and waits (at most 20 s) for the process to exit.
    fn stop(&mut self) -> ExitStatus {
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

/// What `fill` pulled into the store, as the fixtures built it.
struct Filled {
    /// A two-platform index, pulled with `--all-platforms`, as `multi/arch:1`.
    index: Index,
    /// A gzip + zstd image as `tools/gz:1`.
    image: Image,
    /// One layer of 3 MiB and a bit of noise (several read chunks) as `big/noise:2`.
    big: Image,
}

/// Pushes the fixtures to the real registry and pulls them into the env's store
/// with the stowage binary.
fn fill(env: &Env) -> Filled {
    let index = tagged_index(&env.fixtures, "multi/arch:1");
    env.push(&index.descriptor, "multi/arch:1");
    let image = gzip_zstd_image(&env.fixtures, "amd64");
    env.push(&image.descriptor, "tools/gz:1");
    let big = big_image(&env.fixtures, 3 * MIB + 12_345, 7);
    env.push(&big.descriptor, "big/noise:2");
    let registry = env.registry.addr();
    env.pull(&["--all-platforms", &format!("{registry}/multi/arch:1")]);
    env.pull(&[&format!("{registry}/tools/gz:1")]);
    env.pull(&[&format!("{registry}/big/noise:2")]);
    Filled { index, image, big }
}

/// An HTTP reply as curl saw it.
struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    /// The first error code of a distribution-spec error document.
    fn error_code(&self) -> String {
        assert_eq!(self.header("content-type"), "application/json");
        let document: Value = serde_json::from_slice(&self.body).unwrap();
        document["errors"][0]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error document: {document}"))
            .to_string()
    }
}

/// `curl -i ARGS`, split into status, headers (lower-case names) and body.
fn curl(args: &[&str]) -> Reply {
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
fn layout_digest(dir: &Path) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    manifests[0]["digest"].as_str().unwrap().to_string()
}

/// `podman pull` into a private root; returns the image ID podman reports.
fn podman_pull(root: &Path, args: &[&str]) -> String {
    let output = Command::new("podman")
        .arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args([
            "--storage-driver",
            "vfs",
            "pull",
            "-q",
            "--tls-verify=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "podman pull {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn skopeo_and_podman_pull_what_the_registry_had() {
    let env = Env::new();
    let filled = fill(&env);
    let served = Served::start(&env.store());
    let registry = env.registry.addr();

    // The index, byte for byte as the registry had it (so the same digest).
    let original = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{registry}/multi/arch:1"),
    ]);
    let from_serve = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &served.docker("multi/arch:1"),
    ]);
    assert_eq!(from_serve, original);
    assert_eq!(
        sha256_digest(from_serve.as_bytes()),
        *filled.index.descriptor.digest()
    );

    // skopeo copies the whole index, and one image with a gzip and a zstd layer.
    let all = env.dir.path().join("copy-all");
    skopeo(&[
        "copy",
        "--all",
        "--quiet",
        "--src-tls-verify=false",
        &served.docker("multi/arch:1"),
        &format!("oci:{}:x", all.display()),
    ]);
    assert_eq!(
        layout_digest(&all),
        filled.index.descriptor.digest().to_string()
    );
    let one = env.dir.path().join("copy-one");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &served.docker("tools/gz:1"),
        &format!("oci:{}:x", one.display()),
    ]);
    assert_eq!(
        layout_digest(&one),
        filled.image.descriptor.digest().to_string()
    );
    for layer in &filled.image.layers {
        let blob = one
            .join("blobs/sha256")
            .join(layer.descriptor.digest().digest());
        assert_eq!(std::fs::read(blob).unwrap(), layer.blob);
    }
    // ...and a platform manifest by digest.
    let arm64 = &filled.index.images[1];
    let by_digest = env.dir.path().join("copy-digest");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &served.docker(&format!("multi/arch@{}", arm64.descriptor.digest())),
        &format!("oci:{}:x", by_digest.display()),
    ]);
    assert_eq!(
        layout_digest(&by_digest),
        arm64.descriptor.digest().to_string()
    );

    // podman: the image ID is the config's digest, for a plain image and for the
    // platform it picks from the served index.
    let podman = env.dir.path().join("podman");
    let id = podman_pull(&podman, &[&format!("{}/tools/gz:1", served.addr)]);
    assert_eq!(id, filled.image.config.digest().digest());
    let id = podman_pull(
        &podman,
        &[
            "--platform",
            "linux/arm64",
            &format!("{}/multi/arch:1", served.addr),
        ],
    );
    assert_eq!(id, arm64.config.digest().digest());
}

#[test]
fn blobs_come_whole_or_in_ranges_and_heads_describe_them() {
    let env = Env::new();
    let filled = fill(&env);
    let served = Served::start(&env.store());
    let layer = &filled.big.layers[0];
    let blob = &layer.blob;
    let size = blob.len();
    let digest = layer.descriptor.digest().to_string();
    let url = served.url(&format!("/v2/big/noise/blobs/{digest}"));

    let whole = curl(&[&url]);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-length"), size.to_string());
    assert_eq!(whole.header("docker-content-digest"), digest);
    assert!(whole.body == *blob, "the whole blob differs");

    let head = curl(&["-I", &url]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), size.to_string());
    assert_eq!(head.header("docker-content-digest"), digest);
    assert!(head.body.is_empty());

    for (range, start, end) in [
        ("100-199", 100, 199),
        // Across the server's 1 MiB read chunks.
        ("1048000-2097999", 1_048_000, 2_097_999),
        (&format!("{}-", size - 10), size - 10, size - 1),
    ] {
        let part = curl(&["-r", range, &url]);
        assert_eq!(part.status, 206, "range {range}");
        assert_eq!(
            part.header("content-range"),
            format!("bytes {start}-{end}/{size}")
        );
        assert_eq!(part.header("content-length"), (end + 1 - start).to_string());
        assert!(part.body == blob[start..=end], "range {range}: wrong bytes");
    }
    let past = curl(&["-H", &format!("Range: bytes={size}-"), &url]);
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), format!("bytes */{size}"));

    // Any blob under any served name.
    let config = filled.image.config.digest();
    let elsewhere = curl(&[&served.url(&format!("/v2/big/noise/blobs/{config}"))]);
    assert_eq!(elsewhere.status, 200);
    assert_eq!(elsewhere.body, filled.image.config_bytes);

    // Manifests: their own type, digest and length, by tag (HEAD) and digest (GET).
    let manifest = curl(&["-I", &served.url("/v2/big/noise/manifests/2")]);
    assert_eq!(manifest.status, 200);
    assert_eq!(manifest.header("content-type"), OCI_MANIFEST);
    assert_eq!(
        manifest.header("docker-content-digest"),
        filled.big.descriptor.digest().to_string()
    );
    assert_eq!(
        manifest.header("content-length"),
        filled.big.manifest.len().to_string()
    );
    let by_digest = curl(&[&served.url(&format!(
        "/v2/big/noise/manifests/{}",
        filled.big.descriptor.digest()
    ))]);
    assert_eq!(by_digest.status, 200);
    assert_eq!(by_digest.body, filled.big.manifest);

    // Asked by tag for a single-platform type, the index is what there is to serve.
    let index = curl(&[
        "-H",
        "Accept: application/vnd.docker.distribution.manifest.v2+json",
        &served.url("/v2/multi/arch/manifests/1"),
    ]);
    assert_eq!(index.status, 200);
    assert_eq!(index.header("content-type"), OCI_INDEX);
    assert_eq!(index.body, filled.index.bytes);

    let tags = curl(&[&served.url("/v2/multi/arch/tags/list")]);
    let tags: Value = serde_json::from_slice(&tags.body).unwrap();
    assert_eq!(
        tags,
        serde_json::json!({"name": "multi/arch", "tags": ["1"]})
    );
}

#[test]
fn errors_are_the_specs_and_the_first_ref_wins_a_clash() {
    let env = Env::new();
    // Two refs for clash/x:1: through the proxy first (image a), then straight from
    // the registry after the tag moved (image b).
    let a = gzip_zstd_image(&env.fixtures, "amd64");
    env.push(&a.descriptor, "clash/x:1");
    env.pull(&[&env.via_proxy("clash/x:1")]);
    let b = gzip_zstd_image(&env.fixtures, "arm64");
    env.push(&b.descriptor, "clash/x:1");
    env.pull(&[&format!("{}/clash/x:1", env.registry.addr())]);
    let served = Served::start(&env.store());

    let base = curl(&[&served.url("/v2/")]);
    assert_eq!(base.status, 200);
    assert_eq!(
        base.header("docker-distribution-api-version"),
        "registry/2.0"
    );

    let first = curl(&["-I", &served.url("/v2/clash/x/manifests/1")]);
    assert_eq!(
        first.header("docker-content-digest"),
        a.descriptor.digest().to_string()
    );
    let second = curl(&[&served.url(&format!("/v2/clash/x/manifests/{}", b.descriptor.digest()))]);
    assert_eq!(
        second.status, 200,
        "the later ref stays reachable by digest"
    );

    let unknown_tag = curl(&[&served.url("/v2/clash/x/manifests/nope")]);
    assert_eq!(unknown_tag.status, 404);
    assert_eq!(unknown_tag.error_code(), "MANIFEST_UNKNOWN");
    let missing = sha256_digest(b"not stored");
    let unknown_digest = curl(&[&served.url(&format!("/v2/clash/x/manifests/{missing}"))]);
    assert_eq!(unknown_digest.status, 404);
    assert_eq!(unknown_digest.error_code(), "MANIFEST_UNKNOWN");
    let layer = a.layers[0].descriptor.digest();
    let not_a_manifest = curl(&[&served.url(&format!("/v2/clash/x/manifests/{layer}"))]);
    assert_eq!(not_a_manifest.status, 404);
    assert_eq!(not_a_manifest.error_code(), "MANIFEST_UNKNOWN");
    let unknown_blob = curl(&[&served.url(&format!("/v2/clash/x/blobs/{missing}"))]);
    assert_eq!(unknown_blob.status, 404);
    assert_eq!(unknown_blob.error_code(), "BLOB_UNKNOWN");
    let unknown_name = curl(&[&served.url(&format!("/v2/no/such/blobs/{layer}"))]);
    assert_eq!(unknown_name.status, 404);
    assert_eq!(unknown_name.error_code(), "NAME_UNKNOWN");
    let unknown_tags = curl(&[&served.url("/v2/no/such/tags/list")]);
    assert_eq!(unknown_tags.error_code(), "NAME_UNKNOWN");

    for (method, path) in [
        ("PUT", "/v2/clash/x/manifests/2".to_string()),
        ("POST", "/v2/clash/x/blobs/uploads/".to_string()),
        ("DELETE", format!("/v2/clash/x/blobs/{layer}")),
        ("DELETE", "/v2/clash/x/manifests/1".to_string()),
        ("PATCH", "/v2/clash/x/blobs/uploads/1234".to_string()),
    ] {
        let reply = curl(&["-X", method, "--data-binary", "{}", &served.url(&path)]);
        assert_eq!(reply.status, 405, "{method} {path}");
        assert_eq!(reply.error_code(), "UNSUPPORTED", "{method} {path}");
    }
    // Nothing was written: the tag still names image a.
    let after = curl(&["-I", &served.url("/v2/clash/x/manifests/1")]);
    assert_eq!(
        after.header("docker-content-digest"),
        a.descriptor.digest().to_string()
    );
}

#[test]
fn sigterm_lets_a_download_finish_then_the_port_closes() {
    // A blob far larger than the socket buffers and the server's read-ahead, so a
    // download cut off at SIGTERM cannot have been written out already.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let big = big_image(&store, 96 * MIB, 11);
    store
        .set_ref("127.0.0.1:5000/big/noise:1", &big.descriptor)
        .unwrap();
    let mut served = Served::start(store.root());
    let layer = &big.layers[0];
    let url = served.url(&format!(
        "/v2/big/noise/blobs/{}",
        layer.descriptor.digest()
    ));
    // About 4 s at this rate; SIGTERM arrives during it. (To a file: a pipe nobody
    // reads until the server has stopped would stall the download.)
    let download = dir.path().join("download");
    let slow = Command::new("curl")
        .args(["-sS", "--fail", "--limit-rate", "24M", "-o"])
        .arg(&download)
        .arg(&url)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let status = served.stop();
    assert!(status.success(), "serve exited with {status}");
    let output = slow.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the download in flight failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        std::fs::read(&download).unwrap() == layer.blob,
        "the download in flight differs"
    );
    assert!(
        TcpStream::connect(&served.addr).is_err(),
        "the port still accepts connections"
    );
}

#[test]
fn the_library_server_starts_on_port_0_and_never_completes_a_corrupt_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let image = tagged_image(&store, "docker.io/library/alpine:latest", "amd64");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = ServeOptions {
        verify_blobs: true,
        ..ServeOptions::default()
    };
    let server = runtime
        .block_on(Server::start(store.clone(), "127.0.0.1:0", options))
        .unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    // docker.io names are served without the host, and `alpine` finds `library/alpine`.
    for name in ["library/alpine", "alpine"] {
        let reply = curl(&["-I", &format!("http://{addr}/v2/{name}/manifests/latest")]);
        assert_eq!(reply.status, 200, "{name}");
        assert_eq!(
            reply.header("docker-content-digest"),
            image.descriptor.digest().to_string()
        );
    }
    // skopeo reads it through the library server too.
    let copied = dir.path().join("copy");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{addr}/library/alpine:latest"),
        &format!("oci:{}:x", copied.display()),
    ]);
    assert_eq!(
        layout_digest(&copied),
        image.descriptor.digest().to_string()
    );

    // Flip the last byte of a stored layer: a whole GET fails rather than completing,
    // a range before the damage is still served.
    let layer = &image.layers[0];
    let path = store.blob_path(layer.descriptor.digest());
    let mut bytes = std::fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() ^= 0xff;
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    let url = format!(
        "http://{addr}/v2/library/alpine/blobs/{}",
        layer.descriptor.digest()
    );
    let whole = run_output("curl", &["-sS", "--fail", "-o", "/dev/null", &url]);
    assert!(!whole.status.success(), "a corrupt blob was served whole");
    let part = curl(&["-r", "0-9", &url]);
    assert_eq!(part.status, 206);
    assert_eq!(part.body, layer.blob[..10]);

    runtime.block_on(server.stop()).unwrap();
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after stop"
    );
}
