//! A fleet of 16 nodes warming one lockfile at once: each node a `stowage serve
//! --upstream` on 127.0.0.2 to 127.0.0.17 over its own store, and a `stowage sync
//! --peers` of the lockfile into that store, all 16 started together. The upstream is
//! the real registry behind the counting proxy, paced like a slow link so the warm
//! lasts long enough to kill nodes in the middle of it. Each blob's owner pulls it
//! through from upstream once and the others fetch it from the owner, so upstream
//! serves about the image set once, not 16 times; the bound asserted is loose (the
//! tight goals are measured by `benches/fleet.sh`).

use std::time::{Duration, Instant};

use stowage_faultproxy::Faults;

use crate::support::fleet::*;
use crate::support::pulling::{stderr, Env, MIB};

const NODES: usize = 16;

/// The set: one 16 MiB layer, 30 x 256 KiB, and a factored-style image of 8 small
/// layers, two of them shared with the 30.
fn images(env: &Env) -> ImageSet {
    push_images(env, 16 * MIB, 256 << 10, 30, 8)
}

/// A slow upstream: +20 ms a request, each connection paced to 8 MB/s, so the big
/// layer takes about two seconds to come through.
fn pace(env: &Env) {
    env.proxy.set_faults(Faults {
        delay: Duration::from_millis(20),
        rate: Some(8_000_000),
        ..Faults::default()
    });
}

/// Upstream blob bytes over the image set's bytes.
fn egress(env: &Env, set: &ImageSet) -> f64 {
    env.proxy.blob_bytes() as f64 / set.bytes() as f64
}

fn assert_warm(nodes: &[Node], which: impl Fn(usize) -> bool, lockfile: &std::path::Path) {
    for (i, node) in nodes.iter().enumerate().filter(|(i, _)| which(*i)) {
        let pinned = verify_lock(node, lockfile);
        assert!(
            pinned.status.success(),
            "node {i} ({}) lacks pinned blobs: {}",
            node.addr,
            stderr(&pinned)
        );
        let intact = verify_all(node);
        assert!(
            intact.status.success(),
            "node {i} ({}) stores a corrupt blob: {}",
            node.addr,
            stderr(&intact)
        );
    }
}

#[test]
fn sixteen_nodes_warm_a_lockfile_with_about_one_upstream_copy() {
    let _one = one_fleet();
    let env = Env::new();
    let set = images(&env);
    let lockfile = lock(&env, &set);
    pace(&env);
    let nodes = start_nodes(&env, &reserve_addrs(NODES), &[]);
    let started = Instant::now();
    let outputs = wait_all(start_syncs(&nodes, &lockfile, &[]));
    let took = started.elapsed();
    for (i, output) in outputs.iter().enumerate() {
        assert!(
            output.status.success(),
            "node {i} sync: {}\n{}",
            stderr(output),
            serve_log(&nodes[i])
        );
    }
    assert_warm(&nodes, |_| true, &lockfile);
    let ratio = egress(&env, &set);
    eprintln!(
        "fleet of {NODES}: {} upstream blob bytes for a set of {} ({ratio:.2}x), {} blob GETs, {took:?}",
        env.proxy.blob_bytes(),
        set.bytes(),
        env.proxy.blob_gets().len()
    );
    // Direct, every node would cost 16x.
    assert!(
        ratio <= 2.0,
        "upstream served {ratio:.2}x the image set to {NODES} nodes ({} blob GETs); node 1's \
         sync: {}\n{}",
        env.proxy.blob_gets().len(),
        stderr(&outputs[1]),
        serve_log(&nodes[1])
    );
}

#[test]
fn two_nodes_killed_mid_warm_leave_the_others_complete() {
    let _one = one_fleet();
    let env = Env::new();
    let set = images(&env);
    let lockfile = lock(&env, &set);
    pace(&env);
    let addrs = reserve_addrs(NODES);
    let mut nodes = start_nodes(&env, &addrs, &[]);
    // The owner of the big layer and one other node die while it is coming through.
    let owner = stowage::rendezvous::owner(&addrs, &set.big_layer).unwrap();
    let owner = addrs.iter().position(|a| a == owner).unwrap();
    let other = (owner + NODES / 2) % NODES;
    let mut syncs = start_syncs(&nodes, &lockfile, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let big_bytes = || -> u64 {
        env.gets_of(&set.big_layer)
            .iter()
            .map(|r| r.body_bytes)
            .sum()
    };
    while big_bytes() < (4 * MIB) as u64 {
        assert!(
            Instant::now() < deadline,
            "the big layer never came through"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for dead in [owner, other] {
        nodes[dead].kill();
        let _ = syncs[dead].kill();
    }
    let outputs = wait_all(syncs);
    let alive = |i: usize| i != owner && i != other;
    for (i, output) in outputs.iter().enumerate().filter(|(i, _)| alive(*i)) {
        assert!(
            output.status.success(),
            "node {i} sync with nodes {owner} and {other} killed: {}",
            stderr(output)
        );
    }
    assert_warm(&nodes, alive, &lockfile);
    let ratio = egress(&env, &set);
    eprintln!("two killed: {ratio:.2}x the image set upstream");
    assert!(
        ratio <= 2.5,
        "upstream served {ratio:.2}x the image set: {:?}",
        env.blob_get_paths()
    );
}

#[test]
fn a_node_serving_a_flipped_byte_is_named_and_nothing_corrupt_is_stored() {
    let _one = one_fleet();
    let env = Env::new();
    let set = images(&env);
    let lockfile = lock(&env, &set);
    pace(&env);
    // The big layer's owner lies: a proxy in front of its serve flips a bit of every
    // blob it sends.
    let addrs = reserve_addrs(NODES);
    let owner = stowage::rendezvous::owner(&addrs, &set.big_layer).unwrap();
    let owner = addrs.iter().position(|a| a == owner).unwrap();
    let nodes = start_nodes(&env, &addrs, &[owner]);
    let liar = nodes[owner].addr.clone();
    let outputs = wait_all(start_syncs(&nodes, &lockfile, &[]));
    for (i, output) in outputs.iter().enumerate() {
        assert!(
            output.status.success(),
            "node {i} sync: {}\n{}",
            stderr(output),
            serve_log(&nodes[i])
        );
    }
    let named: Vec<usize> = outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            let err = stderr(o);
            err.contains("do not match") && err.contains(&liar)
        })
        .map(|(i, _)| i)
        .collect();
    assert!(
        !named.is_empty(),
        "no node named the lying peer {liar}: {}",
        stderr(&outputs[1])
    );
    let front = nodes[owner].front.as_ref().unwrap();
    assert!(
        front
            .blob_gets()
            .iter()
            .any(|r| r.path.ends_with(&set.big_layer.to_string())),
        "nobody asked the liar for the layer it owns"
    );
    assert_warm(&nodes, |_| true, &lockfile);
    let ratio = egress(&env, &set);
    eprintln!(
        "a liar: named by {} nodes, {ratio:.2}x the image set upstream",
        named.len()
    );
    assert!(ratio <= 2.5, "upstream served {ratio:.2}x the image set");
}
