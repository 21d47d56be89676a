//! The `WWW-Authenticate` header of a registry's 401 answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage::fuzzing::www_authenticate;

fuzz_target!(|data: &[u8]| {
    // reqwest hands over only header values that are text.
    if let Ok(header) = std::str::from_utf8(data) {
        let _ = www_authenticate(header);
    }
});
