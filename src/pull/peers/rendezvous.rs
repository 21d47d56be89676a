//! Which peer owns a blob: rendezvous (highest random weight) hashing. Every peer's
//! weight for a digest is a hash of the two; the peers ranked by weight, highest
//! first, are the order a node asks them in, and the first is the blob's owner. Every
//! node computes the same order from the same peer set, with no coordination, and a
//! peer that joins or leaves changes the owner only of the blobs it wins or held:
//! about 1/N of them.

use crate::store::{sha256_of, Digest};

/// The weight of `peer` (an address as the peer set lists it) for `digest`: the first
/// 8 bytes of SHA-256 over `peer`, a newline and the digest, big-endian. The same on
/// every machine and in every process.
pub fn weight(peer: &str, digest: &Digest) -> u64 {
    let hashed = sha256_of(format!("{peer}\n{digest}").as_bytes());
    u64::from_str_radix(&hashed.digest()[..16], 16).expect("sha256 hex")
}

/// `peers` in the order to ask them for `digest`: highest weight first (ties, which
/// need two equal 64-bit hashes, by address).
pub fn rank<'p>(peers: &'p [String], digest: &Digest) -> Vec<&'p str> {
    let mut weighted: Vec<(u64, &str)> = peers
        .iter()
        .map(|p| (weight(p, digest), p.as_str()))
        .collect();
    weighted.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    weighted.into_iter().map(|(_, p)| p).collect()
}

/// The peer that owns `digest` among `peers`, if there are any.
pub fn owner<'p>(peers: &'p [String], digest: &Digest) -> Option<&'p str> {
    peers
        .iter()
        .max_by(|a, b| {
            weight(a, digest)
                .cmp(&weight(b, digest))
                .then(b.as_str().cmp(a.as_str()))
        })
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.0.{}.{}:5000", i / 250, i % 250 + 1))
            .collect()
    }

    fn digests(n: usize) -> Vec<Digest> {
        (0..n)
            .map(|i| sha256_of(format!("blob {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn the_order_is_deterministic_and_its_head_is_the_owner() {
        let peers = peers(5);
        let digest = sha256_of(b"x");
        let ranked = rank(&peers, &digest);
        assert_eq!(ranked, rank(&peers, &digest));
        assert_eq!(ranked.len(), 5);
        assert_eq!(Some(ranked[0]), owner(&peers, &digest));
        // Fixed across builds and machines: a change of the hash would move every
        // blob of a running fleet at the upgrade.
        assert_eq!(
            weight("10.0.0.1:5000", &sha256_of(b"x")),
            u64::from_str_radix(
                &sha256_of(format!("10.0.0.1:5000\n{}", sha256_of(b"x")).as_bytes()).digest()[..16],
                16
            )
            .unwrap()
        );
        let mut reversed = peers.clone();
        reversed.reverse();
        assert_eq!(
            rank(&reversed, &digest),
            ranked,
            "the list's order does not matter"
        );
    }

    /// Each digest's weights for every peer, computed once (a million hashes).
    fn weights(peers: &[String], digests: &[Digest]) -> Vec<Vec<u64>> {
        digests
            .iter()
            .map(|d| peers.iter().map(|p| weight(p, d)).collect())
            .collect()
    }

    /// The owner's index among the peers `alive` keeps, as `owner` picks it.
    fn owner_of(weights: &[u64], alive: impl Fn(usize) -> bool) -> usize {
        (0..weights.len())
            .filter(|i| alive(*i))
            .max_by_key(|i| weights[*i])
            .unwrap()
    }

    #[test]
    fn a_leave_moves_only_the_blobs_its_peer_owned_and_a_join_about_1_in_n_plus_1() {
        let mut all = peers(100);
        all.push("10.0.9.9:5000".to_string());
        let newcomer = 100;
        let digests = digests(10_000);
        let weights = weights(&all, &digests);
        // `owner_of` is `owner`, on a sample.
        for (digest, w) in digests.iter().zip(&weights).take(200) {
            assert_eq!(
                owner(&all[..100], digest),
                Some(all[owner_of(w, |i| i < 100)].as_str())
            );
        }
        let before: Vec<usize> = weights.iter().map(|w| owner_of(w, |i| i < 100)).collect();

        // Peer 37 leaves: only its blobs move.
        let gone = 37;
        let mut moved = 0;
        for (w, was) in weights.iter().zip(&before) {
            let now = owner_of(w, |i| i < 100 && i != gone);
            if now != *was {
                assert_eq!(*was, gone, "a blob moved from {}, which stayed", all[*was]);
                moved += 1;
            }
        }
        assert_eq!(moved, before.iter().filter(|o| **o == gone).count());
        assert!(moved > 0, "the peer that left owned something");
        // Balanced: about 100 each.
        let most = (0..100)
            .map(|p| before.iter().filter(|o| **o == p).count())
            .max()
            .unwrap();
        assert!(most < 200, "one peer owns {most} of 10000");

        // A peer joins: what moves, moves to it, about 10 000 / 101 = 99 blobs (the
        // binomial's standard deviation is about 10).
        let mut moved = 0;
        for (w, was) in weights.iter().zip(&before) {
            let now = owner_of(w, |_| true);
            if now != *was {
                assert_eq!(now, newcomer, "a blob moved between old peers");
                moved += 1;
            }
        }
        assert!((50..150).contains(&moved), "{moved} of 10000 moved");
    }
}
