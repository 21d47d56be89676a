//! The chaos round: a pull through a paced proxy (so every kill lands mid-transfer)
//! killed with SIGKILL at a random moment, again and again. After every round the
//! store passes `verify`; at the end the image is whole and the bytes the registry
//! sent stay close to the image's size: a kill costs moments, not blobs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::pulling::*;
use stowage_faultproxy::Faults;

/// Rounds of `make test`; `STOWAGE_CHAOS_ROUNDS` asks for more (`make soak`).
fn rounds() -> u32 {
    std::env::var("STOWAGE_CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

#[test]
fn fifty_sigkills_mid_pull_lose_nothing_and_cost_little() {
    let env = Env::new();
    let size = 64 * MIB;
    let image = big_image(&env.fixtures, size, 7);
    env.push(&image.descriptor, "chaos/big:1");
    let layer = image.layers[0].descriptor.clone();
    // 512 KB/s a connection: a slow link, so the blob is split over 8 connections
    // and one round of ~300 ms brings about a megabyte.
    env.proxy.set_faults(Faults {
        rate: Some(512_000),
        ..Faults::default()
    });
    let reference = env.via_proxy("chaos/big:1");
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let rounds = rounds();
    // A cycle is one pull from an empty store to the whole image, killed as often as
    // it takes; more rounds than one image lasts start more cycles (`make soak`).
    let finish_cycle = |kills: u32| {
        env.pull(&[&reference]);
        assert!(blob_present(&env.store(), layer.digest()));
        assert!(env.stowage(&["verify"]).status.success());
        let sent: u64 = env
            .gets_of(layer.digest())
            .iter()
            .map(|r| r.body_bytes)
            .sum();
        let ratio = sent as f64 / layer.size() as f64;
        eprintln!(
            "{kills} kills: the registry sent {sent} bytes for a {}-byte layer ({ratio:.2}x)",
            layer.size()
        );
        assert!(
            ratio < 1.3,
            "{kills} kills cost {ratio:.2}x the layer ({sent} bytes)"
        );
        std::fs::remove_dir_all(env.store()).unwrap();
        env.proxy.reset_log();
    };
    let (mut killed, mut in_cycle) = (0, 0);
    while killed < rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = Duration::from_millis(150 + seed % 300);
        let mut child = Command::new(BIN)
            .arg("--store")
            .arg(env.store())
            .args(["--json", "pull", &reference])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while started.elapsed() < wait && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let finished = child.try_wait().unwrap().is_some();
        if !finished {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
            in_cycle += 1;
        }
        let status = child.wait().unwrap();
        let verify = env.stowage(&["verify"]);
        assert!(
            verify.status.success(),
            "after kill {killed} (seed {seed}, kill after {wait:?}): verify failed: {}",
            stderr(&verify)
        );
        if finished {
            assert!(
                status.success(),
                "a pull failed on its own after {in_cycle} kills"
            );
            assert!(
                in_cycle > 10,
                "a pull finished after {in_cycle} kills: the link is too fast for the test"
            );
            finish_cycle(in_cycle);
            in_cycle = 0;
        }
    }
    assert!(!blob_present(&env.store(), layer.digest()));
    finish_cycle(in_cycle);
}
