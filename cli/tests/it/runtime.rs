//! The hand-off to real container runtimes: images pulled from a real registry into
//! a store, streamed into podman (always) and docker (when `docker` answers here),
//! then run. Each test loads images whose layers hold a nonce, so no runtime can
//! pass a test with layers it kept from an earlier run. podman uses a storage of its
//! own per test (`STOWAGE_PODMAN_ARGS`); docker images loaded are removed at the end.

pub mod images;
pub mod tools;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::fixtures::{put_layer, Compression, Entry, Layer};
use crate::support::pulling::{noise, Env, BIN};
use images::{layer_digests, nonce, push_and_pull, put_runnable_image, runnable, Runnable};
use tools::{
    assert_ok, docker_available, docker_id, json_of, stowage, text, vm_hwm_kib, DockerImages,
    NameableTmp, Podman, PODMAN_RUN,
};

#[test]
fn podman_loads_a_pulled_image_and_runs_it() {
    let env = Env::new();
    let image = runnable(
        &env.fixtures,
        &nonce("podman"),
        Compression::Gzip,
        Compression::Zstd,
    );
    let reference = push_and_pull(&env, &image, "tools/podman:1");
    let podman = Podman::new(env.dir.path());
    let (key, value) = podman.env();
    let vars = [(key, value.as_str())];
    let tmp = NameableTmp::new();

    let loaded = stowage(
        &env.store(),
        &["--json", "load", &reference, "--into", "podman"],
        &[vars[0], ("TMPDIR", tmp.0.to_str().unwrap())],
    );
    assert_ok(&loaded, "stowage load --into podman");
    let report = json_of(&loaded);
    // A qualified ref keeps its name; the ID podman reports is the config digest.
    assert_eq!(report["name"], reference.as_str(), "{report}");
    assert_eq!(report["image_id"], image.config.digest().to_string());
    assert_eq!(
        podman.id(&reference).as_deref(),
        Some(image.config.digest().digest())
    );
    // podman pulled it from a layout of links into the store (made in the temporary
    // directory, a path that can name a repository), streaming nothing,
    // and the name podman gave that layout is gone with the layout.
    assert_eq!(report["bytes"], 0, "{report}");
    let names = podman.output(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(text(&names.stdout).trim(), reference, "podman's names");
    let left: Vec<_> = std::fs::read_dir(&tmp.0).unwrap().collect();
    assert!(left.is_empty(), "the layout was left behind: {left:?}");

    let mut run = PODMAN_RUN.to_vec();
    run.push(&reference);
    let ran = podman.output(&run);
    assert_ok(&ran, "podman run");
    assert_eq!(text(&ran.stdout).trim(), image.line);

    // `stowage run`: the image's own command, then one given after `--`, whose exit
    // status becomes stowage's.
    let ran = stowage(
        &env.store(),
        &["run", &reference, "--into", "podman"],
        &vars,
    );
    assert_ok(&ran, "stowage run");
    assert_eq!(text(&ran.stdout).trim(), image.line);
    let ran = stowage(
        &env.store(),
        &[
            "run",
            &reference,
            "--into",
            "podman",
            "--",
            "/bin/sh",
            "-c",
            "echo other; exit 7",
        ],
        &vars,
    );
    assert_eq!(text(&ran.stdout).trim(), "other", "{}", text(&ran.stderr));
    assert_eq!(ran.status.code(), Some(7));
}

#[test]
fn docker_loads_gzip_and_zstd_images_and_runs_them() {
    if !docker_available("docker_loads_gzip_and_zstd_images_and_runs_them") {
        return;
    }
    let env = Env::new();
    let mut cleanup = DockerImages(Vec::new());
    let cases = [
        ("tools/docker-gzip:1", Compression::Gzip, Compression::Gzip),
        // Docker 20.10 cannot read zstd layers: these must arrive decompressed.
        ("tools/docker-zstd:1", Compression::Zstd, Compression::Zstd),
    ];
    for (repo_tag, base, top) in cases {
        let image = runnable(&env.fixtures, &nonce("docker"), base, top);
        let reference = push_and_pull(&env, &image, repo_tag);
        cleanup.0.push(reference.clone());
        let loaded = stowage(
            &env.store(),
            &["--json", "load", &reference, "--into", "docker"],
            &[],
        );
        assert_ok(&loaded, &format!("stowage load {repo_tag} --into docker"));
        let expected_id = image.config.digest().to_string();
        assert_eq!(json_of(&loaded)["image_id"], expected_id.as_str());
        assert_eq!(docker_id(&reference).as_deref(), Some(expected_id.as_str()));

        let ran = Command::new("docker")
            .args(["run", "--rm", &reference])
            .output()
            .unwrap();
        assert_ok(&ran, &format!("docker run {repo_tag}"));
        assert_eq!(text(&ran.stdout).trim(), image.line);

        let ran = stowage(&env.store(), &["run", &reference, "--into", "docker"], &[]);
        assert_ok(&ran, "stowage run --into docker");
        assert_eq!(text(&ran.stdout).trim(), image.line);

        // warm asks docker, which holds it now.
        let warmed = stowage(
            &env.store(),
            &[
                "--json",
                "warm",
                "--offline",
                &reference,
                "--into",
                "docker",
            ],
            &[],
        );
        assert_ok(&warmed, "stowage warm --into docker");
        assert_eq!(json_of(&warmed)["images"][0]["status"], "skipped");
    }
}

#[test]
fn warm_loads_what_the_runtime_lacks_and_skips_what_it_holds() {
    let env = Env::new();
    let image = runnable(
        &env.fixtures,
        &nonce("warm"),
        Compression::Gzip,
        Compression::Gzip,
    );
    env.push(&image.manifest, "tools/warm:1");
    let reference = env.via_proxy("tools/warm:1");
    let podman = Podman::new(env.dir.path());
    let (key, value) = podman.env();
    let vars = [(key, value.as_str())];
    let warm = |args: &[&str]| {
        let mut all = vec!["--json", "warm", "--into", "podman"];
        all.extend_from_slice(args);
        let output = stowage(&env.store(), &all, &vars);
        assert_ok(&output, &format!("stowage warm {args:?}"));
        let report = json_of(&output);
        let statuses: Vec<String> = report["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["status"].as_str().unwrap().to_string())
            .collect();
        (statuses, report)
    };

    // Pulls (the store is empty), then loads.
    let (statuses, report) = warm(&[&reference]);
    assert_eq!(statuses, ["loaded"], "{report}");
    assert_eq!(
        podman.id(&reference).as_deref(),
        Some(image.config.digest().digest())
    );
    // podman holds it now: skipped.
    let (statuses, report) = warm(&[&reference]);
    assert_eq!(statuses, ["skipped"], "{report}");
    // The same through a lockfile.
    let lock = env.dir.path().join("stowage.lock");
    let locked = stowage(
        &env.store(),
        &["lock", &reference, "-o", lock.to_str().unwrap()],
        &[],
    );
    assert_ok(&locked, "stowage lock");
    let (statuses, report) = warm(&["--lock", lock.to_str().unwrap()]);
    assert_eq!(statuses, ["skipped"], "{report}");
    // The answer comes from podman, not from a record of earlier loads.
    let removed = podman.output(&["rmi", "-f", &reference]);
    assert_ok(&removed, "podman rmi");
    let (statuses, report) = warm(&["--lock", lock.to_str().unwrap()]);
    assert_eq!(statuses, ["loaded"], "{report}");
    assert!(podman.id(&reference).is_some());
}

#[test]
fn a_missing_or_stopped_runtime_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let empty_path = dir.path().join("empty-bin");
    std::fs::create_dir(&empty_path).unwrap();
    let one_line = |output: &Output, expected: &str| {
        assert!(!output.status.success(), "succeeded without a runtime");
        let stderr = text(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "not one line:\n{stderr}");
        assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    let no_podman = [("PATH", empty_path.to_str().unwrap())];
    for command in [
        &["load", "x"][..],
        &["run", "x"],
        &["warm", "--offline", "x"],
    ] {
        let mut args = command.to_vec();
        args.extend(["--into", "podman"]);
        one_line(
            &stowage(&store, &args, &no_podman),
            "podman is not installed: no `podman` on PATH",
        );
    }
    one_line(
        &stowage(&store, &["load", "x", "--into", "nosuch"], &[]),
        "no container runtime named \"nosuch\" (use podman, docker or containerd)",
    );
    one_line(
        &stowage(&store, &["load", "x", "--into", "docker"], &no_podman),
        "docker is not installed",
    );
    // A daemon that does not answer, in docker's own words.
    let stopped = [("DOCKER_HOST", "unix:///nonexistent/docker.sock")];
    if Command::new("docker").arg("--version").output().is_ok() {
        one_line(
            &stowage(&store, &["load", "x", "--into", "docker"], &stopped),
            "docker is not running: Cannot connect to the Docker daemon",
        );
    }
}

#[test]
fn a_corrupt_layer_is_refused_and_nothing_is_loaded() {
    let env = Env::new();
    let image = runnable(
        &env.fixtures,
        &nonce("corrupt"),
        Compression::Gzip,
        Compression::Zstd,
    );
    let reference = push_and_pull(&env, &image, "tools/corrupt:1");
    // Flip one byte of the last layer: it is the last entry of the oci-archive, so
    // the damage shows only after all its bytes went to podman.
    let layer = env
        .store()
        .join("blobs/sha256")
        .join(layer_digests(&env.store(), &reference).pop().unwrap());
    let mut bytes = std::fs::read(&layer).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::set_permissions(&layer, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&layer, bytes).unwrap();

    let podman = Podman::new(env.dir.path());
    let (key, value) = podman.env();
    // Before podman is given a layout of links into the store, each blob is
    // re-hashed: the corrupt one is refused, named, and no layout is left.
    let view_tmp = NameableTmp::new();
    let loaded = stowage(
        &env.store(),
        &["load", &reference, "--into", "podman"],
        &[
            (key, value.as_str()),
            ("TMPDIR", view_tmp.0.to_str().unwrap()),
        ],
    );
    assert!(!loaded.status.success(), "a corrupt layer was loaded");
    let stderr = text(&loaded.stderr);
    let corrupt = layer_digests(&env.store(), &reference).pop().unwrap();
    assert!(
        stderr.contains(&format!("stored blob sha256:{corrupt} is corrupt")),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(podman.id(&reference), None, "podman kept a corrupt image");
    let left: Vec<_> = std::fs::read_dir(&view_tmp.0).unwrap().collect();
    assert!(left.is_empty(), "the layout was left behind: {left:?}");
    // Streamed as an archive (a temporary directory whose path names no repository),
    // stowage re-hashes each blob on the way and stops at the corrupt one.
    // podman spools its stdin under TMPDIR: a load stopped the right way (podman
    // fails on its own) leaves nothing there, a killed podman would.
    let tmp = env.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let loaded = stowage(
        &env.store(),
        &["load", &reference, "--into", "podman"],
        &[(key, value.as_str()), ("TMPDIR", tmp.to_str().unwrap())],
    );
    assert!(!loaded.status.success(), "a corrupt layer was loaded");
    let stderr = text(&loaded.stderr);
    assert!(stderr.contains("is corrupt"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(podman.id(&reference), None, "podman kept a corrupt image");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "podman left {left:?} behind");
}

/// A big zstd layer decompressed on the fly into docker (podman where docker does
/// not answer): stowage's peak memory stays far below the layer's size.
#[test]
fn memory_stays_flat_while_a_big_layer_streams() {
    const LAYER: usize = 128 << 20;
    let env = Env::new();
    let nonce = nonce("memory");
    let layer = put_layer(
        &env.fixtures,
        &[
            Entry::file("etc/nonce", nonce.as_str(), 0o644),
            Entry::file("data.bin", noise(LAYER, 7), 0o644),
        ],
        Compression::Zstd,
    );
    let (manifest, config) = put_runnable_image(&env.fixtures, &[layer]);
    let image = Runnable {
        manifest,
        config,
        line: String::new(),
    };
    let reference = push_and_pull(&env, &image, "tools/big:1");
    let docker = docker_available("the docker half of memory_stays_flat_while_a_big_layer_streams");
    let _cleanup = DockerImages(if docker {
        vec![reference.clone()]
    } else {
        vec![]
    });
    let podman = Podman::new(env.dir.path());
    let (key, value) = podman.env();
    let into = if docker { "docker" } else { "podman" };
    let mut child = Command::new(BIN)
        .arg("--store")
        .arg(env.store())
        .args(["load", &reference, "--into", into])
        .env(key, value)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if let Some(hwm) = std::fs::read_to_string(&status)
            .ok()
            .and_then(|s| vm_hwm_kib(&s))
        {
            peak_kib = peak_kib.max(hwm);
        }
        assert!(started.elapsed() < Duration::from_secs(300), "load hangs");
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert_ok(&output, &format!("stowage load --into {into}"));
    assert!(peak_kib > 0, "never saw stowage's memory");
    let layer_mib = LAYER >> 20;
    assert!(
        peak_kib < 64 << 10,
        "stowage peaked at {} MiB loading a {layer_mib} MiB layer into {into}",
        peak_kib >> 10
    );
    eprintln!(
        "{into}: {layer_mib} MiB zstd layer loaded, stowage peaked at {} MiB",
        peak_kib >> 10
    );
}

/// For the numbers in the docs: load a ~200 MB gzip image and a ~200 MB zstd image
/// into podman and docker and print the times. `cargo test --test runtime -- --ignored`.
#[test]
#[ignore = "a benchmark: prints load times of ~200 MB images"]
fn timing_of_200_mb_images() {
    let env = Env::new();
    let docker = docker_available("the docker half of timing_of_200_mb_images");
    let mut cleanup = DockerImages(Vec::new());
    let podman = Podman::new(env.dir.path());
    let (key, value) = podman.env();
    for (repo_tag, compression) in [
        ("tools/t-gzip:1", Compression::Gzip),
        ("tools/t-zstd:1", Compression::Zstd),
    ] {
        let nonce = nonce("timing");
        // Four 50 MiB files, mostly noise: ~200 MB compressed.
        let entries: Vec<Entry> = (0..4)
            .map(|i| {
                let mut data = noise(48 << 20, i + 1);
                data.extend(nonce.repeat((25 << 20) / nonce.len() + 1).into_bytes());
                data.truncate(50 << 20);
                Entry::file(&format!("data/{i}.bin"), data, 0o644)
            })
            .collect();
        let layers: Vec<Layer> = entries
            .chunks(1)
            .map(|chunk| put_layer(&env.fixtures, chunk, compression))
            .collect();
        let compressed: u64 = layers.iter().map(|l| l.descriptor.size()).sum();
        let (manifest, config) = put_runnable_image(&env.fixtures, &layers);
        let image = Runnable {
            manifest,
            config,
            line: String::new(),
        };
        let reference = push_and_pull(&env, &image, repo_tag);
        let mut runtimes = vec!["podman"];
        if docker {
            runtimes.push("docker");
            cleanup.0.push(reference.clone());
        }
        for into in runtimes {
            let started = Instant::now();
            let output = stowage(
                &env.store(),
                &["load", &reference, "--into", into],
                &[(key, value.as_str()), ("RUST_LOG", "stowage=debug")],
            );
            assert_ok(&output, "load");
            eprintln!(
                "{repo_tag}: {} MB compressed, 200 MiB of files, into {into} in {:.1} s",
                compressed / 1_000_000,
                started.elapsed().as_secs_f64()
            );
            for line in text(&output.stderr)
                .lines()
                .filter(|l| l.contains("counted"))
            {
                eprintln!("  {line}");
            }
            // The runtime's own share: the same image with uncompressed layers, as
            // skopeo writes it to a file, loaded from that file.
            let (transport, load) = match into {
                "docker" => ("docker-archive", vec!["docker", "load", "-i"]),
                _ => ("oci-archive", vec!["podman", "load", "-i"]),
            };
            if into == "docker" && compression == Compression::Zstd {
                continue; // skopeo cannot write zstd layers to a docker-archive
            }
            let file = env.dir.path().join(format!("baseline-{into}.tar"));
            let _ = std::fs::remove_file(&file);
            let source = format!("oci:{}:{reference}", env.store().display());
            let dest = format!("{transport}:{}:{reference}", file.display());
            assert_ok(
                &Command::new("skopeo")
                    .args(["copy", "-q", "--dest-decompress", &source, &dest])
                    .output()
                    .unwrap(),
                "skopeo copy",
            );
            // A fresh runtime state, so no layer is skipped as already present.
            let mut command = Command::new(load[0]);
            if into == "podman" {
                command.args(&Podman::new(&env.dir.path().join(repo_tag)).args);
            } else {
                let removed = Command::new("docker")
                    .args(["rmi", &reference])
                    .output()
                    .unwrap();
                assert_ok(&removed, "docker rmi");
            }
            let started = Instant::now();
            let output = command.args(&load[1..]).arg(&file).output().unwrap();
            assert_ok(&output, "baseline load");
            eprintln!(
                "  baseline: {into} loads skopeo's {transport} file in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
}
