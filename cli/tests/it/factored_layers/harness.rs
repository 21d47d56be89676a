//! Installing test packages and reading their layers back from the store, checking
//! on the way what every layer must be: digest, size and diff_id right, entries sorted
//! with their parents before them, no owner and no time stamps.

use std::io::Read;
use std::path::PathBuf;

use stowage::store::{sha256_of, Store};
use stowage::{
    install_package, CondaPackage, InstallError, LayerCompression, LayerOptions, PackageLayer,
    Prefix, PythonVersion,
};

use super::conda_build::{Format, Spec};

pub struct Env {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub store: Store,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir(root.join("pkgs")).unwrap();
        let store = Store::open(root.join("store")).unwrap();
        Self {
            _dir: dir,
            root,
            store,
        }
    }

    pub fn package(&self, spec: &Spec, format: Format) -> CondaPackage {
        CondaPackage::open(spec.write(&self.root.join("pkgs"), format)).unwrap()
    }

    pub fn install(
        &self,
        package: &CondaPackage,
        prefix: &str,
        python: Option<PythonVersion>,
        compression: LayerCompression,
    ) -> Result<PackageLayer, InstallError> {
        let options = LayerOptions {
            prefix: Prefix::new(prefix).unwrap(),
            python,
            compression,
        };
        install_package(&self.store, package, &options)
    }
}

#[derive(Debug)]
pub struct Entry {
    pub path: String,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub data: Vec<u8>,
    pub link: Option<String>,
}

/// Reads a layer back from the store: checks its digest, size and diff_id, that the
/// entries are sorted and carry no owner or time, and returns them.
pub fn read_layer(store: &Store, layer: &PackageLayer) -> Vec<Entry> {
    let blob = std::fs::read(store.blob_path(&layer.digest)).unwrap();
    assert_eq!(sha256_of(&blob), layer.digest);
    assert_eq!(blob.len() as u64, layer.size);
    let mut tar = Vec::new();
    match layer.media_type.to_string().as_str() {
        "application/vnd.oci.image.layer.v1.tar+zstd" => tar = zstd::decode_all(&blob[..]).unwrap(),
        "application/vnd.oci.image.layer.v1.tar+gzip" => {
            flate2::read::GzDecoder::new(&blob[..])
                .read_to_end(&mut tar)
                .unwrap();
        }
        other => panic!("media type {other}"),
    }
    assert_eq!(sha256_of(&tar), layer.diff_id);
    let mut entries = Vec::new();
    for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        assert_eq!(
            (
                header.mtime().unwrap(),
                header.uid().unwrap(),
                header.gid().unwrap()
            ),
            (0, 0, 0)
        );
        assert_eq!(header.username_bytes().unwrap_or_default(), b"");
        assert_eq!(header.groupname_bytes().unwrap_or_default(), b"");
        let path = entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        entries.push(Entry {
            path,
            kind: header.entry_type(),
            mode: header.mode().unwrap(),
            data,
            link,
        });
    }
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(paths, sorted, "entries sorted, each once");
    for entry in &entries {
        if let Some((parent, _)) = entry.path.rsplit_once('/') {
            let at = paths.iter().position(|p| *p == parent);
            let me = paths.iter().position(|p| *p == entry.path).unwrap();
            assert!(
                at.is_some_and(|at| at < me),
                "{parent} is an entry before {}",
                entry.path
            );
        }
    }
    entries
}

pub fn get<'a>(entries: &'a [Entry], path: &str) -> &'a Entry {
    entries.iter().find(|e| e.path == path).unwrap_or_else(|| {
        let paths: Vec<_> = entries.iter().map(|e| &e.path).collect();
        panic!("no {path} in the layer: {paths:?}")
    })
}

pub fn text(entry: &Entry) -> String {
    String::from_utf8(entry.data.clone()).unwrap()
}
