//! deploy/kubernetes renders with `kubectl kustomize` and every document validates
//! offline against the Kubernetes 1.32 schemas (`kubernetes-validate --strict`, from
//! PyPI, which ships them; `make setup` installs it), and a deliberately broken copy
//! does not. The rendered set holds what a node needs: the DaemonSet on the node's
//! network with the store on a hostPath, probes and resources; the headless Service;
//! the hosts.toml and lockfile ConfigMaps (the lockfile one stowage can read); the Job.
//! The DaemonSet's own scripts run here too: the init container's installs hosts.toml
//! files where containerd reads them, and the warm container's loads a lockfile into
//! a real containerd with every blob from a peer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::runtime::images::{nonce, runnable};
use crate::runtime::tools::{assert_ok, stowage, text};
use crate::support::containerd::Containerd;
use crate::support::fixtures::Compression;
use crate::support::pulling::{Env, BIN};
use crate::support::serving::{curl, ServeSetup, Served};

/// The Kubernetes version the manifests are validated against (kubectl's here).
const KUBERNETES_VERSION: &str = "1.32.0";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn run(program: &str, args: &[&str], hint: &str) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({hint}): {e}"))
}

/// `kubectl kustomize deploy/kubernetes`.
fn render() -> String {
    let dir = deploy_dir();
    let output = run(
        "kubectl",
        &["kustomize", dir.to_str().unwrap()],
        "kubectl 1.32's client renders kustomizations",
    );
    assert_ok(&output, "kubectl kustomize deploy/kubernetes");
    text(&output.stdout)
}

/// `kubernetes-validate --strict` on `yaml` written to `dir/name`.
fn validate(dir: &Path, name: &str, yaml: &str) -> Output {
    let file = dir.join(name);
    std::fs::write(&file, yaml).unwrap();
    run(
        "kubernetes-validate",
        &[
            "--kubernetes-version",
            KUBERNETES_VERSION,
            "--strict",
            "--quiet",
            file.to_str().unwrap(),
        ],
        "pip install kubernetes-validate; make setup does",
    )
}

/// The YAML documents as JSON (PyYAML comes with kubernetes-validate).
fn documents(yaml: &str) -> Vec<Value> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_ok(&output, "python3 yaml to json");
    serde_json::from_slice(&output.stdout).unwrap()
}

fn one<'a>(docs: &'a [Value], kind: &str, name_prefix: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name_prefix))
        })
        .collect();
    assert_eq!(found.len(), 1, "one {kind} {name_prefix}*: {found:?}");
    found[0]
}

#[test]
fn the_manifests_render_and_validate_against_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let rendered = render();
    let validated = validate(dir.path(), "rendered.yaml", &rendered);
    assert!(
        validated.status.success(),
        "deploy/kubernetes does not validate:\n{}{}",
        text(&validated.stdout),
        text(&validated.stderr)
    );

    let docs = documents(&rendered);
    let daemonset = one(&docs, "DaemonSet", "stowage");
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "{pod}");
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    let containers = pod["containers"].as_array().unwrap();
    let serve = containers.iter().find(|c| c["name"] == "serve").unwrap();
    let args: Vec<&str> = serve["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for flag in [
        "serve",
        "--upstream",
        "--peers",
        "--self",
        "--addr",
        "0.0.0.0:5050",
    ] {
        assert!(args.contains(&flag), "serve args {args:?} lack {flag}");
    }
    let warm = containers.iter().find(|c| c["name"] == "warm").unwrap();
    let script = warm["command"][2].as_str().unwrap();
    assert!(
        script.contains("stowage warm --lock") && script.contains("--peers"),
        "{script}"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(serve[probe]["httpGet"]["path"], "/v2/", "{probe}: {serve}");
    }
    for container in containers {
        assert!(
            container["resources"]["requests"].is_object()
                && container["resources"]["limits"]["memory"].is_string(),
            "{} has no requests and memory limit",
            container["name"]
        );
    }
    let volumes = pod["volumes"].as_array().unwrap();
    let store = volumes.iter().find(|v| v["name"] == "store").unwrap();
    assert_eq!(store["hostPath"]["path"], "/var/lib/stowage");

    let service = one(&docs, "Service", "stowage-peers");
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(
        service["spec"]["selector"],
        daemonset["spec"]["selector"]["matchLabels"]
    );
    let hosts = one(&docs, "ConfigMap", "stowage-hosts");
    let default = hosts["data"]["_default.toml"].as_str().unwrap();
    assert!(
        default.contains("[host.\"http://127.0.0.1:5050\"]"),
        "{default}"
    );
    one(&docs, "Job", "stowage-warm");

    // The lockfile the nodes warm is one stowage reads.
    let lock = one(&docs, "ConfigMap", "stowage-lock");
    let lockfile = dir.path().join("stowage.lock");
    std::fs::write(&lockfile, lock["data"]["stowage.lock"].as_str().unwrap()).unwrap();
    let synced = stowage(
        &dir.path().join("store"),
        &["sync", "--offline", lockfile.to_str().unwrap()],
        &[],
    );
    assert_ok(&synced, "stowage sync of the shipped lockfile");
}

#[test]
fn a_broken_manifest_fails_validation() {
    let dir = tempfile::tempdir().unwrap();
    let rendered = render();
    // A misspelt field (strict validation refuses what the schema does not name),
    // and a value of the wrong type.
    let cases = [
        (
            "hostNetwork: true",
            "hostNetwrk: true",
            "'hostNetwrk' was unexpected",
        ),
        (
            "containerPort: 5050",
            "containerPort: \"5050\"",
            "is not of type 'integer'",
        ),
    ];
    for (good, bad, expected) in cases {
        assert!(rendered.contains(good), "the rendered set has no {good:?}");
        let broken = rendered.replacen(good, bad, 1);
        let validated = validate(dir.path(), "broken.yaml", &broken);
        let said = format!("{}{}", text(&validated.stdout), text(&validated.stderr));
        assert!(
            !validated.status.success(),
            "{bad:?} passed validation: {said}"
        );
        assert!(said.contains(expected), "{bad:?}: {said}");
    }
}

/// The rendered DaemonSet's pod spec.
fn pod_spec() -> Value {
    let docs = documents(&render());
    one(&docs, "DaemonSet", "stowage")["spec"]["template"]["spec"].clone()
}

/// The `sh -c` script of the container `name` in `list` (containers or
/// initContainers).
fn script_of(pod: &Value, list: &str, name: &str) -> String {
    let container = pod[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} {name}"));
    assert_eq!(container["command"][0], "/bin/sh", "{container}");
    container["command"][2].as_str().unwrap().to_string()
}

/// Replaces `from` in `script`, which must hold it (a test that edits nothing would
/// run something other than what ships).
fn swap(script: &str, from: &str, to: &str) -> String {
    assert!(
        script.contains(from),
        "the script has no {from:?}:\n{script}"
    );
    script.replace(from, to)
}

#[test]
fn the_init_container_installs_each_hosts_toml_where_containerd_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let docs = documents(&render());
    let hosts = one(&docs, "ConfigMap", "stowage-hosts");
    // The ConfigMap as a volume, plus a registry with a port (`__` for `:`).
    let volume = dir.path().join("hosts");
    std::fs::create_dir_all(&volume).unwrap();
    let mut expected = Vec::new();
    for (key, value) in hosts["data"].as_object().unwrap() {
        std::fs::write(volume.join(key), value.as_str().unwrap()).unwrap();
        expected.push((
            key.trim_end_matches(".toml").to_string(),
            value.as_str().unwrap().to_string(),
        ));
    }
    let ported = "server = \"https://registry.example.com:5000\"\n";
    std::fs::write(volume.join("registry.example.com__5000.toml"), ported).unwrap();
    expected.push(("registry.example.com:5000".to_string(), ported.to_string()));

    let certs = dir.path().join("certs.d");
    let script = script_of(&pod_spec(), "initContainers", "hosts-toml");
    let script = swap(&script, "/etc/stowage/hosts", volume.to_str().unwrap());
    let script = swap(&script, "/host/certs.d", certs.to_str().unwrap());
    let ran = run("/bin/sh", &["-c", &script], "a POSIX shell");
    assert_ok(&ran, "the hosts-toml init container's script");
    for (registry, contents) in expected {
        let installed = certs.join(&registry).join("hosts.toml");
        assert_eq!(
            std::fs::read_to_string(&installed).ok().as_deref(),
            Some(contents.as_str()),
            "{}",
            installed.display()
        );
    }
    assert!(
        expected_names_only(&certs),
        "a stray file in {}",
        certs.display()
    );
}

/// Whether `certs` holds only `<registry>/hosts.toml` files (no temporary left).
fn expected_names_only(certs: &Path) -> bool {
    std::fs::read_dir(certs).unwrap().all(|entry| {
        let entry = entry.unwrap().path();
        std::fs::read_dir(&entry)
            .unwrap()
            .all(|f| f.unwrap().file_name() == "hosts.toml")
    })
}

#[test]
fn the_warm_container_loads_the_lockfile_into_containerd_with_blobs_from_a_peer() {
    let env = Env::new();
    let image = runnable(
        &env.fixtures,
        &nonce("node-warm"),
        Compression::Gzip,
        Compression::Zstd,
    );
    env.push(&image.manifest, "tools/node-warm:1");
    let reference = env.via_proxy("tools/node-warm:1");
    let lock = env.dir.path().join("stowage.lock");
    let locked = stowage(
        &env.dir.path().join("lock-store"),
        &["lock", &reference, "-o", lock.to_str().unwrap()],
        &[],
    );
    assert_ok(&locked, "stowage lock");
    // Another node, with an empty store: a serve pulling through from the registry,
    // as the DaemonSet's, which fetches what a peer asks for from upstream.
    let peer_store = env.dir.path().join("peer-store");
    let upstream = format!("http://{}", env.proxy.addr());
    let peer = Served::start_with(
        &peer_store,
        &ServeSetup {
            args: &["--upstream", &upstream],
            ..ServeSetup::default()
        },
    );
    let containerd = Containerd::start(&env.dir.path().join("node"));

    // The warm container's script as it ships, with this test's paths, the peer's
    // address for the headless Service's name, and an end instead of its sleep.
    let warmed = env.dir.path().join("warmed");
    let script = script_of(&pod_spec(), "containers", "warm");
    let script = swap(
        &script,
        "/etc/stowage/lock/stowage.lock",
        lock.to_str().unwrap(),
    );
    let script = swap(
        &script,
        "dns:stowage-peers.${POD_NAMESPACE}.svc.${CLUSTER_DOMAIN}:5050",
        &format!("dns:localhost:{}", peer.addr.rsplit(':').next().unwrap()),
    );
    let script = swap(&script, "/tmp/warmed", warmed.to_str().unwrap());
    let script = swap(&script, "exec sleep infinity", "exit 0");
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    env.proxy.reset_log();
    // The script retries a failed warm forever: bound it.
    let ran = Command::new("timeout")
        .args(["120", "/bin/sh", "-c", &script])
        .env("PATH", path)
        .env("STOWAGE_STORE", env.store())
        .env("CONTAINERD_ADDRESS", containerd.address())
        .env("CONTAINERD_NAMESPACE", "k8s.io")
        // This node's address: not the peer's.
        .env("NODE_IP", "127.0.0.9")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ok(&ran, "the warm container's script");
    assert!(warmed.exists(), "no readiness file: {}", text(&ran.stderr));
    assert_eq!(
        containerd.digest_of("k8s.io", &reference).as_deref(),
        Some(image.manifest.digest().to_string().as_str()),
        "{}",
        text(&ran.stdout)
    );
    // Each blob came from upstream once, and the peer holds them: it fetched them
    // for the node, which had them from it and not from upstream.
    let mut blobs: Vec<String> = env.proxy.blob_gets().into_iter().map(|r| r.path).collect();
    blobs.sort();
    let fetched = blobs.len();
    blobs.dedup();
    assert_eq!((fetched, blobs.len()), (3, 3), "{blobs:?}");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            env.store()
                .join("blobs/sha256")
                .join(image.manifest.digest().digest()),
        )
        .unwrap(),
    )
    .unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let hex = layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        assert!(
            peer_store.join("blobs/sha256").join(hex).exists(),
            "the peer never fetched layer {hex}"
        );
    }
}

/// `$(NAME)` in a container's args as kubelet expands them from `values`.
fn expand(arg: &str, values: &[(&str, &str)]) -> String {
    values.iter().fold(arg.to_string(), |arg, (name, value)| {
        arg.replace(&format!("$({name})"), value)
    })
}

#[test]
fn the_serve_container_serves_and_containerd_pulls_through_it() {
    let env = Env::new();
    let image = runnable(
        &env.fixtures,
        &nonce("node-serve"),
        Compression::Gzip,
        Compression::Gzip,
    );
    env.push(&image.manifest, "tools/node-serve:1");
    let docs = documents(&render());
    let config = &one(&docs, "ConfigMap", "stowage-config")["data"];
    let pod = &one(&docs, "DaemonSet", "stowage")["spec"]["template"]["spec"];
    let serve = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "serve")
        .unwrap();
    assert_eq!(serve["command"], serde_json::json!(["stowage"]));
    // Its args as kubelet expands them, with this test's registry for UPSTREAM and a
    // free loopback port for the node's 5050.
    let upstream = format!("http://{}", env.proxy.addr());
    let values = [
        ("UPSTREAM", upstream.as_str()),
        ("POD_NAMESPACE", "stowage"),
        ("NODE_IP", "127.0.0.9"),
        ("CLUSTER_DOMAIN", config["CLUSTER_DOMAIN"].as_str().unwrap()),
        ("MAX_SIZE", config["MAX_SIZE"].as_str().unwrap()),
    ];
    let mut args: Vec<String> = serve["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| expand(a.as_str().unwrap(), &values))
        .collect();
    assert_eq!(args.first().map(String::as_str), Some("serve"));
    let addr = args.iter().position(|a| a == "--addr").expect("--addr");
    assert_eq!(args[addr + 1], "0.0.0.0:5050");
    args.drain(addr..addr + 2);
    let rest: Vec<&str> = args[1..].iter().map(String::as_str).collect();
    let served = Served::start_with(
        &env.store(),
        &ServeSetup {
            args: &rest,
            ..ServeSetup::default()
        },
    );
    // The probes' request.
    assert_eq!(curl(&[&served.url("/v2/")]).status, 200);

    // A node's containerd with the shipped _default hosts.toml, 5050 made this port.
    let shipped = std::fs::read_to_string(deploy_dir().join("hosts/_default.toml")).unwrap();
    let hosts = env.dir.path().join("certs.d");
    std::fs::create_dir_all(hosts.join("_default")).unwrap();
    std::fs::write(
        hosts.join("_default/hosts.toml"),
        swap(&shipped, "127.0.0.1:5050", &served.addr),
    )
    .unwrap();
    let containerd = Containerd::start(&env.dir.path().join("node"));
    let name = env.via_proxy("tools/node-serve:1");
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
    assert_ok(&pulled, "ctr images pull through the DaemonSet's serve");
    assert_eq!(
        containerd.digest_of("k8s.io", &name).as_deref(),
        Some(image.manifest.digest().to_string().as_str())
    );
}
