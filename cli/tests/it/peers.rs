//! `--peers`: a node asks other stowage serves for each blob before the registry, the
//! blob's rendezvous owner first, then the next when the owner is down, lacks the blob
//! or serves bytes that do not match; the registry sits behind the counting proxy, so
//! what it served is known. Peers are `stowage serve` processes on 127.0.0.2 to
//! 127.0.0.5, some with the image stored, some empty.

use std::path::{Path, PathBuf};

use stowage_faultproxy::{Faults, Proxy};
use stowage_store::{Digest, Store};

use crate::support::fixtures::{put_image, put_layer, Compression, Entry, Image};
use crate::support::pulling::*;
use crate::support::serving::{ServeSetup, Served};

const IMAGE: &str = "fleet/app:1";

/// An env with an image of six noise layers pushed as [`IMAGE`].
fn fleet() -> (Env, Image) {
    let env = Env::new();
    let layers = (0..6)
        .map(|i| {
            put_layer(
                &env.fixtures,
                &[Entry::file("data.bin", noise(96 << 10, 101 + 2 * i), 0o644)],
                Compression::Zstd,
            )
        })
        .collect();
    let image = put_image(&env.fixtures, "amd64", layers);
    env.push(&image.descriptor, IMAGE);
    (env, image)
}

/// Every blob of the image (config first), seven distinct ones.
fn blobs(image: &Image) -> Vec<Digest> {
    let all: Vec<Digest> = std::iter::once(image.config.digest().clone())
        .chain(image.layers.iter().map(|l| l.descriptor.digest().clone()))
        .collect();
    let distinct: std::collections::HashSet<String> = all.iter().map(|d| d.to_string()).collect();
    assert_eq!(distinct.len(), 7, "seven distinct blobs");
    all
}

/// A store under the env's dir holding the image (pulled through the proxy, whose log
/// is then cleared), or empty.
fn node_store(env: &Env, name: &str, filled: bool) -> PathBuf {
    let store = env.dir.path().join(name);
    Store::open(&store).unwrap();
    if filled {
        let output = stowage_in(&store, &["pull", &env.via_proxy(IMAGE)]);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    env.proxy.reset_log();
    store
}

/// A peer: `stowage serve` over `store` on 127.0.0.`n`.
fn peer(store: &Path, n: u8) -> Served {
    Served::start_on(store, &format!("127.0.0.{n}:0"), &ServeSetup::default())
}

/// Pulls the image into `store` with `args` (`--peers ...`); returns stderr.
fn pull_with(env: &Env, store: &Path, args: &[&str]) -> String {
    let reference = env.via_proxy(IMAGE);
    let mut all = vec!["pull", reference.as_str()];
    all.extend_from_slice(args);
    let output = stowage_in(store, &all);
    let err = stderr(&output);
    assert!(output.status.success(), "pull {args:?}: {err}");
    err
}

fn verify(store: &Path) {
    let output = stowage_in(store, &["verify"]);
    assert!(output.status.success(), "verify: {}", stderr(&output));
}

/// How many blob GETs for `digest` a proxy saw.
fn gets(proxy: &Proxy, digest: &Digest) -> usize {
    let suffix = format!("/blobs/{digest}");
    proxy
        .blob_gets()
        .iter()
        .filter(|r| r.path.ends_with(&suffix))
        .count()
}

#[test]
fn every_blob_comes_from_a_peer_and_none_from_upstream() {
    let (env, image) = fleet();
    let full_a = node_store(&env, "a", true);
    let full_b = node_store(&env, "b", true);
    let empty_c = node_store(&env, "c", false);
    let empty_d = node_store(&env, "d", false);
    let peers = [
        peer(&full_a, 2),
        peer(&full_b, 3),
        peer(&empty_c, 4),
        peer(&empty_d, 5),
    ];
    let addrs: Vec<String> = peers.iter().map(|p| p.addr.clone()).collect();
    // The empty peers own some blobs: they answer 404 and the next is asked.
    let owners: Vec<String> = blobs(&image)
        .iter()
        .map(|d| stowage::rendezvous::owner(&addrs, d).unwrap().to_string())
        .collect();
    assert!(
        owners.iter().any(|o| *o == addrs[2] || *o == addrs[3]),
        "an empty peer owns one of the 7 blobs: {owners:?}"
    );
    let node = env.dir.path().join("node");
    pull_with(&env, &node, &["--peers", &addrs.join(",")]);
    assert_eq!(
        env.proxy.blob_gets().len(),
        0,
        "the upstream served blobs: {:?}",
        env.blob_get_paths()
    );
    verify(&node);
}

#[test]
fn the_owner_down_the_next_in_rendezvous_order_serves() {
    let (env, image) = fleet();
    // Each peer behind a counting proxy (the peer's address is the proxy's), so which
    // peer served each blob is known.
    let mut serves = Vec::new();
    let mut fronts = Vec::new();
    for (i, n) in [2u8, 3, 4].into_iter().enumerate() {
        let store = node_store(&env, &format!("p{i}"), true);
        let served = peer(&store, n);
        fronts.push(Some(
            Proxy::bind(&format!("127.0.0.{n}:0"), &served.addr, Faults::default()).unwrap(),
        ));
        serves.push(served);
    }
    let addrs: Vec<String> = fronts.iter().map(|p| p.as_ref().unwrap().addr()).collect();
    let digests = blobs(&image);
    // Take down the owner of the first layer: its serve and the address it was at.
    let owner = stowage::rendezvous::owner(&addrs, &digests[1]).unwrap();
    let down = addrs.iter().position(|a| a == owner).unwrap();
    serves[down].stop();
    fronts[down] = None;
    let node = env.dir.path().join("node");
    pull_with(&env, &node, &["--peers", &addrs.join(",")]);
    assert_eq!(env.proxy.blob_gets().len(), 0, "{:?}", env.blob_get_paths());
    // Every blob came from the first peer still up in its rendezvous order, and only
    // from it.
    for digest in &digests {
        let order = stowage::rendezvous::rank(&addrs, digest);
        let first_up = order.iter().find(|a| **a != addrs[down]).unwrap();
        for (addr, front) in addrs.iter().zip(&fronts) {
            let Some(front) = front else { continue };
            let expected = usize::from(addr == first_up);
            assert_eq!(
                gets(front, digest),
                expected,
                "{digest} from {addr}; its order {order:?}, {} down",
                addrs[down]
            );
        }
    }
    verify(&node);
}

#[test]
fn a_peer_serving_a_flipped_byte_is_named_skipped_and_the_next_source_used() {
    let (env, image) = fleet();
    let stores = [node_store(&env, "a", true), node_store(&env, "b", true)];
    let serves = [peer(&stores[0], 2), peer(&stores[1], 3)];
    let fronts: Vec<Proxy> = serves
        .iter()
        .zip([2, 3])
        .map(|(s, n)| Proxy::bind(&format!("127.0.0.{n}:0"), &s.addr, Faults::default()).unwrap())
        .collect();
    let addrs: Vec<String> = fronts.iter().map(Proxy::addr).collect();
    let layer = image.layers[0].descriptor.digest().clone();
    let liar = addrs
        .iter()
        .position(|a| a == stowage::rendezvous::owner(&addrs, &layer).unwrap())
        .unwrap();
    let honest = 1 - liar;
    // The layer's owner flips a bit of every blob it sends.
    fronts[liar].set_faults(Faults {
        corrupt_blob_at: Some(1000),
        corruptions: 0,
        ..Faults::default()
    });
    let node = env.dir.path().join("node");
    let err = pull_with(&env, &node, &["--peers", &addrs.join(",")]);
    assert!(
        err.contains("do not match")
            && err.contains(&addrs[liar])
            && err.contains(&layer.to_string()),
        "the lying peer is named with the digest: {err}"
    );
    assert_eq!(gets(&fronts[liar], &layer), 1, "asked once, then skipped");
    assert_eq!(gets(&fronts[honest], &layer), 1, "the next peer served it");
    assert_eq!(env.proxy.blob_gets().len(), 0, "{:?}", env.blob_get_paths());
    verify(&node);

    // Both peers lying: the registry is the next source.
    fronts[honest].set_faults(fronts[liar].faults());
    let again = env.dir.path().join("again");
    let err = pull_with(&env, &again, &["--peers", &addrs.join(",")]);
    assert!(err.contains(&addrs[honest]), "{err}");
    assert_eq!(env.gets_of(&layer).len(), 1, "{:?}", env.blob_get_paths());
    verify(&again);
}

#[test]
fn a_node_in_the_set_fetches_what_it_owns_from_upstream_and_asks_only_peers_above_it() {
    let (env, image) = fleet();
    let stores = [node_store(&env, "a", true), node_store(&env, "b", true)];
    let serves = [peer(&stores[0], 2), peer(&stores[1], 3)];
    // This node is in the set (never asked: nothing listens there).
    let me = "127.0.0.9:9".to_string();
    let all = vec![serves[0].addr.clone(), serves[1].addr.clone(), me.clone()];
    let node = env.dir.path().join("node");
    pull_with(&env, &node, &["--peers", &all.join(","), "--self", &me]);
    // What it owns, it fetches from upstream itself: others asking it would wait for
    // that one fetch. The rest comes from the peers ranked above it.
    for digest in blobs(&image) {
        let owns = stowage::rendezvous::owner(&all, &digest) == Some(me.as_str());
        assert_eq!(
            env.gets_of(&digest).len(),
            usize::from(owns),
            "{digest}: owned by this node: {owns}"
        );
    }
    verify(&node);
}

#[test]
fn when_the_registry_fails_the_peers_ranked_below_this_node_are_asked() {
    let (env, image) = fleet();
    let stores = [node_store(&env, "a", true), node_store(&env, "b", true)];
    let serves = [peer(&stores[0], 2), peer(&stores[1], 3)];
    let digests = blobs(&image);
    // An address for this node that owns at least one of the blobs.
    let (me, all) = (1..)
        .map(|port| {
            let me = format!("127.0.0.9:{port}");
            (
                me.clone(),
                vec![serves[0].addr.clone(), serves[1].addr.clone(), me],
            )
        })
        .find(|(me, all)| {
            digests
                .iter()
                .any(|d| stowage::rendezvous::owner(all, d) == Some(me.as_str()))
        })
        .unwrap();
    // The registry answers every blob GET with 503.
    env.proxy.set_faults(Faults {
        always_503: true,
        ..Faults::default()
    });
    let node = env.dir.path().join("node");
    pull_with(
        &env,
        &node,
        &["--peers", &all.join(","), "--self", &me, "--retries", "1"],
    );
    for digest in &digests {
        let owns = stowage::rendezvous::owner(&all, digest) == Some(me.as_str());
        assert_eq!(env.gets_of(digest).len(), usize::from(owns), "{digest}");
    }
    verify(&node);
}

#[test]
fn a_slow_peer_is_left_for_the_next_which_resumes_after_its_bytes() {
    let (env, image) = fleet();
    let stores = [node_store(&env, "a", true), node_store(&env, "b", true)];
    let serves = [peer(&stores[0], 2), peer(&stores[1], 3)];
    let fronts: Vec<Proxy> = serves
        .iter()
        .zip([2, 3])
        .map(|(s, n)| Proxy::bind(&format!("127.0.0.{n}:0"), &s.addr, Faults::default()).unwrap())
        .collect();
    let addrs: Vec<String> = fronts.iter().map(Proxy::addr).collect();
    let layer = image.layers[0].descriptor.digest().clone();
    let slow = addrs
        .iter()
        .position(|a| a == stowage::rendezvous::owner(&addrs, &layer).unwrap())
        .unwrap();
    let fast = 1 - slow;
    // 16 KB/s against a limit of 64 KB/s over one second.
    fronts[slow].set_faults(Faults {
        rate: Some(16_000),
        ..Faults::default()
    });
    let node = env.dir.path().join("node");
    let limits = ["--low-speed-limit", "64000", "--low-speed-time", "1"];
    let list = addrs.join(",");
    let mut args = vec!["--peers", list.as_str()];
    args.extend_from_slice(&limits);
    pull_with(&env, &node, &args);
    assert_eq!(gets(&fronts[slow], &layer), 1);
    let resumed = fronts[fast]
        .blob_gets()
        .into_iter()
        .filter(|r| r.path.ends_with(&format!("/blobs/{layer}")))
        .map(|r| r.range)
        .collect::<Vec<_>>();
    assert!(
        matches!(resumed.as_slice(), [Some(range)] if !range.starts_with("bytes=0-")),
        "the next peer was asked for the rest only: {resumed:?}"
    );
    assert_eq!(env.proxy.blob_gets().len(), 0, "{:?}", env.blob_get_paths());
    verify(&node);
}

#[test]
fn sync_of_a_lockfile_asks_the_peers_too() {
    let (env, image) = fleet();
    let full = node_store(&env, "full", true);
    let served = peer(&full, 2);
    let lockfile = env.dir.path().join("stowage.lock");
    let locked = stowage_in(
        &full,
        &[
            "lock",
            &env.via_proxy(IMAGE),
            "-o",
            lockfile.to_str().unwrap(),
        ],
    );
    assert!(locked.status.success(), "{}", stderr(&locked));
    env.proxy.reset_log();
    let node = env.dir.path().join("node");
    let synced = stowage_in(
        &node,
        &["sync", lockfile.to_str().unwrap(), "--peers", &served.addr],
    );
    assert!(synced.status.success(), "{}", stderr(&synced));
    assert_eq!(env.proxy.blob_gets().len(), 0, "{:?}", env.blob_get_paths());
    assert!(blobs(&image).iter().all(|d| blob_present(&node, d)));
    verify(&node);
}

#[test]
fn a_peers_file_is_read_and_its_new_list_used() {
    let (env, image) = fleet();
    let full = node_store(&env, "full", true);
    let empty = node_store(&env, "empty", false);
    let (full, empty) = (peer(&full, 2), peer(&empty, 3));
    let list = env.dir.path().join("peers.txt");
    std::fs::write(&list, format!("# the fleet\n{}\n", full.addr)).unwrap();
    let spec = format!("file:{}", list.display());
    let node = env.dir.path().join("node");
    pull_with(&env, &node, &["--peers", &spec]);
    assert_eq!(env.proxy.blob_gets().len(), 0, "{:?}", env.blob_get_paths());

    // The file now names only the empty peer: the next node finds nothing there and
    // goes upstream for every blob.
    std::fs::write(&list, format!("{}\n", empty.addr)).unwrap();
    let other = env.dir.path().join("other");
    pull_with(&env, &other, &["--peers", &spec]);
    assert_eq!(env.proxy.blob_gets().len(), blobs(&image).len());
    verify(&other);
}

#[test]
fn a_dns_name_resolving_to_localhost_lists_the_peer() {
    let (env, _image) = fleet();
    let full = node_store(&env, "full", true);
    let served = Served::start(&full);
    let port = served.addr.rsplit_once(':').unwrap().1.to_string();
    for (i, spec) in [format!("dns:localhost:{port}"), format!("localhost:{port}")]
        .iter()
        .enumerate()
    {
        let node = env.dir.path().join(format!("node{i}"));
        pull_with(&env, &node, &["--peers", spec]);
        assert_eq!(
            env.proxy.blob_gets().len(),
            0,
            "{spec}: {:?}",
            env.blob_get_paths()
        );
        verify(&node);
    }
}

/// `serve --upstream URL --peers SPEC` over `store` on 127.0.0.`n`.
fn pull_through_peer(env: &Env, store: &Path, n: u8, spec: &str) -> Served {
    let upstream = format!("http://{}", env.proxy.addr());
    Served::start_on(
        store,
        &format!("127.0.0.{n}:0"),
        &ServeSetup {
            args: &["--upstream", &upstream, "--peers", spec],
            ..ServeSetup::default()
        },
    )
}

#[test]
fn a_pull_through_fleet_fetches_each_blob_upstream_once() {
    let (env, image) = fleet();
    // The serves start before their addresses are known: the peers file lists them
    // once they listen, and each serve reads it again when it changed.
    let list = env.dir.path().join("peers.txt");
    std::fs::write(&list, "").unwrap();
    let spec = format!("file:{}", list.display());
    let stores: Vec<PathBuf> = (0..3)
        .map(|i| node_store(&env, &format!("s{i}"), false))
        .collect();
    let serves: Vec<Served> = stores
        .iter()
        .zip([2u8, 3, 4])
        .map(|(store, n)| pull_through_peer(&env, store, n, &spec))
        .collect();
    let addrs: Vec<String> = serves.iter().map(|s| s.addr.clone()).collect();
    std::fs::write(&list, addrs.join("\n")).unwrap();
    let digests = blobs(&image);

    // Two nodes outside the fleet ask the peers: each blob's owner pulls it through
    // from upstream once and keeps it.
    for node in ["node1", "node2"] {
        let node = env.dir.path().join(node);
        pull_with(&env, &node, &["--peers", &addrs.join(",")]);
        verify(&node);
    }
    for digest in &digests {
        assert_eq!(
            env.gets_of(digest).len(),
            1,
            "{digest}: {:?}",
            env.blob_get_paths()
        );
        let owner = stowage::rendezvous::owner(&addrs, digest).unwrap();
        let at = addrs.iter().position(|a| a == owner).unwrap();
        assert!(
            blob_present(&stores[at], digest),
            "{digest} kept by its owner {owner}"
        );
    }

    // A client of one serve (its node's containerd, say): the serve asks its peers
    // (never itself) before upstream, so the blobs the others own come from them.
    let client = env.dir.path().join("client");
    let via_serve = format!("{}/{IMAGE}", addrs[0]);
    let output = stowage_in(&client, &["pull", &via_serve]);
    assert!(output.status.success(), "{}", stderr(&output));
    verify(&client);
    for digest in &digests {
        assert_eq!(
            env.gets_of(digest).len(),
            1,
            "{digest}: {:?}",
            env.blob_get_paths()
        );
    }
}
