//! `stowage serve --upstream`: a pull-through mirror in front of a real registry (behind
//! the counting, pacing, corrupting fault proxy). What the store lacks is fetched once,
//! verified, streamed as it arrives and recorded; `--offline` serves what is stored;
//! `?ns=` and mirror paths pick among upstreams whose repositories share a path.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use stowage_faultproxy::{Faults, Proxy};
use stowage_store::Digest;

use crate::support::fixtures::push_with_skopeo;
use crate::support::pulling::*;
use crate::support::registry::Registry;
use crate::support::serving::{curl, ServeSetup, Served};

mod ranges;

/// `stowage serve --upstream http://PROXY ARGS` over the env's (empty) store.
fn serve_through(env: &Env, upstreams: &[&Proxy], args: &[&str]) -> Served {
    let urls: Vec<String> = upstreams
        .iter()
        .map(|p| format!("http://{}", p.addr()))
        .collect();
    let mut all: Vec<&str> = Vec::new();
    for url in &urls {
        all.extend(["--upstream", url]);
    }
    all.extend_from_slice(args);
    Served::start_with(
        &env.store(),
        &ServeSetup {
            args: &all,
            ..ServeSetup::default()
        },
    )
}

/// `n` curl clients GETting `url` at once: the sha256 (hex) of each body.
fn concurrent_gets(url: &str, n: usize) -> Vec<String> {
    let clients: Vec<_> = (0..n)
        .map(|_| {
            let url = url.to_string();
            std::thread::spawn(move || get_sha256(&url))
        })
        .collect();
    clients.into_iter().map(|c| c.join().unwrap()).collect()
}

/// `curl --fail URL`, which must succeed: the sha256 (hex) of the body.
fn get_sha256(url: &str) -> String {
    let output = Command::new("curl")
        .args(["-sS", "--fail", url])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    sha256_hex(&output.stdout)
}

/// The names of the refs the store at `store` records.
fn ref_names(store: &Path) -> Vec<String> {
    let Ok(bytes) = std::fs::read(store.join("index.json")) else {
        return Vec::new();
    };
    let index: Value = serde_json::from_slice(&bytes).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_string)
        .collect()
}

/// Waits (at most 30 s) until the store records `name`: refs are recorded once the
/// last blob's commit is through, just after the client has its bytes.
fn wait_for_ref(store: &Path, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ref_names(store).iter().any(|n| n == name) {
        assert!(
            Instant::now() < deadline,
            "{name} never recorded: {:?}",
            ref_names(store)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Pulls `reference` with `stowage pull` into a fresh store under `dir`.
fn pull_into(dir: &Path, name: &str, reference: &str) -> Value {
    let output = stowage_in(&dir.join(name), &["pull", reference]);
    assert!(
        output.status.success(),
        "pull {reference}: {}",
        stderr(&output)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn an_image_pulled_through_is_stored_recorded_and_served_again_without_upstream() {
    let env = Env::new();
    let image = big_image(&env.fixtures, 2 * MIB, 11);
    env.push(&image.descriptor, "tools/one:1");
    let served = serve_through(&env, &[&env.proxy], &[]);
    env.proxy.reset_log();

    let report = pull_into(env.dir.path(), "a", &format!("{}/tools/one:1", served.addr));
    assert_eq!(
        report["manifest_digest"],
        image.descriptor.digest().to_string()
    );
    let layer = image.layers[0].descriptor.digest();
    assert_eq!(env.gets_of(layer).len(), 1, "{:?}", env.proxy.log());
    assert!(blob_present(&env.store(), layer), "the blob is stored");
    wait_for_ref(&env.store(), &env.via_proxy("tools/one:1"));

    // Within the tag TTL, by tag and by digest: nothing goes upstream.
    env.without_network(|| {
        pull_into(env.dir.path(), "b", &format!("{}/tools/one:1", served.addr));
        let pinned = format!("{}/tools/one@{}", served.addr, image.descriptor.digest());
        pull_into(env.dir.path(), "c", &pinned);
    });
}

#[test]
fn fifty_clients_asking_for_one_blob_cause_one_upstream_fetch() {
    let env = Env::new();
    let image = big_image(&env.fixtures, 4 * MIB, 12);
    env.push(&image.descriptor, "tools/shared:1");
    let served = serve_through(&env, &[&env.proxy], &[]);
    let manifest = curl(&[&served.url("/v2/tools/shared/manifests/1")]);
    assert_eq!(manifest.status, 200);
    // Paced, so the fetch is still under way while the clients arrive.
    env.proxy.set_faults(Faults {
        rate: Some(8 << 20),
        ..Faults::default()
    });
    env.proxy.reset_log();
    let layer = image.layers[0].descriptor.digest().clone();
    let url = served.url(&format!("/v2/tools/shared/blobs/{layer}"));
    for got in concurrent_gets(&url, 50) {
        assert_eq!(got, layer.digest(), "a client got wrong bytes");
    }
    let gets = env.gets_of(&layer);
    assert_eq!(gets.len(), 1, "one upstream GET for 50 clients: {gets:?}");
}

/// Reads an HTTP/1.1 response head from `stream`; returns it and the body bytes read
/// with it.
fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..at]).into_owned();
            return (head, buf[at + 4..].to_vec());
        }
    }
}

#[test]
fn clients_get_the_first_bytes_before_upstream_has_sent_the_whole_blob() {
    let env = Env::new();
    let image = big_image(&env.fixtures, 2 * MIB, 13);
    env.push(&image.descriptor, "tools/slow:1");
    let served = serve_through(&env, &[&env.proxy], &[]);
    assert_eq!(
        curl(&[&served.url("/v2/tools/slow/manifests/1")]).status,
        200
    );
    let layer = image.layers[0].descriptor.digest().clone();
    let size = image.layers[0].descriptor.size();
    // A slow link: the blob takes seconds to come from upstream.
    env.proxy.set_faults(Faults {
        rate: Some(512 << 10),
        ..Faults::default()
    });
    env.proxy.reset_log();

    let path = format!("/v2/tools/slow/blobs/{layer}");
    let (mut first, mut first_body) = start_get(&served.addr, &path, size);
    // The client holds bytes of the blob; upstream has not sent it all yet.
    let upstream_sent = || -> u64 { env.gets_of(&layer).iter().map(|r| r.body_bytes).sum() };
    let sent = upstream_sent();
    assert!(
        sent < size,
        "the first bytes came only after upstream sent all {size} ({sent})"
    );
    assert!(
        (first_body.len() as u64) <= sent,
        "bytes sent before they arrived"
    );
    // A second client joins the fetch under way and reads the same bytes in flight.
    let (mut second, mut second_body) = start_get(&served.addr, &path, size);
    let sent = upstream_sent();
    assert!(
        sent < size,
        "the second client waited for the whole blob ({sent})"
    );
    assert_eq!(
        env.gets_of(&layer).len(),
        1,
        "the second client fetched again"
    );
    first.read_to_end(&mut first_body).unwrap();
    second.read_to_end(&mut second_body).unwrap();
    for body in [first_body, second_body] {
        assert_eq!(body.len() as u64, size);
        assert_eq!(sha256_hex(&body), layer.digest());
    }
    assert_eq!(env.gets_of(&layer).len(), 1);
}

/// Sends `GET PATH` to `addr` and reads until the first body bytes of a 200 whose
/// `Content-Length` is `size` arrive; returns the connection and those bytes.
fn start_get(addr: &str, path: &str, size: u64) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let (head, mut body) = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {size}")),
        "{head}"
    );
    let mut chunk = [0u8; 65536];
    while body.is_empty() {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "no body");
        body.extend_from_slice(&chunk[..n]);
    }
    (stream, body)
}

#[test]
fn a_corrupt_upstream_blob_is_never_sent_whole_nor_stored_and_the_next_request_heals() {
    let env = Env::new();
    let image = big_image(&env.fixtures, MIB, 14);
    env.push(&image.descriptor, "tools/bad:1");
    let served = serve_through(&env, &[&env.proxy], &["--retries", "1"]);
    assert_eq!(
        curl(&[&served.url("/v2/tools/bad/manifests/1")]).status,
        200
    );
    let layer: Digest = image.layers[0].descriptor.digest().clone();
    let size = image.layers[0].descriptor.size() as usize;
    env.proxy.set_faults(Faults {
        corrupt_blob_at: Some(1000),
        ..Faults::default()
    });
    let url = served.url(&format!("/v2/tools/bad/blobs/{layer}"));
    let output = Command::new("curl")
        .args(["-sS", "-D", "-", &url])
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "curl took a corrupt blob as complete"
    );
    let raw = output.stdout;
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
    assert!(head.contains(&format!("content-length: {size}")), "{head}");
    assert!(raw.len() - at - 4 < size, "the whole body was sent");
    assert!(
        !blob_present(&env.store(), &layer),
        "a corrupt blob was stored"
    );

    env.proxy.set_faults(Faults::default());
    assert_eq!(get_sha256(&url), layer.digest());
    assert!(blob_present(&env.store(), &layer));
}

#[test]
fn offline_serves_what_is_stored_and_nothing_else() {
    let env = Env::new();
    let stored = big_image(&env.fixtures, 64 << 10, 15);
    env.push(&stored.descriptor, "tools/kept:1");
    let absent = big_image(&env.fixtures, 64 << 10, 16);
    env.push(&absent.descriptor, "tools/absent:1");
    {
        let served = serve_through(&env, &[&env.proxy], &[]);
        pull_into(
            env.dir.path(),
            "a",
            &format!("{}/tools/kept:1", served.addr),
        );
        wait_for_ref(&env.store(), &env.via_proxy("tools/kept:1"));
    }
    let served = serve_through(&env, &[&env.proxy], &["--offline"]);
    env.without_network(|| {
        pull_into(
            env.dir.path(),
            "b",
            &format!("{}/tools/kept:1", served.addr),
        );
        let missing = curl(&[&served.url("/v2/tools/absent/manifests/1")]);
        assert_eq!(missing.status, 404);
        let blob = stored.layers[0].descriptor.digest();
        let other = absent.layers[0].descriptor.digest();
        assert_eq!(
            curl(&[&served.url(&format!("/v2/tools/kept/blobs/{blob}"))]).status,
            200
        );
        assert_eq!(
            curl(&[&served.url(&format!("/v2/tools/absent/blobs/{other}"))]).status,
            404
        );
    });
}

#[test]
fn ns_and_mirror_paths_pick_between_upstreams_with_the_same_repository() {
    let env = Env::new();
    let second = Registry::start();
    let second_proxy = Proxy::start(&second.addr(), Faults::default());
    let first_image = big_image(&env.fixtures, 32 << 10, 17);
    env.push(&first_image.descriptor, "same/repo:1");
    let second_image = big_image(&env.fixtures, 32 << 10, 18);
    crate::support::fixtures::set_ref(&env.fixtures, "other:1", &second_image.descriptor);
    push_with_skopeo(env.fixtures.root(), "other:1", &second, "same/repo:1");
    let (first, second_digest) = (
        first_image.descriptor.digest().to_string(),
        second_image.descriptor.digest().to_string(),
    );
    let second_host = second_proxy.addr();
    let digest_of = |served: &Served, path: &str| {
        let reply = curl(&[&served.url(path)]);
        assert_eq!(
            reply.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.header("docker-content-digest").to_string()
    };
    {
        let served = serve_through(&env, &[&env.proxy, &second_proxy], &[]);
        // The second registry's first, so its ref is listed first in index.json.
        let by_ns = format!("/v2/same/repo/manifests/1?ns={second_host}");
        assert_eq!(digest_of(&served, &by_ns), second_digest);
        let mirror_path = format!("/v2/{second_host}/same/repo/manifests/1");
        assert_eq!(digest_of(&served, &mirror_path), second_digest);
        assert_eq!(digest_of(&served, "/v2/same/repo/manifests/1"), first);
        // Both whole in the store, so both recorded under their own registry's name.
        for (ns, image) in [
            (&second_host, &second_image),
            (&env.proxy.addr(), &first_image),
        ] {
            for blob in [image.config.digest(), image.layers[0].descriptor.digest()] {
                let path = format!("/v2/same/repo/blobs/{blob}?ns={ns}");
                assert_eq!(curl(&[&served.url(&path)]).status, 200);
            }
            wait_for_ref(&env.store(), &format!("{ns}/same/repo:1"));
        }
    }
    // Offline, from the refs alone: ns still chooses, and without it the default
    // upstream's image is served although the other is listed first.
    let served = serve_through(&env, &[&env.proxy, &second_proxy], &["--offline"]);
    assert_eq!(
        digest_of(
            &served,
            &format!("/v2/same/repo/manifests/1?ns={second_host}")
        ),
        second_digest
    );
    assert_eq!(digest_of(&served, "/v2/same/repo/manifests/1"), first);
    drop(served);
    // A plain serve (no upstream) chooses by ns too.
    let plain = Served::start(&env.store());
    assert_eq!(
        digest_of(
            &plain,
            &format!("/v2/same/repo/manifests/1?ns={}", env.proxy.addr())
        ),
        first
    );
    assert_eq!(
        digest_of(
            &plain,
            &format!("/v2/same/repo/manifests/1?ns={second_host}")
        ),
        second_digest
    );
}

#[test]
fn the_platform_image_of_an_index_pulled_through_is_recorded_under_the_tag() {
    let env = Env::new();
    let index = crate::support::fixtures::two_platform_index(&env.fixtures);
    env.push(&index.descriptor, "multi/arch:1");
    let arm64 = index.images[1].descriptor.digest().to_string();
    let pull = |store: &str, served: &Served| {
        let reference = format!("{}/multi/arch:1", served.addr);
        let output = stowage_in(
            &env.dir.path().join(store),
            &["pull", "--platform", "linux/arm64", &reference],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["manifest_digest"], arm64.as_str());
    };
    {
        let served = serve_through(&env, &[&env.proxy], &[]);
        pull("a", &served);
        wait_for_ref(&env.store(), &env.via_proxy("multi/arch:1"));
    }
    let index_json: Value =
        serde_json::from_slice(&std::fs::read(env.store().join("index.json")).unwrap()).unwrap();
    assert_eq!(index_json["manifests"][0]["digest"], arm64.as_str());
    // The amd64 image was never asked for: not fetched, not recorded.
    let amd64_layer = index.images[0].layers[0].descriptor.digest();
    assert!(!blob_present(&env.store(), amd64_layer));
    let served = serve_through(&env, &[&env.proxy], &["--offline"]);
    env.without_network(|| pull("b", &served));
}

#[test]
fn a_tag_is_trusted_for_its_ttl_and_asked_again_after_it() {
    let env = Env::new();
    let before = big_image(&env.fixtures, 16 << 10, 19);
    env.push(&before.descriptor, "tools/moving:1");
    let digest_of = |served: &Served| {
        let reply = curl(&[&served.url("/v2/tools/moving/manifests/1")]);
        assert_eq!(reply.status, 200);
        reply.header("docker-content-digest").to_string()
    };
    let served = serve_through(&env, &[&env.proxy], &[]);
    assert_eq!(digest_of(&served), before.descriptor.digest().to_string());
    // The tag moves upstream; within the TTL the resolution stands, asking nothing.
    let after = big_image(&env.fixtures, 16 << 10, 20);
    env.push(&after.descriptor, "tools/moving:1");
    env.without_network(|| {
        assert_eq!(digest_of(&served), before.descriptor.digest().to_string());
    });
    drop(served);
    let served = serve_through(&env, &[&env.proxy], &["--tag-ttl", "0"]);
    assert_eq!(digest_of(&served), after.descriptor.digest().to_string());
}

#[test]
fn when_upstream_cannot_be_reached_the_stored_ref_of_the_tag_answers() {
    let env = Env::new();
    let image = big_image(&env.fixtures, 16 << 10, 21);
    env.push(&image.descriptor, "tools/away:1");
    let proxy = Proxy::start(&env.registry.addr(), Faults::default());
    let name = format!("{}/tools/away:1", proxy.addr());
    {
        let served = serve_through(&env, &[&proxy], &[]);
        pull_into(
            env.dir.path(),
            "a",
            &format!("{}/tools/away:1", served.addr),
        );
        wait_for_ref(&env.store(), &name);
    }
    let served = serve_through(&env, &[&proxy], &["--tag-ttl", "0", "--retries", "1"]);
    drop(proxy); // its port now refuses connections
    let reply = curl(&[&served.url("/v2/tools/away/manifests/1")]);
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        reply.header("docker-content-digest"),
        image.descriptor.digest().to_string()
    );
    let unknown = curl(&[&served.url("/v2/tools/never/manifests/1")]);
    assert_eq!(
        unknown.status,
        502,
        "{}",
        String::from_utf8_lossy(&unknown.body)
    );
}
