//! `gc --max-size` and `--max-age` on a cache node (issue #16): images pulled longest
//! ago go first, a lockfile's pins never, and what an evicted image alone used leaves
//! the store.

use crate::support::fixtures::{put_image, put_layer, Compression, Entry, Image};
use crate::support::pulling::*;
use crate::support::serving::{curl, ServeSetup, Served};

fn image(env: &Env, name: &str, len: usize, seed: u64) -> Image {
    let layer = put_layer(
        &env.fixtures,
        &[Entry::file(name, noise(len, seed), 0o644)],
        Compression::Zstd,
    );
    put_image(&env.fixtures, "amd64", vec![layer])
}

fn pin(registry: &str, repo_tag: &str, image: &Image) -> String {
    let layer = &image.layers[0].descriptor;
    format!(
        "version = 1\n[[image]]\nreference = \"{registry}/{repo_tag}\"\ndigest = \"{}\"\n\
         platform = \"linux/amd64\"\nkind = \"oci\"\n[[image.layer]]\ndigest = \"{}\"\n\
         size = {}\nmedia_type = \"{}\"\n",
        image.descriptor.digest(),
        layer.digest(),
        layer.size(),
        layer.media_type()
    )
}

fn names(evicted: &serde_json::Value) -> Vec<String> {
    evicted["evicted"]
        .as_array()
        .expect("evicted")
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_least_recently_used_images_go_first_and_pinned_ones_stay() {
    let env = Env::new();
    let a = image(&env, "a.bin", MIB, 1);
    let b = image(&env, "b.bin", 2 * MIB, 2);
    let c = image(&env, "c.bin", 3 * MIB, 3);
    for (image, repo_tag) in [(&a, "evict/a:1"), (&b, "evict/b:1"), (&c, "evict/c:1")] {
        env.push(&image.descriptor, repo_tag);
    }
    for repo_tag in ["evict/b:1", "evict/c:1", "evict/a:1"] {
        env.pull(&[&env.via_proxy(repo_tag)]);
    }
    // b is pinned by the site's lockfile; of the others, c was used longest ago.
    let keep = env.dir.path().join("keep.lock");
    std::fs::write(&keep, pin(&env.proxy.addr(), "evict/b:1", &b)).unwrap();
    let keep = keep.to_str().unwrap();

    let planned = env.json(&["gc", "--max-size", "3.5MiB", "--keep", keep, "--dry-run"]);
    assert_eq!(names(&planned), [env.via_proxy("evict/c:1")], "{planned}");
    assert!(blob_present(&env.store(), c.layers[0].descriptor.digest()));

    let report = env.json(&["gc", "--max-size", "3.5MiB", "--keep", keep]);
    assert_eq!(names(&report), [env.via_proxy("evict/c:1")], "{report}");
    assert!(report["evicted"][0]["bytes_freed"].as_u64().unwrap() >= 3 * MIB as u64);
    assert!(report["live_bytes_after"].as_u64().unwrap() <= 3 * MIB as u64 + MIB as u64 / 2);
    assert!(!blob_present(&env.store(), c.layers[0].descriptor.digest()));
    assert!(blob_present(&env.store(), a.layers[0].descriptor.digest()));
    let listed = env.json(&["ls"]).to_string();
    assert!(
        !listed.contains("evict/c:1") && listed.contains("evict/a:1"),
        "{listed}"
    );

    // Loading, serving or pulling again counts as a use: a, pulled again, is newest;
    // with no limit on size, --max-age 0s evicts every image the lockfile does not pin.
    env.pull(&[&env.via_proxy("evict/a:1")]);
    let report = env.json(&["gc", "--max-age", "0s", "--keep", keep]);
    assert_eq!(names(&report), [env.via_proxy("evict/a:1")], "{report}");
    let verify = env.json(&["verify"]);
    assert_eq!(
        verify["missing"].as_array().map_or(1, Vec::len),
        0,
        "{verify}"
    );
    let listed = env.json(&["ls"]).to_string();
    assert!(listed.contains("evict/b:1"), "{listed}");

    // A size that is not one is refused by name.
    let refused = env.stowage(&["gc", "--max-size", "lots"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("\"lots\" is not a size"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn serve_with_max_size_evicts_until_the_store_fits_and_serves_the_rest() {
    let env = Env::new();
    let old = image(&env, "old.bin", 2 * MIB, 11);
    let new = image(&env, "new.bin", 2 * MIB, 12);
    env.push(&old.descriptor, "evict/old:1");
    env.push(&new.descriptor, "evict/new:1");
    env.pull(&[&env.via_proxy("evict/old:1")]);
    env.pull(&[&env.via_proxy("evict/new:1")]);
    // Room for one: serve checks at start, then once a minute.
    let mut served = Served::start_with(
        &env.store(),
        &ServeSetup {
            args: &["--max-size", "3MiB"],
            ..ServeSetup::default()
        },
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while blob_present(&env.store(), old.layers[0].descriptor.digest()) {
        assert!(
            std::time::Instant::now() < deadline,
            "serve --max-size evicted nothing"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let listed = env.json(&["ls"]).to_string();
    assert!(
        !listed.contains("evict/old:1") && listed.contains("evict/new:1"),
        "{listed}"
    );
    let reply = curl(&[&served.url("/v2/evict/new/manifests/1")]);
    assert_eq!(reply.status, 200);
    served.stop();
}
