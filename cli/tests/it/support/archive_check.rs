//! What the archive tests share: images pulled into a store, stowage run on a store
//! with its JSON summary or its error, and what an exported tar, a layout directory
//! or a store holds.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::fixtures::{
    gzip_zstd_image, put_image, put_layer, sample_tree, two_platform_index, Compression, Image,
    Index,
};
use super::pulling::{stderr, stowage_in, Env};

/// Two images pulled into `env.store()`: a gzip+zstd image and (all platforms) a
/// two-platform index, plus a third image that no export asks for.
pub struct Pulled {
    pub env: Env,
    pub a: Image,
    pub index: Index,
    pub other: Image,
    pub ref_a: String,
    pub ref_index: String,
    pub ref_other: String,
}

pub fn pulled() -> Pulled {
    let env = Env::new();
    let a = gzip_zstd_image(&env.fixtures, "amd64");
    let index = two_platform_index(&env.fixtures);
    let other_layer = put_layer(&env.fixtures, &sample_tree("other"), Compression::Gzip);
    let other = put_image(&env.fixtures, "amd64", vec![other_layer]);
    env.push(&a.descriptor, "tools/a:1");
    env.push(&index.descriptor, "multi/arch:1");
    env.push(&other.descriptor, "tools/other:1");
    let (ref_a, ref_index, ref_other) = (
        env.via_proxy("tools/a:1"),
        env.via_proxy("multi/arch:1"),
        env.via_proxy("tools/other:1"),
    );
    env.pull(&[&ref_a]);
    env.pull(&["--all-platforms", &ref_index]);
    env.pull(&[&ref_other]);
    Pulled {
        env,
        a,
        index,
        other,
        ref_a,
        ref_index,
        ref_other,
    }
}

/// Digests of an image's manifest, config and layers.
pub fn image_blobs(image: &Image) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = [image.descriptor.digest(), image.config.digest()]
        .into_iter()
        .map(ToString::to_string)
        .collect();
    set.extend(
        image
            .layers
            .iter()
            .map(|l| l.descriptor.digest().to_string()),
    );
    set
}

pub fn index_blobs(index: &Index) -> BTreeSet<String> {
    let mut set = BTreeSet::from([index.descriptor.digest().to_string()]);
    for image in &index.images {
        set.extend(image_blobs(image));
    }
    set
}

/// Runs stowage on `store` and returns the JSON summary; panics with stderr on failure.
pub fn ok(store: &Path, args: &[&str]) -> Value {
    let output = stowage_in(store, args);
    assert!(
        output.status.success(),
        "stowage {args:?} failed: {}",
        stderr(&output)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stowage {args:?} printed bad JSON ({e})"))
}

/// Runs stowage on `store`, expects failure, and returns stderr.
pub fn fails(store: &Path, args: &[&str]) -> String {
    let output = stowage_in(store, args);
    assert!(
        !output.status.success(),
        "stowage {args:?} succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr(&output)
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The digests of the blobs a tar archive holds.
pub fn tar_blobs(path: &Path) -> BTreeSet<String> {
    tar_entries(path)
        .into_iter()
        .filter_map(|e| {
            e.path
                .strip_prefix("blobs/sha256/")
                .map(|h| format!("sha256:{h}"))
        })
        .filter(|d| d.len() > "sha256:".len())
        .collect()
}

pub fn dir_blobs(root: &Path) -> BTreeSet<String> {
    match fs::read_dir(root.join("blobs/sha256")) {
        Ok(dir) => dir
            .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// One tar entry as the test sees it.
#[derive(Debug)]
pub struct TarEntry {
    pub path: String,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Where its data starts in the file, and how long it is.
    pub data_at: u64,
    pub size: u64,
}

pub fn tar_entries(path: &Path) -> Vec<TarEntry> {
    let mut archive = tar::Archive::new(fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            TarEntry {
                path: e.path().unwrap().to_string_lossy().into_owned(),
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                data_at: e.raw_file_position(),
                size: e.size(),
            }
        })
        .collect()
}

/// `ls` as (name, digest) pairs, sorted.
pub fn listed(store: &Path) -> Vec<(String, String)> {
    let mut refs: Vec<(String, String)> = ok(store, &["ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    refs.sort();
    refs
}

/// No half-written export is left beside the outputs.
pub fn assert_no_temp_files(dir: &Path) {
    let leftovers: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("stowage-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
