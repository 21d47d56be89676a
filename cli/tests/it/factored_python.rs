//! A `noarch: python` package in a factored image runs: its entry point, written for
//! the environment's Python, starts that Python and imports the package's module from
//! `lib/pythonX.Y/site-packages`. The image goes registry → lockfile → empty node →
//! podman, and the lockfile records the prefix and Python each layer was made for.

use crate::factored_layers::conda_build;
use crate::factored_layers::packages;
use crate::runtime::tools;

use std::path::{Path, PathBuf};

use crate::support::base_images::{python_base, PYTHON};
use crate::support::pulling::*;
use conda_build::{Format, Spec};
use tools::Podman;

/// The environment's `python` as a conda package: `bin/pythonX.Y` is the base image's
/// interpreter, and `pyvenv.cfg` makes the prefix its environment, so the prefix's
/// `lib/pythonX.Y/site-packages` is on `sys.path` as in a conda environment. (Debian's
/// Python reads `site-packages` only in such an environment; a conda-forge Python
/// build is not to be had on this machine.)
fn python_package(dir: &Path) -> PathBuf {
    Spec::new("python", &format!("{PYTHON}.2"), "h0_0_cpython")
        .symlink(
            &format!("bin/python{PYTHON}"),
            &format!("/usr/bin/python{PYTHON}"),
        )
        .symlink("bin/python", &format!("python{PYTHON}"))
        .file(
            "pyvenv.cfg",
            format!(
                "home = /usr/bin\ninclude-system-site-packages = false\nversion = {PYTHON}.2\n"
            ),
            0o644,
        )
        .write(dir, Format::Conda)
}

#[test]
fn a_noarch_python_entry_point_runs_on_a_node_that_synced_the_lockfile() {
    let env = Env::new();
    python_base(&env.store(), "base");
    let pkgs = env.dir.path().join("pkgs");
    std::fs::create_dir_all(&pkgs).unwrap();
    let python = python_package(&pkgs);
    let pytool = packages::pytool().write(&pkgs, Format::TarBz2);
    let name = "factored/py:1";
    let made = env.json(&[
        "factor",
        name,
        "--base",
        "base",
        "--python",
        PYTHON,
        "--cmd",
        "pytool",
        python.to_str().unwrap(),
        pytool.to_str().unwrap(),
    ]);
    assert_eq!(
        made["layers"], 4,
        "base, python, pytool, conda-meta: {made}"
    );
    let remote = format!("{}/{name}", env.registry.addr());
    env.json(&["copy", name, &remote]);

    // The lockfile says what each package layer was made for.
    let node = env.dir.path().join("node");
    let lockfile = env.dir.path().join("stowage.lock");
    let locked = stowage_in(&node, &["lock", "-o", lockfile.to_str().unwrap(), &remote]);
    assert!(locked.status.success(), "{}", stderr(&locked));
    let lock: toml::Table = toml::from_str(&std::fs::read_to_string(&lockfile).unwrap()).unwrap();
    let image = &lock["image"].as_array().unwrap()[0];
    assert_eq!(image["kind"].as_str(), Some("factored-oci"), "{image}");
    let layers = image["layer"].as_array().unwrap();
    let layer_of = |package: &str| {
        layers
            .iter()
            .find(|l| l.get("package").and_then(|p| p.as_str()) == Some(package))
            .unwrap_or_else(|| panic!("no layer for {package}: {layers:?}"))
    };
    let pytool_layer = layer_of("pytool-0.3.1-pyhd8ed1ab_0");
    assert_eq!(pytool_layer["prefix"].as_str(), Some("/opt/conda"));
    assert_eq!(pytool_layer["python"].as_str(), Some(PYTHON));
    let python_layer = layer_of(&format!("python-{PYTHON}.2-h0_0_cpython"));
    assert_eq!(python_layer["prefix"].as_str(), Some("/opt/conda"));
    assert!(
        python_layer.get("python").is_none(),
        "only noarch: python layers depend on the Python: {python_layer}"
    );

    // An empty node syncs the lockfile and runs the entry point in podman.
    let synced = stowage_in(&node, &["sync", lockfile.to_str().unwrap()]);
    assert!(synced.status.success(), "{}", stderr(&synced));
    let podman = Podman::new(env.dir.path());
    let (var, value) = podman.env();
    let site = format!("/opt/conda/lib/python{PYTHON}/site-packages");
    let script = format!("head -n 1 /opt/conda/bin/pytool; ls {site}; pytool; echo exit=$?");
    let stdout = tools::stowage_ok(
        &node,
        &[
            "run", &remote, "--into", "podman", "--", "sh", "-c", &script,
        ],
        &[(var, &value)],
    );
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(format!("#!/opt/conda/bin/python{PYTHON}").as_str()),
        "{stdout}"
    );
    assert!(stdout.contains("pytool-0.3.1.dist-info"), "{stdout}");
    assert!(
        stdout.contains("pytool runs\nexit=0"),
        "the entry point did not run: {stdout}"
    );
    // The image's own command is the entry point too.
    let stdout = tools::stowage_ok(
        &node,
        &["run", &remote, "--into", "podman"],
        &[(var, &value)],
    );
    assert_eq!(stdout.trim(), "pytool runs", "{stdout}");
}
