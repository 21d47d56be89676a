//! Progress as a user sees it: on a real terminal (a pty made by util-linux `script`)
//! `stowage pull` draws a bar per layer and a total with bytes, rate and ETA; on a pipe
//! it draws nothing, and `-v` gives log lines instead of bars.

use std::process::Command;
use std::time::Duration;

use crate::support::pulling::{big_image, stderr, Env, BIN, MIB};
use stowage_faultproxy::Faults;

/// An environment holding one image with an 8 MiB layer, served at 8 MB/s per
/// connection so the pull lasts long enough for bars to be drawn; the reference
/// through the proxy and the first 12 hex digits of the layer's digest.
fn slow_env() -> (Env, String, String) {
    let env = Env::new();
    let image = big_image(&env.fixtures, 8 * MIB, 21);
    env.push(&image.descriptor, "slow:1");
    env.proxy.set_faults(Faults {
        rate: Some(8_000_000),
        delay: Duration::from_millis(5),
        ..Faults::default()
    });
    let layer = image.layers[0].descriptor.digest().digest()[..12].to_string();
    let reference = env.via_proxy("slow:1");
    (env, reference, layer)
}

#[test]
fn a_terminal_gets_a_bar_per_layer_and_a_total() {
    let (env, reference, layer) = slow_env();
    let command = format!("{BIN} --store {} pull {reference}", env.store().display());
    // `script` gives the command a pty for stdin, stdout and stderr and copies what it
    // wrote to its own stdout; -e passes the exit status on.
    let output = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "120")
        .output()
        .expect("util-linux `script` runs");
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pull on a terminal failed:\n{screen}"
    );
    assert!(
        screen.contains(&layer),
        "no bar for layer {layer} on the terminal:\n{screen:?}"
    );
    assert!(
        screen.contains("total") && screen.contains("eta") && screen.contains("/s"),
        "no total bar with rate and ETA on the terminal:\n{screen:?}"
    );
    assert!(
        screen.contains("fetched") && screen.contains("slow:1"),
        "no summary line after the bars:\n{screen:?}"
    );
}

#[test]
fn a_pipe_gets_no_bars_and_verbose_gets_log_lines() {
    let (env, reference, layer) = slow_env();
    let quiet = env.stowage_plain(&["pull", &reference]);
    assert!(quiet.status.success(), "pull failed: {}", stderr(&quiet));
    let err = stderr(&quiet);
    assert!(
        err.is_empty(),
        "a pull on a pipe printed on stderr:\n{err:?}"
    );
    let out = String::from_utf8_lossy(&quiet.stdout);
    assert!(
        out.contains("fetched"),
        "no summary line on stdout: {out:?}"
    );

    std::fs::remove_dir_all(env.store()).unwrap();
    let verbose = env.stowage_plain(&["-v", "pull", &reference]);
    assert!(
        verbose.status.success(),
        "pull -v failed: {}",
        stderr(&verbose)
    );
    let err = stderr(&verbose);
    assert!(!err.contains('\u{1b}'), "escape codes on a pipe:\n{err:?}");
    assert!(
        err.lines()
            .any(|l| l.contains("fetching") && l.contains(&layer[..12])),
        "-v logged no line for the layer:\n{err}"
    );
}
