//! `copy` and `mirror` to a second real registry: only missing blobs are uploaded
//! (counted at a proxy), same-registry copies mount, the digests survive.

use crate::support::fixtures::{gzip_zstd_image, skopeo_json};
use crate::support::pulling::*;
use crate::support::registry::Registry;
use stowage_faultproxy::{Faults, Proxy, Record};

fn uploads(proxy: &Proxy) -> Vec<Record> {
    proxy
        .log()
        .into_iter()
        .filter(|r| r.path.contains("/blobs/uploads/") && r.method != "HEAD")
        .collect()
}

fn remote_digest(registry: &Registry, repo_tag: &str) -> String {
    let target = format!("docker://{}/{repo_tag}", registry.addr());
    skopeo_json(&["inspect", "--tls-verify=false", &target])["Digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn copy_uploads_only_missing_blobs_and_mounts_within_a_registry() {
    let env = Env::new();
    let image = gzip_zstd_image(&env.fixtures, "amd64");
    env.push(&image.descriptor, "src/app:1");
    let name = env.pull(&[&env.via_proxy("src/app:1")])["reference"]
        .as_str()
        .unwrap()
        .to_string();
    let second = Registry::start();
    let proxy = Proxy::start(&second.addr(), Faults::default());
    let target = format!("{}/dst/app:1", proxy.addr());

    let first = env.json(&["copy", &name, &target]);
    assert_eq!(first["blobs_uploaded"], 3, "{first}");
    assert_eq!(
        remote_digest(&second, "dst/app:1"),
        image.descriptor.digest().to_string()
    );
    assert!(!uploads(&proxy).is_empty());

    proxy.reset_log();
    let again = env.json(&["copy", &name, &target]);
    assert_eq!(again["blobs_uploaded"], 0, "{again}");
    assert_eq!(again["blobs_present"], 3);
    assert!(uploads(&proxy).is_empty(), "{:?}", uploads(&proxy));

    // An image whose source is the target registry: blobs are mounted, not sent.
    let local = env.json(&["pull", &target])["reference"]
        .as_str()
        .unwrap()
        .to_string();
    proxy.reset_log();
    let mounted = env.json(&["copy", &local, &format!("{}/mounted/app:1", proxy.addr())]);
    assert_eq!(mounted["blobs_mounted"], 3, "{mounted}");
    assert_eq!(mounted["bytes_uploaded"], 0);
    assert!(
        uploads(&proxy)
            .iter()
            .all(|r| r.method == "POST" && r.status == 201),
        "{:?}",
        uploads(&proxy)
    );
    assert_eq!(
        remote_digest(&second, "mounted/app:1"),
        image.descriptor.digest().to_string()
    );

    // Monolithic uploads work too.
    let mono = env.json(&[
        "copy",
        "--monolithic",
        &name,
        &format!("{}/mono/app:1", second.addr()),
    ]);
    assert_eq!(mono["blobs_uploaded"], 3, "{mono}");
    assert_eq!(
        remote_digest(&second, "mono/app:1"),
        image.descriptor.digest().to_string()
    );
}

#[test]
fn mirror_pushes_every_listed_image_keeping_repository_and_tag() {
    let env = Env::new();
    let a = gzip_zstd_image(&env.fixtures, "amd64");
    let b = gzip_zstd_image(&env.fixtures, "arm64");
    env.push(&a.descriptor, "team/a:1");
    env.push(&b.descriptor, "team/b:2");
    let list = env.dir.path().join("images.txt");
    std::fs::write(
        &list,
        format!(
            "# images for the site\n{}\n\n{}  # the arm one\n",
            env.via_proxy("team/a:1"),
            env.via_proxy("team/b:2")
        ),
    )
    .unwrap();
    let second = Registry::start();
    let report = env.json(&["mirror", list.to_str().unwrap(), "--to", &second.addr()]);
    assert_eq!(report["images"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(
        remote_digest(&second, "team/a:1"),
        a.descriptor.digest().to_string()
    );
    assert_eq!(
        remote_digest(&second, "team/b:2"),
        b.descriptor.digest().to_string()
    );
}
