//! Builds real, small conda packages for tests, in both formats: `.conda` (a zip of
//! `metadata.json`, `info-*.tar.zst`, `pkg-*.tar.zst`, members stored) and `.tar.bz2`
//! (one tar of `info/` and the files). `info/index.json`, `info/paths.json` (or only
//! `info/has_prefix`), `info/link.json` and `info/files` are written as conda-build
//! writes them. Archive entries carry a build machine's owner and time stamps, and
//! come unsorted (info last in a `.tar.bz2`), so a layer builder must normalise them.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// conda-build's long placeholder: a build prefix padded to 255 bytes.
pub fn long_placeholder() -> String {
    let mut p = "/home/conda/feedstock_root/build_artifacts/tool_1700000000000/_h_env".to_string();
    while p.len() < 255 {
        p.push_str("_placehold");
    }
    p.truncate(255);
    p
}

/// The placeholder of old packages (and of `has_prefix` lines naming only a path).
pub const LEGACY: &str = "/opt/anaconda1anaconda2anaconda3";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Conda,
    TarBz2,
}

#[derive(Debug, Clone)]
pub enum Item {
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
        /// (placeholder, "text" | "binary") recorded in paths.json.
        placeholder: Option<(String, &'static str)>,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// A file whose path is written into the tar as it is (GNU long name when over 100
    /// bytes), `..` and all: what a hostile package holds, and the tar crate's own
    /// path setter refuses to write.
    Raw {
        path: String,
        data: Vec<u8>,
        kind: tar::EntryType,
    },
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub version: String,
    pub build: String,
    pub subdir: String,
    pub noarch: Option<&'static str>,
    /// `index.json`'s `depends`: match specs as conda writes them.
    pub depends: Vec<String>,
    pub items: Vec<Item>,
    pub paths_json: bool,
    pub has_prefix: Option<String>,
    pub entry_points: Vec<String>,
    /// Files listed in paths.json but left out of the archive (a broken package).
    pub missing: Vec<String>,
    /// Paths listed in paths.json as `directory` entries (not in the archive).
    pub directories: Vec<String>,
    /// Sizes paths.json states for these files instead of their own (a lie).
    pub stated_sizes: Vec<(String, usize)>,
}

impl Spec {
    pub fn new(name: &str, version: &str, build: &str) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            build: build.into(),
            subdir: "linux-64".into(),
            noarch: None,
            depends: Vec::new(),
            items: Vec::new(),
            paths_json: true,
            has_prefix: None,
            entry_points: Vec::new(),
            missing: Vec::new(),
            directories: Vec::new(),
            stated_sizes: Vec::new(),
        }
    }

    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.items.push(Item::File {
            path: path.into(),
            data: data.into(),
            mode,
            placeholder: None,
        });
        self
    }

    /// A file paths.json marks with `placeholder` in `mode` ("text" or "binary").
    pub fn with_prefix(
        mut self,
        path: &str,
        data: impl Into<Vec<u8>>,
        file_mode: u32,
        placeholder: &str,
        mode: &'static str,
    ) -> Self {
        self.items.push(Item::File {
            path: path.into(),
            data: data.into(),
            mode: file_mode,
            placeholder: Some((placeholder.into(), mode)),
        });
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.items.push(Item::Symlink {
            path: path.into(),
            target: target.into(),
        });
        self
    }

    /// A file written into the archive under `path` as it is (see [`Item::Raw`]).
    pub fn raw(self, path: &str, data: impl Into<Vec<u8>>) -> Self {
        self.raw_entry(path, data, tar::EntryType::Regular)
    }

    /// An entry of any `kind` (a device file, say), written as [`Spec::raw`] does.
    pub fn raw_entry(mut self, path: &str, data: impl Into<Vec<u8>>, kind: tar::EntryType) -> Self {
        self.items.push(Item::Raw {
            path: path.into(),
            data: data.into(),
            kind,
        });
        self
    }

    pub fn label(&self) -> String {
        format!("{}-{}-{}", self.name, self.version, self.build)
    }

    fn info_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut index = json!({
            "name": self.name, "version": self.version, "build": self.build,
            "build_number": 0, "subdir": self.subdir, "depends": self.depends, "license": "MIT",
            "timestamp": 1700000000000u64,
        });
        if let Some(noarch) = self.noarch {
            index["noarch"] = noarch.into();
        }
        let mut info = vec![(
            "info/index.json".to_string(),
            serde_json::to_vec(&index).unwrap(),
        )];
        let paths: Vec<Value> = self
            .items
            .iter()
            .map(|item| match item {
                Item::File {
                    path,
                    data,
                    placeholder,
                    ..
                } => {
                    let size = self
                        .stated_sizes
                        .iter()
                        .find(|(p, _)| p == path)
                        .map_or(data.len(), |(_, size)| *size);
                    let mut entry = json!({
                        "_path": path, "path_type": "hardlink",
                        "sha256": format!("{:x}", Sha256::digest(data)), "size_in_bytes": size,
                    });
                    if let Some((placeholder, mode)) = placeholder {
                        entry["prefix_placeholder"] = placeholder.clone().into();
                        entry["file_mode"] = (*mode).into();
                    }
                    entry
                }
                Item::Symlink { path, .. } => {
                    json!({"_path": path, "path_type": "softlink", "size_in_bytes": 0})
                }
                Item::Raw { path, data, .. } => json!({
                    "_path": path, "path_type": "hardlink",
                    "sha256": format!("{:x}", Sha256::digest(data)), "size_in_bytes": data.len(),
                }),
            })
            .chain(
                self.directories
                    .iter()
                    .map(|path| json!({"_path": path, "path_type": "directory"})),
            )
            .collect();
        if self.paths_json {
            let paths_json = json!({"paths": paths, "paths_version": 1});
            info.push((
                "info/paths.json".into(),
                serde_json::to_vec_pretty(&paths_json).unwrap(),
            ));
        }
        if let Some(has_prefix) = &self.has_prefix {
            info.push(("info/has_prefix".into(), has_prefix.clone().into_bytes()));
        }
        if !self.entry_points.is_empty() {
            let link = json!({"noarch": {"type": "python", "entry_points": self.entry_points}, "package_metadata_version": 1});
            info.push(("info/link.json".into(), serde_json::to_vec(&link).unwrap()));
        }
        let files: String = self
            .items
            .iter()
            .map(|i| format!("{}\n", item_path(i)))
            .collect();
        info.push(("info/files".into(), files.into_bytes()));
        info
    }

    /// Writes the package into `dir` as `<label>.conda` or `<label>.tar.bz2`.
    pub fn write(&self, dir: &Path, format: Format) -> PathBuf {
        let extension = match format {
            Format::TarBz2 => "tar.bz2",
            Format::Conda => "conda",
        };
        let path = dir.join(format!("{}.{extension}", self.label()));
        self.write_to(&path, format);
        path
    }

    /// Writes the package to `path` (whatever its metadata says its name is).
    pub fn write_to(&self, path: &Path, format: Format) {
        let info: Vec<Entry> = self
            .info_files()
            .into_iter()
            .map(|(p, d)| Entry::file(&p, d, 0o664))
            .collect();
        // Reverse order: the layer builder must sort.
        let files: Vec<Entry> = self
            .items
            .iter()
            .rev()
            .filter(|i| !self.missing.iter().any(|m| m == item_path(i)))
            .map(Entry::from_item)
            .collect();
        match format {
            Format::TarBz2 => {
                let tar = tar_of(files.iter().chain(&info));
                let mut out = bzip2::write::BzEncoder::new(
                    std::fs::File::create(path).unwrap(),
                    bzip2::Compression::best(),
                );
                out.write_all(&tar).unwrap();
                out.finish().unwrap();
            }
            Format::Conda => {
                let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
                let stored = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored);
                let members = [
                    (
                        "metadata.json".to_string(),
                        br#"{"conda_pkg_format_version": 2}"#.to_vec(),
                    ),
                    (
                        format!("pkg-{}.tar.zst", self.label()),
                        zstd::encode_all(&tar_of(&files)[..], 19).unwrap(),
                    ),
                    (
                        format!("info-{}.tar.zst", self.label()),
                        zstd::encode_all(&tar_of(&info)[..], 19).unwrap(),
                    ),
                ];
                for (name, data) in members {
                    zip.start_file(name, stored).unwrap();
                    zip.write_all(&data).unwrap();
                }
                zip.finish().unwrap();
            }
        }
    }
}

fn item_path(item: &Item) -> &str {
    match item {
        Item::File { path, .. } | Item::Symlink { path, .. } | Item::Raw { path, .. } => path,
    }
}

struct Entry {
    path: String,
    data: Vec<u8>,
    mode: u32,
    link: Option<String>,
    /// Written as it is, with this entry type (see [`Item::Raw`]).
    raw: Option<tar::EntryType>,
}

impl Entry {
    fn file(path: &str, data: Vec<u8>, mode: u32) -> Self {
        Self {
            path: path.into(),
            data,
            mode,
            link: None,
            raw: None,
        }
    }

    fn from_item(item: &Item) -> Self {
        match item {
            Item::File {
                path, data, mode, ..
            } => Self::file(path, data.clone(), *mode),
            Item::Symlink { path, target } => Self {
                path: path.clone(),
                data: Vec::new(),
                mode: 0o777,
                link: Some(target.clone()),
                raw: None,
            },
            Item::Raw { path, data, kind } => Self {
                raw: Some(*kind),
                ..Self::file(path, data.clone(), 0o644)
            },
        }
    }
}

/// A tar as a build machine writes it: owner 1000 "builder", a real mtime.
fn tar_of<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mode(entry.mode);
        header.set_uid(1000);
        header.set_gid(1000);
        header.set_username("builder").unwrap();
        header.set_mtime(1_700_000_000);
        if let Some(kind) = entry.raw {
            append_raw(&mut builder, &entry.path, &entry.data, kind);
            continue;
        }
        match &entry.link {
            Some(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder
                    .append_link(&mut header, &entry.path, target)
                    .unwrap();
            }
            None => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(entry.data.len() as u64);
                builder
                    .append_data(&mut header, &entry.path, &entry.data[..])
                    .unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

/// Appends an entry of `kind` under `path` exactly as given: a GNU long-name entry first
/// when it does not fit the header's 100 bytes, as GNU tar writes one.
fn append_raw(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], kind: tar::EntryType) {
    let name = path.as_bytes();
    let mut header = tar::Header::new_gnu();
    if name.len() > 100 {
        let mut long = tar::Header::new_gnu();
        long.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        long.set_entry_type(tar::EntryType::GNULongName);
        long.set_mode(0o644);
        long.set_size(name.len() as u64 + 1);
        long.set_cksum();
        let mut body = name.to_vec();
        body.push(0);
        builder.append(&long, &body[..]).unwrap();
    }
    let short = &name[..name.len().min(100)];
    header.as_gnu_mut().unwrap().name[..short.len()].copy_from_slice(short);
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data).unwrap();
}
