//! A registry that lies about sizes, answers a token request without end, drips a
//! blob a byte at a time, or sends credentials' token requests in the clear to
//! another host: each gets a clear error within seconds, and the store is left as
//! it was (no partial download, no ref).

mod cases;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::fixtures::sha256_digest;
use crate::support::hostile::{Body, Hostile, Reply};
use crate::support::pulling::{partial_bytes, BIN};
use crate::support::registry::{Registry, RegistryConfig};
use crate::support::tls::TlsFiles;
use crate::support::token_issuer::{IssuerPolicy, TokenIssuer};
use serde_json::json;

/// Runs stowage with `args` (and `stdin`), killing it and failing after `limit`.
fn bounded(store: &Path, args: &[&str], stdin: &str, limit: Duration) -> Output {
    let mut child = Command::new(BIN)
        .arg("--store")
        .arg(store)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "stowage {args:?} still running after {limit:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn failed_with(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    stderr
}

/// A registry serving `repo:1` as one manifest with a real config and `layer`, whose
/// bytes `layer_body` sends.
fn lying_registry(
    layer: serde_json::Value,
    layer_body: impl Fn() -> Body + Send + Sync + 'static,
) -> Hostile {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let config_digest = sha256_digest(&config).to_string();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [layer.clone()],
    });
    let layer_digest = layer["digest"].as_str().unwrap().to_string();
    Hostile::start(move |head| {
        if head.path.ends_with("/manifests/1") {
            return Reply::json(200, &manifest)
                .with_header("Content-Type", "application/vnd.oci.image.manifest.v1+json");
        }
        if head.path.ends_with(&config_digest) {
            return Reply {
                status: 200,
                headers: vec![],
                body: Body::Bytes(config.clone()),
            };
        }
        if head.path.ends_with(&layer_digest) {
            return Reply {
                status: 200,
                headers: vec![],
                body: layer_body(),
            };
        }
        Reply::json(200, &json!({}))
    })
}

fn assert_untouched(store: &Path) {
    assert_eq!(
        partial_bytes(store),
        0,
        "a partial download was left behind"
    );
    let index = std::fs::read_to_string(store.join("index.json")).unwrap_or_default();
    assert!(!index.contains("repo:1"), "{index}");
}

#[test]
fn an_absurd_layer_size_is_refused_before_a_byte_is_fetched() {
    let dir = tempfile::tempdir().unwrap();
    // Past what an OCI descriptor may say (int64), and past what this disk holds.
    for (size, says) in [
        (1u64 << 63, "largest size a descriptor may have"),
        (u64::MAX, "largest size a descriptor may have"),
        (1u64 << 50, "free"),
    ] {
        let layer = json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{}", "ab".repeat(32)),
            "size": size,
        });
        let registry = lying_registry(layer, || Body::Endless {
            prefix: vec![],
            filler: 0,
        });
        let store = dir.path().join(format!("store-{size}"));
        let reference = format!("{}/repo:1", registry.addr());
        let output = bounded(&store, &["pull", &reference], "", Duration::from_secs(20));
        let stderr = failed_with(&output);
        assert!(
            stderr.contains(&size.to_string()) && stderr.contains(says),
            "size {size}: {stderr}"
        );
        assert_untouched(&store);
    }
}

#[test]
fn an_endless_token_answer_is_cut_at_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Hostile::start(|_| Reply {
        status: 200,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: Body::Endless {
            prefix: br#"{"token":""#.to_vec(),
            filler: b'a',
        },
    });
    let realm = format!("http://{}/token", issuer.addr());
    let registry = Hostile::start(move |_| {
        Reply::json(401, &json!({"errors": []})).with_header(
            "WWW-Authenticate",
            &format!("Bearer realm=\"{realm}\",service=\"evil\""),
        )
    });
    let store = dir.path().join("store");
    let reference = format!("{}/repo:1", registry.addr());
    let output = bounded(&store, &["pull", &reference], "", Duration::from_secs(20));
    let stderr = failed_with(&output);
    assert!(
        stderr.contains("token service") && stderr.contains("262144"),
        "{stderr}"
    );
    assert_untouched(&store);
}

#[test]
fn a_dripping_registry_ends_with_the_low_speed_limit() {
    let dir = tempfile::tempdir().unwrap();
    let layer = json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": format!("sha256:{}", "cd".repeat(32)),
        "size": 100_000,
    });
    let registry = lying_registry(layer, || Body::Drip {
        byte: 0,
        every: Duration::from_millis(50),
    });
    let store = dir.path().join("store");
    let reference = format!("{}/repo:1", registry.addr());
    let started = Instant::now();
    let output = bounded(
        &store,
        &[
            "pull",
            &reference,
            "--low-speed-limit",
            "1000",
            "--low-speed-time",
            "1",
            "--retries",
            "2",
        ],
        "",
        Duration::from_secs(30),
    );
    let stderr = failed_with(&output);
    assert!(
        stderr.contains("low-speed limit of 1000 bytes/s"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let index = std::fs::read_to_string(store.join("index.json")).unwrap_or_default();
    assert!(!index.contains("repo:1"), "{index}");
}

#[test]
fn credentials_never_go_in_the_clear_to_a_token_realm_on_another_host() {
    let issuer = TokenIssuer::start(IssuerPolicy::default());
    // The registry speaks TLS; its realm is plain HTTP on another host name.
    let foreign_realm = issuer.realm().replace("127.0.0.1", "localhost");
    let tls = TlsFiles::new(&["127.0.0.1", "localhost"]);
    let registry = Registry::start_config(RegistryConfig {
        extra_yaml: issuer
            .registry_yaml()
            .replace(&issuer.realm(), &foreign_realm),
        http_yaml: tls.http_yaml(),
        ready_statuses: vec![400],
    });
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let reference = format!("{}/private/app:1", registry.addr());
    let ca = tls.ca_pem().display().to_string();
    let (user, password) = issuer.policy().users[0].clone();
    let output = bounded(
        &store,
        &[
            "pull",
            &reference,
            "--ca-cert",
            &ca,
            "--username",
            &user,
            "--password-stdin",
        ],
        &password,
        Duration::from_secs(30),
    );
    let stderr = failed_with(&output);
    assert!(
        stderr.contains(&foreign_realm) && stderr.contains("plain HTTP on another host"),
        "{stderr}"
    );
    assert!(!stderr.contains(&password), "{stderr}");
    assert!(issuer.requests().is_empty(), "{:#?}", issuer.requests());
}

#[test]
fn every_lie_of_the_table_gets_a_clear_error_and_leaves_the_store_untouched() {
    let dir = tempfile::tempdir().unwrap();
    for (n, case) in cases::cases().into_iter().enumerate() {
        let image = cases::Image::new();
        let (name, says) = (case.name, case.says);
        let registry = Hostile::start(move |head| {
            if let cases::Lie::Challenge(challenge) = &case.lie {
                return Reply::json(401, &json!({"errors": []}))
                    .with_header("WWW-Authenticate", challenge);
            }
            if head.path.ends_with("/manifests/1") {
                if let cases::Lie::Manifest(lie) = &case.lie {
                    return lie(&image);
                }
                return Reply::json(200, &image.manifest)
                    .with_header("Content-Type", "application/vnd.oci.image.manifest.v1+json");
            }
            if head.path.ends_with(&image.config_digest) {
                return Reply {
                    status: 200,
                    headers: vec![],
                    body: Body::Bytes(image.config.clone()),
                };
            }
            if head.path.ends_with(&image.layer_digest) {
                if let cases::Lie::Layer(lie) = &case.lie {
                    return lie(&image, &head.path);
                }
                return Reply {
                    status: 200,
                    headers: vec![],
                    body: Body::Bytes(cases::LAYER.to_vec()),
                };
            }
            Reply::json(200, &json!({}))
        });
        let store = dir.path().join(format!("store-{n}"));
        let reference = format!("{}/repo:1", registry.addr());
        let args = [
            "pull",
            &reference,
            "--retries",
            "2",
            "--low-speed-time",
            "2",
        ];
        let output = bounded(&store, &args, "", Duration::from_secs(30));
        assert_eq!(output.status.code(), Some(1), "{name}: {output:?}");
        let stderr = failed_with(&output);
        for words in says {
            assert!(stderr.contains(words), "{name}: {words:?} not in {stderr}");
        }
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        // A short blob's partial is kept for a resume (gc collects it once idle);
        // nothing else is left, and nothing is visible.
        assert!(partial_bytes(&store) <= cases::LAYER.len() as u64, "{name}");
        let index = std::fs::read_to_string(store.join("index.json")).unwrap_or_default();
        assert!(!index.contains("repo:1"), "{name}: {index}");
        let verify = Command::new(BIN)
            .arg("--store")
            .arg(&store)
            .arg("verify")
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }
}
