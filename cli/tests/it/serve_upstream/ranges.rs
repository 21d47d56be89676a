//! A big blob pulled through from a slow upstream is Range-split as any pull is, and
//! its clients are still streamed the verified blob, in order, from the prefix on disk.

use stowage_faultproxy::Faults;

use super::{concurrent_gets, serve_through};
use crate::support::pulling::*;

#[test]
fn a_big_blob_pulled_through_a_slow_link_is_fetched_in_ranges_and_streamed_whole() {
    let env = Env::new();
    // 40 MiB: past the 16 MiB split threshold; 4 MiB/s a connection makes one stream
    // slow enough that the pull splits it.
    let image = big_image(&env.fixtures, 40 * MIB, 31);
    env.push(&image.descriptor, "tools/big:1");
    let served = serve_through(&env, &[&env.proxy], &[]);
    let manifest = crate::support::serving::curl(&[&served.url("/v2/tools/big/manifests/1")]);
    assert_eq!(manifest.status, 200);
    env.proxy.set_faults(Faults {
        rate: Some(4 << 20),
        ..Faults::default()
    });
    env.proxy.reset_log();
    let layer = image.layers[0].descriptor.clone();
    let url = served.url(&format!("/v2/tools/big/blobs/{}", layer.digest()));
    for got in concurrent_gets(&url, 3) {
        assert_eq!(got, layer.digest().digest());
    }
    let gets = env.gets_of(layer.digest());
    let ranged = gets.iter().filter(|r| r.range.is_some()).count();
    assert!(ranged >= 2, "the blob was not fetched in ranges: {gets:?}");
    // Each byte once from upstream, for all three clients (a range retried after a
    // slow window could add some: at most one range's worth).
    let fetched: u64 = gets.iter().map(|r| r.body_bytes).sum();
    assert!(
        fetched >= layer.size() && fetched <= layer.size() + (8 << 20),
        "{fetched} bytes upstream for a {} byte blob: {gets:?}",
        layer.size()
    );
}
