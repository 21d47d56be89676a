//! Names the code that decides a factored layer's bytes, so that the store's layer
//! cache (src/factored/layer_cache.rs) never hands out a layer another build of
//! stowage made: the version alone does not change between two git builds.
//!
//! Every file under `src/factored/` is hashed, found by walking the folder (a hand-kept
//! list went stale silently when a file was added or moved), with the tar-header
//! helper the layer writer shares with the archive writers (`src/oci/tar_entry.rs`) and
//! the lock file that pins the compressors. Fetching (`pull::ensure`) and assembling (`oci::assemble`)
//! live outside the folder, so a change to them leaves the cached layers valid.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

const LAYER_CODE_DIR: &str = "src/factored";
/// Outside the folder but deciding layer bytes: every tar header's fixed fields.
const TAR_HEADERS: &str = "src/oci/tar_entry.rs";

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let mut files = vec![PathBuf::from("Cargo.lock")];
    files_under(Path::new(LAYER_CODE_DIR), &mut files);
    files.push(PathBuf::from(TAR_HEADERS));
    files[1..].sort();
    println!("cargo:rerun-if-changed={LAYER_CODE_DIR}");
    let mut hasher = Sha256::new();
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        hasher.update(path.to_string_lossy().as_bytes());
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
