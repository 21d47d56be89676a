//! `examples/embed.rs`, the library as an environment tool uses it, built by `cargo
//! test` and run here against the real registry: every call of the seeds' runtime
//! trait, with a refused pin, a verified pull, offline checks, ensure and assemble.

use std::path::PathBuf;
use std::process::Command;

use crate::support::fixtures::gzip_zstd_image;
use crate::support::pulling::*;

/// `target/<profile>/examples/embed`, beside this test's own `deps/` folder.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples/embed");
    assert!(
        path.is_file(),
        "{path:?} is missing: cargo test builds the examples"
    );
    path
}

#[test]
fn the_embedding_example_pulls_checks_ensures_and_assembles() {
    let env = Env::new();
    let image = gzip_zstd_image(&env.fixtures, "amd64");
    env.push(&image.descriptor, "embed/app:1");
    let mut args = vec![
        env.store().display().to_string(),
        env.via_proxy("embed/app:1"),
        image.descriptor.digest().to_string(),
    ];
    args.extend(
        image
            .layers
            .iter()
            .map(|l| format!("{}:{}", l.descriptor.digest(), l.descriptor.size())),
    );
    let output = Command::new(example()).args(&args).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        summary["refused"].as_str().unwrap().contains("expected"),
        "{summary}"
    );
    assert_eq!(summary["available"], true);
    assert_eq!(summary["ensure_fetched"], 0, "{summary}");
    let size: u64 = image.layers.iter().map(|l| l.descriptor.size()).sum();
    assert!(
        summary["bytes_fetched"].as_u64().unwrap() >= size,
        "{summary}"
    );
    let listed = String::from_utf8_lossy(&env.stowage(&["ls"]).stdout).into_owned();
    assert!(
        listed.contains("example/assembled:1") && listed.contains("embed/app:1"),
        "{listed}"
    );
    assert!(env.stowage(&["verify"]).status.success());

    // A layer pinned wrong: the example fails, naming it.
    let mut wrong = args.clone();
    wrong[3] = format!(
        "sha256:{}:{}",
        "1".repeat(64),
        image.layers[0].descriptor.size()
    );
    let store = env.dir.path().join("store-wrong");
    wrong[0] = store.display().to_string();
    let output = Command::new(example()).args(&wrong).output().unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(&"1".repeat(64)),
        "{}",
        stderr(&output)
    );
}
