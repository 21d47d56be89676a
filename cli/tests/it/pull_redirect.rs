//! Registries send blob GETs on to a storage host with a redirect. stowage follows
//! it, and its Authorization header stays with the registry: the storage host (here a
//! second real registry, without auth, holding the same image) never sees it, for
//! whole blobs and for the ranges of a big one alike.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::auth_client::push_as;
use crate::support::fixtures::{push_with_skopeo, set_ref};
use crate::support::pulling::{big_image, BIN, MIB};
use crate::support::registry::{Registry, RegistryConfig};
use crate::support::tls::Htpasswd;
use stowage_faultproxy::{Faults, Proxy};
use stowage_store::Store;

const USER: &str = "puller";
const PASSWORD: &str = "pass-3f9a-redirect";

#[test]
fn authorization_is_not_sent_to_the_storage_host_a_blob_get_redirects_to() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Store::open(dir.path().join("fixtures")).unwrap();
    // Big enough to be split into ranges on a paced link, so ranges are redirected too.
    let image = big_image(&fixtures, 40 * MIB, 11);
    set_ref(&fixtures, "app:1.0", &image.descriptor);

    let htpasswd = Htpasswd::new(USER, PASSWORD);
    let registry = Registry::start_config(RegistryConfig {
        extra_yaml: htpasswd.auth_yaml(),
        ready_statuses: vec![401],
        ..RegistryConfig::default()
    });
    push_as(
        fixtures.root(),
        "app:1.0",
        &registry,
        "app:1.0",
        &format!("{USER}:{PASSWORD}"),
        None,
    );
    let storage = Registry::start();
    push_with_skopeo(fixtures.root(), "app:1.0", &storage, "app:1.0");

    // Paced like a CDN, so the big layer's one stream is split into ranges.
    let storage_proxy = Proxy::start(
        &storage.addr(),
        Faults {
            rate: Some(16_000_000),
            ..Faults::default()
        },
    );
    let front = Proxy::start(
        &registry.addr(),
        Faults {
            redirect_blobs_to: Some(format!("http://{}", storage_proxy.addr())),
            ..Faults::default()
        },
    );

    let reference = format!("{}/app:1.0", front.addr());
    let mut child = Command::new(BIN)
        .arg("--store")
        .arg(dir.path().join("store"))
        .args(["--json", "pull", "--username", USER, "--password-stdin"])
        .arg(&reference)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "pull through a redirecting registry failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The registry got the credentials and redirected every blob GET...
    let redirected = front.blob_gets();
    assert!(!redirected.is_empty(), "no blob GET reached the registry");
    for record in &redirected {
        assert_eq!(record.status, 307, "{record:?}");
        assert!(
            record.authorization,
            "a blob GET reached the registry without credentials: {record:?}"
        );
    }
    // ...and the storage host served them, ranges included, without ever seeing them.
    let served = storage_proxy.blob_gets();
    assert_eq!(served.len(), redirected.len(), "{served:#?}");
    assert!(
        served.iter().filter(|r| r.range.is_some()).count() > 3,
        "the big layer was not fetched as ranges: {served:#?}"
    );
    for record in &served {
        assert!(
            matches!(record.status, 200 | 206),
            "the storage host answered {record:?}"
        );
        assert!(
            !record.authorization,
            "the Authorization header followed the redirect to another host: {record:?}"
        );
    }
    let layer = image.layers[0].descriptor.digest().to_string();
    assert!(
        served.iter().any(|r| r.path.ends_with(&layer)),
        "the layer was not fetched from the storage host: {served:#?}"
    );
}
