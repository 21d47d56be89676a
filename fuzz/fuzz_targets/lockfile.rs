//! `stowage.lock`: read into pins, and read, written and read again by `lock`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage::fuzzing::{read_lockfile, read_pins};

fuzz_target!(|data: &[u8]| {
    // Lockfiles are read as UTF-8 text; other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = read_pins(text);
    let Ok(lockfile) = read_lockfile(text) else {
        return;
    };
    // What `lock` writes reads back as what it wrote (images sorted by reference).
    let written = lockfile.to_toml();
    let again = read_lockfile(&written)
        .unwrap_or_else(|e| panic!("the written lockfile does not read back: {e}\n{written}"));
    let mut sorted = lockfile;
    sorted.images.sort_by(|a, b| a.reference.cmp(&b.reference));
    assert_eq!(again, sorted, "{written}");
});
