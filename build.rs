//! Names the code that decides a factored layer's bytes, so that the store's layer
//! cache (src/factored/layer_cache.rs) never hands out a layer another build of
//! stowage made: the version alone does not change between two git builds.

use sha2::{Digest as _, Sha256};

/// What `install_package` runs to turn a package into a layer, and the lock file that
/// pins the compressors.
const LAYER_CODE: &[&str] = &[
    "Cargo.lock",
    "src/factored/install.rs",
    "src/factored/layer_tar.rs",
    "src/factored/metadata.rs",
    "src/factored/noarch.rs",
    "src/factored/package.rs",
    "src/factored/placeholder.rs",
    "src/factored/record.rs",
    "src/factored/staging.rs",
];

fn main() {
    let mut hasher = Sha256::new();
    for path in LAYER_CODE {
        println!("cargo:rerun-if-changed={path}");
        hasher.update(path.as_bytes());
        // A source package may come without Cargo.lock: then the version stands in.
        if let Ok(text) = std::fs::read(path) {
            hasher.update(&text);
        }
    }
    let id: String = hasher.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo:rustc-env=STOWAGE_LAYER_CODE={id}");
}
