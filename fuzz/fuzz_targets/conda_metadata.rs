//! A conda package's `info/` files. An input is up to four files separated by NUL
//! bytes, in this order; an empty one is absent from the package.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage::fuzzing::conda_metadata;

const FILES: [&str; 4] = [
    "info/index.json",
    "info/paths.json",
    "info/link.json",
    "info/has_prefix",
];

fuzz_target!(|data: &[u8]| {
    let files: Vec<(&str, &[u8])> = FILES
        .into_iter()
        .zip(data.split(|b| *b == 0))
        .filter(|(_, contents)| !contents.is_empty())
        .collect();
    let Ok(metadata) = conda_metadata(&files) else {
        return;
    };
    // The name becomes a file name under conda-meta/ and every path is joined to the
    // prefix: none may reach outside it.
    let label = format!("{}-{}-{}", metadata.name, metadata.version, metadata.build);
    assert!(!label.contains(['/', '\0']), "{label:?}");
    for entry in &metadata.paths {
        let path = &entry.path;
        assert!(!path.is_empty() && !path.starts_with('/'), "{path:?}");
        assert!(!path.split('/').any(|c| c == ".."), "{path:?}");
    }
});
