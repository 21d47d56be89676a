//! `stowage pull` when things go wrong, injected by a proxy in front of the real
//! registry: big blobs in ranges, cuts, SIGKILL, corruption, 429 and 503.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::fixtures::gzip_zstd_image;
use crate::support::pulling::*;
use stowage_faultproxy::Faults;

#[test]
fn a_big_blob_arrives_as_ranges_and_a_registry_ignoring_range_still_works() {
    let env = Env::new();
    let image = big_image(&env.fixtures, 40 * MIB, 1);
    env.push(&image.descriptor, "big/one:1");
    let layer = image.layers[0].descriptor.digest();

    // Each connection capped, as a CDN's are: the one stream is slow, so it is split.
    env.proxy.set_faults(Faults {
        rate: Some(16_000_000),
        ..Faults::default()
    });
    env.pull(&[&env.via_proxy("big/one:1")]);
    let gets = env.gets_of(layer);
    assert!(
        gets.len() >= 4,
        "too few requests for a 40 MiB blob: {gets:?}"
    );
    assert!(gets.iter().all(|r| r.status == 206), "{gets:?}");
    let sent: u64 = gets.iter().map(|r| r.body_bytes).sum();
    let size = image.layers[0].descriptor.size();
    assert!(
        (sent as f64) < 1.1 * size as f64,
        "{sent} bytes sent for a {size}-byte blob: the ranges overlap the first stream"
    );
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
