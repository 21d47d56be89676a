//! `bv.lock`, the environment tool's lockfile, read into pins (it goes through the
//! same reader as `stowage.lock`, which tells the two apart by their tables).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage::fuzzing::read_pins;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = read_pins(text);
    }
});
