//! Image references, as typed by users and written in lockfiles.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage::Reference;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(reference) = input.parse::<Reference>() else {
        return;
    };
    // The printed form is what pulls record and `lock` writes: it must read back as
    // the same reference.
    let printed = reference.to_string();
    match printed.parse::<Reference>() {
        Ok(again) => assert_eq!(again, reference, "{input:?} printed as {printed:?}"),
        Err(e) => panic!("{input:?} printed as {printed:?}, which does not parse: {e}"),
    }
    let _ = (reference.api_host(), reference.target(), reference.name());
});
