//! Eight processes pulling overlapping images into one store while `gc`, `assemble`
//! and `factor` run beside them: every command succeeds, every ref names a whole
//! image, and every shared blob crosses the network once.

use crate::factored_layers::conda_build;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use crate::support::fixtures::{put_image, put_layer, Compression, Entry, Layer};
use crate::support::pulling::*;
use conda_build::{Format, Spec};
use stowage::store::Store;
use stowage_faultproxy::Faults;

fn noise_layer(env: &Env, name: &str, len: usize, seed: u64) -> Layer {
    put_layer(
        &env.fixtures,
        &[Entry::file(name, noise(len, seed), 0o644)],
        Compression::Zstd,
    )
}

fn spawn(env: &Env, args: &[&str]) -> Child {
    Command::new(BIN)
        .arg("--store")
        .arg(env.store())
        .arg("--json")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child, what: &str) {
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{what}: {}", stderr(&output));
}

#[test]
fn eight_pulls_beside_gc_assemble_and_factor_fetch_each_blob_once() {
    let env = Env::new();
    let base = noise_layer(&env, "base.bin", 3 * MIB, 1);
    let mid = noise_layer(&env, "mid.bin", MIB, 2);
    let mut images = Vec::new();
    for i in 0..4u64 {
        let own = noise_layer(&env, "own.bin", MIB / 2, 10 + i);
        let image = put_image(&env.fixtures, "amd64", vec![base.clone(), mid.clone(), own]);
        env.push(&image.descriptor, &format!("conc/img{i}:1"));
        images.push(image);
    }
    let package = Spec::new("tool", "1.0", "h0_0")
        .file("bin/tool", "#!/bin/sh\necho tool\n", 0o755)
        .write(env.dir.path(), Format::TarBz2);
    // Slow enough that the pulls overlap each other and the maintenance loops.
    env.proxy.set_faults(Faults {
        rate: Some(4_000_000),
        ..Faults::default()
    });
    // The base image assemble and factor build on.
    let first = env.pull(&[&env.via_proxy("conc/img0:1")]);
    let base_ref = first["reference"].as_str().unwrap().to_string();

    let done = AtomicBool::new(false);
    thread::scope(|s| {
        let gc = s.spawn(|| {
            let mut sweeps = 0;
            while !done.load(Ordering::Relaxed) {
                finish(spawn(&env, &["gc"]), "gc");
                sweeps += 1;
            }
            sweeps
        });
        let assemble = s.spawn(|| {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                let name = format!("local/asm:{n}");
                let round = format!("ROUND={n}");
                let args = ["assemble", &name, "--base", &base_ref, "--env", &round];
                finish(spawn(&env, &args), &name);
                n += 1;
            }
            n
        });
        let factor = s.spawn(|| {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                let name = format!("local/fac:{n}");
                let args = [
                    "factor",
                    &name,
                    "--base",
                    &base_ref,
                    package.to_str().unwrap(),
                ];
                finish(spawn(&env, &args), &name);
                n += 1;
            }
            n
        });
        let pulls: Vec<Child> = (0..8)
            .map(|p| {
                spawn(
                    &env,
                    &["pull", &env.via_proxy(&format!("conc/img{}:1", p % 4))],
                )
            })
            .collect();
        for (p, child) in pulls.into_iter().enumerate() {
            finish(child, &format!("pull {p}"));
        }
        done.store(true, Ordering::Relaxed);
        let (sweeps, assembled, factored) = (
            gc.join().unwrap(),
            assemble.join().unwrap(),
            factor.join().unwrap(),
        );
        assert!(sweeps > 0 && assembled > 0 && factored > 0);
        eprintln!("beside 8 pulls: {sweeps} gc runs, {assembled} assembles, {factored} factors");
    });

    let store = Store::open(env.store()).unwrap();
    let refs = store.refs().unwrap();
    assert!(refs.len() >= 4 + 2, "{refs:?}");
    for r in &refs {
        let missing = store.missing(&r.descriptor).unwrap();
        assert!(missing.is_empty(), "{} lacks {missing:?}", r.name);
    }
    for (i, image) in images.iter().enumerate() {
        assert!(
            refs.iter()
                .any(|r| r.descriptor.digest() == image.descriptor.digest()),
            "image {i} has no ref"
        );
    }
    for layer in images.iter().flat_map(|i| &i.layers) {
        let digest = layer.descriptor.digest();
        let sent: u64 = env.gets_of(digest).iter().map(|r| r.body_bytes).sum();
        assert_eq!(
            sent,
            layer.descriptor.size(),
            "{digest} crossed the network more than once"
        );
    }
    assert!(env.stowage(&["verify"]).status.success());
}
