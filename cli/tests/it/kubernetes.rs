//! deploy/kubernetes renders with `kubectl kustomize` and every document validates
//! offline against the Kubernetes 1.32 schemas (`kubernetes-validate --strict`, from
//! PyPI, which ships them; `make setup` installs it), and a deliberately broken copy
//! does not. The rendered set holds what a node needs: the DaemonSet on the node's
//! network with the store on a hostPath, probes and resources; the headless Service;
//! the hosts.toml and lockfile ConfigMaps (the lockfile one stowage can read); the Job.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::runtime::tools::{assert_ok, stowage, text};

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
    for flag in ["serve", "--upstream", "--peers", "--addr", "0.0.0.0:5050"] {
        assert!(args.contains(&flag), "serve args {args:?} lack {flag}");
    }
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
