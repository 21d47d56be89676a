//! `factor`: conda packages (built here, real `.conda` and `.tar.bz2` files) on a
//! busybox base become a factored image that podman runs, whose package layers other
//! images share, that is the same every time it is built, and that stays under the
//! layer cap by grouping the least shared packages.

use crate::factored_layers::conda_build;
use crate::runtime::tools;

use std::path::{Path, PathBuf};

use crate::support::base_images::busybox_base;
use crate::support::pulling::*;
use conda_build::{long_placeholder, Format, Spec};
use serde_json::Value;
use tools::Podman;

/// A package whose `bin/NAME` script prints where it was installed.
fn script_package(name: &str, dir: &Path, format: Format) -> PathBuf {
    let p = long_placeholder();
    Spec::new(name, "1.0", "h0_0")
        .with_prefix(
            &format!("bin/{name}"),
            format!("#!/bin/sh\necho \"{name} runs from {p}\"\n"),
            0o755,
            &p,
            "text",
        )
        .write(dir, format)
}

fn layer_digests(env: &Env, name: &str) -> Vec<String> {
    let oci = format!("oci:{}:{name}", env.store().display());
    crate::support::fixtures::layer_digests_of(&crate::support::fixtures::skopeo_json(&[
        "inspect", "--raw", &oci,
    ]))
}

fn factor(env: &Env, name: &str, packages: &[PathBuf], extra: &[&str]) -> Value {
    let mut args = vec!["factor", name, "--base", "base"];
    args.extend_from_slice(extra);
    let paths: Vec<String> = packages.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    env.json(&args)
}

#[test]
fn factored_images_run_share_layers_and_are_reproducible() {
    let env = Env::new();
    busybox_base(&env.store(), "base");
    let pkgs = env.dir.path().join("pkgs");
    std::fs::create_dir_all(&pkgs).unwrap();
    let hello = script_package("hello", &pkgs, Format::Conda);
    let shared: Vec<PathBuf> = ["alpha", "beta"]
        .iter()
        .map(|n| script_package(n, &pkgs, Format::TarBz2))
        .collect();
    let only_a = script_package("gamma", &pkgs, Format::Conda);
    let only_b = script_package("delta", &pkgs, Format::TarBz2);
    let a_pkgs: Vec<PathBuf> = [hello.clone(), only_a]
        .into_iter()
        .chain(shared.clone())
        .collect();
    let b_pkgs: Vec<PathBuf> = [hello.clone(), only_b]
        .into_iter()
        .chain(shared.clone())
        .collect();

    let a = factor(&env, "factored/a:1", &a_pkgs, &["--cmd", "hello"]);
    let again = factor(&env, "factored/a-again:1", &a_pkgs, &["--cmd", "hello"]);
    assert_eq!(
        a["manifest_digest"], again["manifest_digest"],
        "factor is not reproducible"
    );
    assert_eq!(again["layers_written"], 0);
    let b = factor(&env, "factored/b:1", &b_pkgs, &[]);
    assert_eq!(b["layers_written"], 1, "only delta is new: {b}");
    // base + 4 packages + conda-meta.
    let (layers_a, layers_b) = (
        layer_digests(&env, "factored/a:1"),
        layer_digests(&env, "factored/b:1"),
    );
    assert_eq!(layers_a.len(), 6);
    let common = layers_a.iter().filter(|d| layers_b.contains(d)).count();
    assert_eq!(common, 4, "base, hello, alpha and beta are shared");
    let config = crate::support::fixtures::skopeo_json(&[
        "inspect",
        "--config",
        &format!("oci:{}:factored/a:1", env.store().display()),
    ]);
    let path = config["config"]["Env"].to_string();
    assert!(
        path.contains("PATH=/opt/conda/bin:/usr/bin:/bin")
            && path.contains("LD_LIBRARY_PATH=/opt/conda/lib"),
        "{path}"
    );
    assert!(env.stowage(&["verify"]).status.success());

    // It runs, with the placeholder rewritten to the prefix.
    let podman = Podman::new(env.dir.path());
    let (var, value) = podman.env();
    let stdout = tools::stowage_ok(
        &env.store(),
        &["run", "factored/a:1", "--into", "podman"],
        &[(var, &value)],
    );
    assert!(stdout.contains("hello runs from /opt/conda"), "{stdout}");
    // ...and so does docker 20.10, which gets the zstd layers decompressed.
    if tools::docker_available("factored image in docker") {
        let _loaded = tools::DockerImages(vec!["localhost/factored/a:1".into()]);
        let stdout = tools::stowage_ok(
            &env.store(),
            &["run", "factored/a:1", "--into", "docker"],
            &[],
        );
        assert!(stdout.contains("hello runs from /opt/conda"), "{stdout}");
    }

    // Pulling the second image after the first fetches only what it does not share.
    for name in ["factored/a:1", "factored/b:1"] {
        env.json(&["copy", name, &format!("{}/{name}", env.registry.addr())]);
    }
    let node = env.dir.path().join("node");
    let pull = |name: &str| {
        let output = stowage_in(&node, &["pull", &env.via_proxy(name)]);
        assert!(output.status.success(), "{}", stderr(&output));
    };
    pull("factored/a:1");
    env.proxy.reset_log();
    pull("factored/b:1");
    let fetched: Vec<String> = env.blob_get_paths();
    assert_eq!(
        fetched.len(),
        3,
        "delta's layer, b's conda-meta layer and b's config: {fetched:?}"
    );
    for digest in layers_a.iter().filter(|d| layers_b.contains(d)) {
        assert!(
            !fetched.iter().any(|p| p.ends_with(digest.as_str())),
            "refetched {digest}"
        );
    }
}

/// A `.tar.bz2` package `NAME-1.0-h0_0` in `dir` holding `share/NAME/data` ("NAME\n")
/// and depending on `depends`.
fn data_package(dir: &Path, name: &str, depends: &[&str]) -> PathBuf {
    let mut spec = Spec::new(name, "1.0", "h0_0").file(
        &format!("share/{name}/data"),
        format!("{name}\n"),
        0o644,
    );
    spec.depends = depends.iter().map(|d| d.to_string()).collect();
    spec.write(dir, Format::TarBz2)
}

/// The names of the package layers of the stored image `name`, in manifest order.
fn package_order(env: &Env, name: &str) -> Vec<String> {
    let oci = format!("oci:{}:{name}", env.store().display());
    let manifest = crate::support::fixtures::skopeo_json(&["inspect", "--raw", &oci]);
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["annotations"]["org.conda.package.name"].as_str())
        .map(String::from)
        .collect()
}

#[test]
fn package_layers_follow_conda_install_order_so_images_share_a_chain() {
    let env = Env::new();
    busybox_base(&env.store(), "base");
    let pkgs = env.dir.path().join("pkgs");
    std::fs::create_dir_all(&pkgs).unwrap();
    let package = |name: &str, depends: &[&str]| data_package(&pkgs, name, depends);
    // By name, each image's own package ("app-*", "extra") would come first.
    let zlib = package("zlib", &[]);
    let py = package("py", &["zlib >=1.2", "__glibc >=2.17"]);
    let app_a = package("app-a", &["py", "zlib 1.0 h0_0"]);
    let app_b = package("app-b", &["conda-forge::py[version='>=1']"]);
    let extra = package("extra", &["py"]);

    factor(
        &env,
        "factored/a:1",
        &[app_a.clone(), py.clone(), zlib.clone()],
        &[],
    );
    factor(
        &env,
        "factored/b:1",
        &[extra, zlib.clone(), app_b, py.clone()],
        &[],
    );
    assert_eq!(package_order(&env, "factored/a:1"), ["zlib", "py", "app-a"]);
    assert_eq!(
        package_order(&env, "factored/b:1"),
        ["zlib", "py", "app-b", "extra"]
    );
    // Both start with the same chain: base, zlib, py.
    let (a, b) = (
        layer_digests(&env, "factored/a:1"),
        layer_digests(&env, "factored/b:1"),
    );
    assert_eq!(a[..3], b[..3], "{a:?}\n{b:?}");
    assert_ne!(a[3], b[3]);
    // The order the packages are given in changes nothing.
    let first = factor(
        &env,
        "factored/c:1",
        &[zlib.clone(), py.clone(), app_a.clone()],
        &[],
    );
    let again = factor(&env, "factored/d:1", &[py, app_a, zlib], &[]);
    assert_eq!(first["manifest_digest"], again["manifest_digest"]);
}

#[test]
fn past_the_layer_cap_the_least_shared_packages_share_one_layer() {
    let env = Env::new();
    busybox_base(&env.store(), "base");
    let pkgs = env.dir.path().join("pkgs");
    std::fs::create_dir_all(&pkgs).unwrap();
    let packages: Vec<PathBuf> = (0..140)
        .map(|i| script_package(&format!("pkg{i:03}"), &pkgs, Format::Conda))
        .collect();
    let made = factor(&env, "factored/big:1", &packages, &[]);
    let layers = made["layers"].as_u64().unwrap();
    assert!(layers <= 125, "{made}");
    let grouped = made["grouped"].as_array().unwrap().len();
    assert_eq!(grouped as u64, 140 - (125 - 2) + 1, "{made}");
    assert_eq!(layer_digests(&env, "factored/big:1").len() as u64, layers);
    // The grouped layer names its packages and what they were made for, as a package
    // layer does, so a lockfile can record them.
    let oci = format!("oci:{}:factored/big:1", env.store().display());
    let manifest = crate::support::fixtures::skopeo_json(&["inspect", "--raw", &oci]);
    let group = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["annotations"].get("org.conda.layer.packages").is_some())
        .expect("a grouped layer");
    assert_eq!(group["annotations"]["org.conda.layer.prefix"], "/opt/conda");
    assert_eq!(
        group["annotations"]["org.conda.layer.packages"]
            .as_str()
            .unwrap()
            .split(',')
            .count(),
        grouped
    );
    assert!(env.stowage(&["verify"]).status.success());

    let podman = Podman::new(env.dir.path());
    let (var, value) = podman.env();
    let stdout = tools::stowage_ok(
        &env.store(),
        &[
            "run",
            "factored/big:1",
            "--into",
            "podman",
            "--",
            "sh",
            "-c",
            "ls /opt/conda/bin | wc -l; pkg139; pkg000",
        ],
        &[(var, &value)],
    );
    let mut lines = stdout.lines();
    assert_eq!(lines.next().map(str::trim), Some("140"), "{stdout}");
    assert!(
        stdout.contains("pkg139 runs from /opt/conda")
            && stdout.contains("pkg000 runs from /opt/conda"),
        "{stdout}"
    );
}

#[test]
fn a_set_merges_the_packages_only_one_image_uses_into_one_layer_of_its_own() {
    let env = Env::new();
    busybox_base(&env.store(), "base");
    let pkgs = env.dir.path().join("pkgs");
    std::fs::create_dir_all(&pkgs).unwrap();
    let package = |name: &str, depends: &[&str]| data_package(&pkgs, name, depends);
    package("zlib", &[]);
    package("py", &["zlib"]);
    package("both", &["py"]); // a and b
    for own in ["a1", "a2", "b1", "c1", "c2", "c3"] {
        package(own, &["py"]);
    }
    let set = |file: &str, images: &[(&str, &[&str])]| {
        let mut text = String::from("base = \"base\"\n");
        for (name, names) in images {
            let files: Vec<String> = names
                .iter()
                .map(|n| format!("\"pkgs/{n}-1.0-h0_0.tar.bz2\""))
                .collect();
            text += &format!(
                "[[image]]\nname = \"{name}\"\npackages = [{}]\n",
                files.join(", ")
            );
        }
        let path = env.dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let first = set(
        "set.toml",
        &[
            ("set/a:1", &["a2", "both", "zlib", "a1", "py"]),
            ("set/b:1", &["zlib", "py", "both", "b1"]),
            ("set/c:1", &["c3", "c1", "zlib", "c2", "py"]),
        ],
    );
    let made = env.json(&["factor-set", &first]);
    let reports = made["images"].as_array().unwrap();
    let grouped = |i: usize| -> Vec<&str> {
        let mut names: Vec<&str> = reports[i]["grouped"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap().split('-').next().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(grouped(0), ["a1", "a2"], "{made}");
    assert!(
        grouped(1).is_empty(),
        "b's one own package keeps its layer: {made}"
    );
    assert_eq!(grouped(2), ["c1", "c2", "c3"], "{made}");
    // base, the shared chain in install order, the image's own layer, conda-meta.
    assert_eq!(package_order(&env, "set/a:1"), ["zlib", "py", "both"]);
    assert_eq!(package_order(&env, "set/b:1"), ["zlib", "py", "both", "b1"]);
    assert_eq!(package_order(&env, "set/c:1"), ["zlib", "py"]);
    let layers: Vec<Vec<String>> = ["set/a:1", "set/b:1", "set/c:1"]
        .iter()
        .map(|name| layer_digests(&env, name))
        .collect();
    assert_eq!(
        layers.iter().map(Vec::len).collect::<Vec<_>>(),
        [6, 6, 5],
        "{layers:?}"
    );
    assert_eq!(layers[0][..4], layers[1][..4]);
    assert_eq!(layers[0][..3], layers[2][..3]);

    // The same set, its images and packages listed in another order, in another
    // store, gives the same manifests.
    let other = Env::new();
    busybox_base(&other.store(), "base");
    std::fs::create_dir_all(other.dir.path().join("pkgs")).unwrap();
    for entry in std::fs::read_dir(&pkgs).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            other.dir.path().join("pkgs").join(entry.file_name()),
        )
        .unwrap();
    }
    let again = {
        let text = std::fs::read_to_string(set(
            "set-again.toml",
            &[
                ("set/c:1", &["c1", "c2", "c3", "py", "zlib"]),
                ("set/b:1", &["b1", "both", "py", "zlib"]),
                ("set/a:1", &["a1", "a2", "both", "py", "zlib"]),
            ],
        ))
        .unwrap();
        let path = other.dir.path().join("set.toml");
        std::fs::write(&path, text).unwrap();
        other.json(&["factor-set", &path.display().to_string()])
    };
    let digest_of = |reports: &Value, name: &str| {
        reports["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["manifest_digest"].clone())
            .unwrap()
    };
    for name in ["set/a:1", "set/b:1", "set/c:1"] {
        assert_eq!(digest_of(&made, name), digest_of(&again, name), "{name}");
    }
    assert!(env.stowage(&["verify"]).status.success());

    // The merged layer holds every own package's files, and the image runs.
    let podman = Podman::new(env.dir.path());
    let (var, value) = podman.env();
    let stdout = tools::stowage_ok(
        &env.store(),
        &[
            "run",
            "set/c:1",
            "--into",
            "podman",
            "--",
            "cat",
            "/opt/conda/share/c1/data",
            "/opt/conda/share/c3/data",
            "/opt/conda/share/zlib/data",
        ],
        &[(var, &value)],
    );
    assert_eq!(stdout, "c1\nc3\nzlib\n");

    // A set file that names a package that is not there, or an image twice, is
    // refused naming it, and records nothing.
    let refs_before = env.stowage(&["ls"]).stdout;
    let missing = set("missing.toml", &[("set/d:1", &["zlib", "nothere"])]);
    let output = env.stowage(&["factor-set", &missing]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("nothere-1.0-h0_0.tar.bz2"),
        "{}",
        stderr(&output)
    );
    let twice = set(
        "twice.toml",
        &[("set/d:1", &["zlib"]), ("set/d:1", &["py"])],
    );
    let output = env.stowage(&["factor-set", &twice]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("\"set/d:1\" is named twice"),
        "{}",
        stderr(&output)
    );
    assert_eq!(env.stowage(&["ls"]).stdout, refs_before);
}
