//! The runtimes Kubernetes nodes use, for real: a containerd started by each test
//! with its own root (support/containerd.rs) gets images from stowage with no
//! network (`warm --into containerd`), and containerd and podman pull through
//! `stowage serve` named as their registry mirror (`hosts.toml`, `registries.conf`):
//! a filled store's serve for an upstream that does not exist, so only the mirror can
//! answer, and `serve --upstream` in front of the real registry (behind the counting
//! proxy), where a second node's pull fetches nothing upstream.

use std::os::unix::net::UnixListener;
use std::process::Output;

use stowage_store::Store;

use crate::runtime::images::{nonce, push_and_pull, runnable, Runnable};
use crate::runtime::tools::{assert_ok, json_of, stowage, text, Podman};
use crate::support::containerd::{hosts_dir, Containerd};
use crate::support::fixtures::{set_ref, Compression};
use crate::support::pulling::Env;
use crate::support::serving::{ServeSetup, Served};

/// A registry name that resolves nowhere: a pull that succeeds came from the mirror.
const UPSTREAM: &str = "upstream.invalid";

/// A runnable image pushed and pulled into the env's store as `repo_tag`; the
/// registry is stopped afterwards, so nothing later can fetch from it.
fn stored(env: &mut Env, label: &str, repo_tag: &str) -> (Runnable, String) {
    let image = runnable(
        &env.fixtures,
        &nonce(label),
        Compression::Gzip,
        Compression::Zstd,
    );
    let reference = push_and_pull(env, &image, repo_tag);
    env.registry.stop();
    (image, reference)
}

fn warm(env: &Env, containerd: &Containerd, args: &[&str]) -> Output {
    let mut all = vec![
        "--json",
        "warm",
        "--offline",
        "--into",
        "containerd",
        "--containerd-address",
        containerd.address(),
    ];
    all.extend_from_slice(args);
    stowage(&env.store(), &all, &[])
}

fn statuses(output: &Output) -> Vec<String> {
    json_of(output)["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn warm_into_containerd_imports_from_the_store_and_skips_what_it_holds() {
    let mut env = Env::new();
    let (image, reference) = stored(&mut env, "ctrd-warm", "tools/ctrd:1");
    let containerd = Containerd::start(env.dir.path());
    let manifest = image.manifest.digest().to_string();

    let first = warm(&env, &containerd, &[&reference]);
    assert_ok(&first, "stowage warm --into containerd");
    assert_eq!(statuses(&first), ["loaded"], "{}", text(&first.stdout));
    let report = json_of(&first);
    assert_eq!(report["runtime"]["name"], "containerd");
    assert_eq!(
        report["images"][0]["id"],
        image.config.digest().to_string(),
        "{report}"
    );
    // In kubelet's namespace, named by its reference, as the manifest it pinned.
    assert_eq!(
        containerd.digest_of("k8s.io", &reference).as_deref(),
        Some(manifest.as_str()),
        "{:?}",
        containerd.images("k8s.io")
    );
    assert_eq!(containerd.digest_of("default", &reference), None);
    let checked = containerd.ctr(
        "k8s.io",
        &["images", "check", &format!("name=={reference}")],
    );
    assert!(
        text(&checked.stdout).contains("complete"),
        "{}",
        text(&checked.stdout)
    );

    // containerd holds it now: nothing is streamed.
    let second = warm(&env, &containerd, &[&reference]);
    assert_ok(&second, "the second warm");
    assert_eq!(statuses(&second), ["skipped"], "{}", text(&second.stdout));
    assert_eq!(json_of(&second)["images"][0]["bytes"], 0);

    // The answer is containerd's: removed there, it is loaded again.
    assert_ok(
        &containerd.ctr("k8s.io", &["images", "rm", &reference]),
        "ctr images rm",
    );
    let third = warm(&env, &containerd, &[&reference]);
    assert_eq!(statuses(&third), ["loaded"], "{}", text(&third.stderr));

    // `load` takes the same runtime flags, here another namespace.
    let loaded = stowage(
        &env.store(),
        &[
            "--json",
            "load",
            &reference,
            "--into",
            "containerd",
            "--containerd-address",
            containerd.address(),
            "--namespace",
            "other",
        ],
        &[],
    );
    assert_ok(&loaded, "stowage load --into containerd --namespace other");
    assert_eq!(
        json_of(&loaded)["image_id"],
        image.config.digest().to_string()
    );
    assert_eq!(
        containerd.digest_of("other", &reference).as_deref(),
        Some(manifest.as_str())
    );
}

#[test]
fn a_containerd_socket_that_is_absent_or_dead_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let absent = dir.path().join("absent.sock");
    let output = stowage(
        &store,
        &[
            "warm",
            "--offline",
            "x",
            "--into",
            "containerd",
            "--containerd-address",
            absent.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "containerd is not running: no socket at {}",
            absent.display()
        )) && stderr.contains("--containerd-address"),
        "{stderr}"
    );

    // A socket nobody listens on any more (containerd died): ctr's own words.
    let dead = dir.path().join("dead.sock");
    drop(UnixListener::bind(&dead).unwrap());
    let output = stowage(
        &store,
        &["load", "x", "--into", "containerd"],
        &[("CONTAINERD_ADDRESS", dead.to_str().unwrap())],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("containerd is not running") && stderr.contains("connection refused"),
        "{stderr}"
    );
}

/// The env's store also names the image `upstream.invalid/<repo_tag>`, so a serve
/// that picks refs by registry host (containerd's `?ns=`) finds it as well as one
/// that serves by repository path alone.
fn also_under_upstream(env: &Env, image: &Runnable, repo_tag: &str) -> String {
    let name = format!("{UPSTREAM}/{repo_tag}");
    set_ref(&Store::open(env.store()).unwrap(), &name, &image.manifest);
    name
}

#[test]
fn containerd_pulls_through_stowage_serve_named_in_hosts_toml() {
    let mut env = Env::new();
    let (image, _) = stored(&mut env, "ctrd-mirror", "tools/ctrd-mirror:1");
    let name = also_under_upstream(&env, &image, "tools/ctrd-mirror:1");
    let served = Served::start(&env.store());
    let hosts = hosts_dir(env.dir.path(), UPSTREAM, &format!("http://{}", served.addr));
    let containerd = Containerd::start(env.dir.path());

    let pulled = containerd.ctr(
        "k8s.io",
        &[
            "images",
            "pull",
            "--hosts-dir",
            hosts.to_str().unwrap(),
            &name,
        ],
    );
    assert_ok(&pulled, "ctr images pull through stowage serve");
    let manifest = image.manifest.digest().to_string();
    assert_eq!(
        containerd.digest_of("k8s.io", &name).as_deref(),
        Some(manifest.as_str()),
        "{}",
        containerd.log_tail()
    );

    // The `_default` hosts.toml deploy/kubernetes installs on every node, with the
    // node's port 5050 made this serve's: any registry goes to stowage first.
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/kubernetes/hosts/_default.toml"),
    )
    .unwrap();
    assert!(shipped.contains("127.0.0.1:5050"), "{shipped}");
    let default_dir = hosts.join("_default");
    std::fs::create_dir_all(&default_dir).unwrap();
    std::fs::write(
        default_dir.join("hosts.toml"),
        shipped.replace("127.0.0.1:5050", &served.addr),
    )
    .unwrap();
    let other = format!("other.invalid/{}", "tools/ctrd-mirror:1");
    set_ref(&Store::open(env.store()).unwrap(), &other, &image.manifest);
    let pulled = containerd.ctr(
        "k8s.io",
        &[
            "images",
            "pull",
            "--hosts-dir",
            hosts.to_str().unwrap(),
            &other,
        ],
    );
    assert_ok(
        &pulled,
        "ctr images pull through the shipped _default hosts.toml",
    );
    assert_eq!(
        containerd.digest_of("k8s.io", &other).as_deref(),
        Some(manifest.as_str())
    );
}

#[test]
fn podman_pulls_through_stowage_serve_named_in_registries_conf() {
    let mut env = Env::new();
    let (image, _) = stored(&mut env, "podman-mirror", "tools/podman-mirror:1");
    let name = also_under_upstream(&env, &image, "tools/podman-mirror:1");
    let served = Served::start(&env.store());
    let conf = env.dir.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "unqualified-search-registries = []\n\n\
             [[registry]]\nprefix = \"{UPSTREAM}\"\nlocation = \"{UPSTREAM}\"\n\n\
             [[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
            served.addr
        ),
    )
    .unwrap();
    let podman = Podman::new(env.dir.path());
    let pulled = std::process::Command::new("podman")
        .args(&podman.args)
        .args(["pull", "--quiet", &name])
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_ok(&pulled, "podman pull through stowage serve");
    assert_eq!(
        podman.id(&name).as_deref(),
        Some(image.config.digest().digest())
    );
}

/// `stowage serve --upstream http://PROXY` over the env's empty store: the real
/// registry behind the counting proxy is the upstream.
fn serve_through(env: &Env) -> Served {
    let upstream = format!("http://{}", env.proxy.addr());
    Served::start_with(
        &env.store(),
        &ServeSetup {
            args: &["--upstream", &upstream],
            ..ServeSetup::default()
        },
    )
}

/// The blob paths the proxy was asked for, sorted.
fn blob_paths(env: &Env) -> Vec<String> {
    let mut paths: Vec<String> = env.proxy.blob_gets().into_iter().map(|r| r.path).collect();
    paths.sort();
    paths
}

#[test]
fn containerd_pulls_through_serve_upstream_and_a_second_node_fetches_nothing_upstream() {
    let env = Env::new();
    let image = runnable(
        &env.fixtures,
        &nonce("ctrd-through"),
        Compression::Gzip,
        Compression::Zstd,
    );
    env.push(&image.manifest, "tools/ctrd-through:1");
    // The image's name is the registry's (as the proxy serves it); its hosts.toml
    // server is https, which the proxy does not speak: only the mirror can answer.
    let name = env.via_proxy("tools/ctrd-through:1");
    let served = serve_through(&env);
    let hosts = hosts_dir(
        env.dir.path(),
        &env.proxy.addr(),
        &format!("http://{}", served.addr),
    );
    let pull = |containerd: &Containerd| {
        let pulled = containerd.ctr(
            "k8s.io",
            &[
                "images",
                "pull",
                "--hosts-dir",
                hosts.to_str().unwrap(),
                &name,
            ],
        );
        assert_ok(&pulled, "ctr images pull through serve --upstream");
        assert_eq!(
            containerd.digest_of("k8s.io", &name).as_deref(),
            Some(image.manifest.digest().to_string().as_str()),
            "{}",
            containerd.log_tail()
        );
    };

    let first_node = Containerd::start(&env.dir.path().join("node-1"));
    env.proxy.reset_log();
    pull(&first_node);
    // Config and two layers, each fetched from upstream once.
    let fetched = blob_paths(&env);
    let mut distinct = fetched.clone();
    distinct.dedup();
    assert_eq!(fetched.len(), 3, "{fetched:?}");
    assert_eq!(distinct, fetched, "a blob fetched twice upstream");

    // Another node's containerd, with none of the content: all of it from stowage.
    let second_node = Containerd::start(&env.dir.path().join("node-2"));
    env.proxy.reset_log();
    pull(&second_node);
    let log = env.proxy.log();
    assert!(log.is_empty(), "the second pull reached upstream: {log:?}");
}

#[test]
fn podman_pulls_through_serve_upstream_and_a_second_storage_fetches_nothing_upstream() {
    let env = Env::new();
    let image = runnable(
        &env.fixtures,
        &nonce("podman-through"),
        Compression::Gzip,
        Compression::Gzip,
    );
    env.push(&image.manifest, "tools/podman-through:1");
    let name = env.via_proxy("tools/podman-through:1");
    let served = serve_through(&env);
    // podman asks the mirror /v2/tools/...: serve's first (only) upstream answers.
    let conf = env.dir.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nprefix = \"{upstream}\"\nlocation = \"{upstream}\"\n\n\
             [[registry.mirror]]\nlocation = \"{mirror}\"\ninsecure = true\n",
            upstream = env.proxy.addr(),
            mirror = served.addr
        ),
    )
    .unwrap();
    let pull = |podman: &Podman| {
        let pulled = std::process::Command::new("podman")
            .args(&podman.args)
            .args(["pull", "--quiet", &name])
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_ok(&pulled, "podman pull through serve --upstream");
        assert_eq!(
            podman.id(&name).as_deref(),
            Some(image.config.digest().digest())
        );
    };

    env.proxy.reset_log();
    pull(&Podman::new(&env.dir.path().join("podman-1")));
    let fetched = blob_paths(&env);
    assert_eq!(fetched.len(), 3, "{fetched:?}");
    let mut distinct = fetched.clone();
    distinct.dedup();
    assert_eq!(distinct, fetched, "a blob fetched twice upstream");

    env.proxy.reset_log();
    pull(&Podman::new(&env.dir.path().join("podman-2")));
    let log = env.proxy.log();
    assert!(log.is_empty(), "the second pull reached upstream: {log:?}");
}
