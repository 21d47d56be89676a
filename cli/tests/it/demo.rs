//! The README's first command: `make demo` runs `scripts/demo.sh`, which must print
//! every step and exit 0 when it worked (its registry clean-up once turned a
//! success into `Error 143`). Run here with the test build of stowage.

use std::process::Command;

#[test]
fn the_demo_script_runs_every_step_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("demo-store");
    let output = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/demo.sh"))
        .env("STOWAGE", env!("CARGO_BIN_EXE_stowage"))
        .env("STORE", &store)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for step in [
        "pull (cold)",
        "pull again",
        "stowage ls",
        "stowage verify",
        "stowage du",
        "skopeo reads",
    ] {
        assert!(stdout.contains(step), "no {step:?} in:\n{stdout}");
    }
    assert!(stdout.contains("\"Architecture\": \"amd64\""), "{stdout}");
}
