//! Staging a package's files before they become a layer: the archive's entries arrive
//! in archive order, a layer needs them sorted, so contents go to a spool file (one
//! unlinked temporary file in the store's directory, never memory) and a sorted plan of
//! paths remembers where each one is.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;

use crate::store::Store;

use super::layer_tar::anonymous_file;
use super::noarch;
use super::package::{CondaPackage, EntryKind, PackageFormat};
use super::package_layer::{InstallError, LayerKey};
use super::package_path::is_clean;
use super::placeholder::Placeholder;
use super::PackageError;

/// Where a file's bytes are.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    /// A range of the spool file.
    Spooled { offset: u64, len: u64 },
    /// Made by stowage (an entry point script).
    Generated(Vec<u8>),
}

/// Where a layer entry comes from, for the `conda-meta` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A file of the package at this path in the archive (before any `noarch` layout).
    Package(String),
    /// A file under `info/` of a `.tar.bz2` (installed, never recorded or rewritten).
    Info,
    /// An entry point script.
    EntryPoint,
}

/// One entry of the layer, by path relative to the prefix.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Dir {
        /// Listed in `paths.json` as a `directory` (recorded), not just a parent.
        listed: bool,
    },
    Symlink {
        target: String,
        origin: Origin,
    },
    File {
        content: Content,
        executable: bool,
        placeholder: Option<Placeholder>,
        origin: Origin,
    },
}

impl Node {
    fn describe(&self) -> &'static str {
        match self {
            Node::Dir { .. } => "a directory",
            Node::Symlink { .. } => "a symlink",
            Node::File { .. } => "a file",
        }
    }
}

/// The layer's entries, sorted by path relative to the prefix.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub nodes: BTreeMap<String, Node>,
}

impl Plan {
    /// Adds an entry; two entries for one path are a conflict (two directories merge).
    pub fn insert(&mut self, path: String, node: Node) -> Result<(), String> {
        // Every way into the plan (archive entries, paths.json, entry points) ends here:
        // a path the layer would join to the prefix must stay under it.
        if !is_clean(&path) {
            return Err(format!(
                "{path:?} is not a plain relative path (empty, absolute, or with `.` or `..`): it would land outside the prefix"
            ));
        }
        match (self.nodes.get_mut(&path), &node) {
            (None, _) => {
                self.nodes.insert(path, node);
                Ok(())
            }
            (Some(Node::Dir { listed }), Node::Dir { listed: also }) => {
                *listed |= *also;
                Ok(())
            }
            (Some(existing), _) => Err(format!(
                "{} and {} at the same path",
                existing.describe(),
                node.describe()
            )),
        }
    }

    /// Adds every missing parent directory; a parent that is a file or a symlink is an
    /// error naming the path below it.
    pub fn add_parents(&mut self) -> Result<(), (String, String)> {
        let mut parents = Vec::new();
        for path in self.nodes.keys() {
            let mut at = path.as_str();
            while let Some((parent, _)) = at.rsplit_once('/') {
                parents.push((parent.to_string(), path.clone()));
                at = parent;
            }
        }
        for (parent, child) in parents {
            match self.nodes.get(&parent) {
                None => {
                    self.nodes.insert(parent, Node::Dir { listed: false });
                }
                Some(Node::Dir { .. }) => {}
                Some(other) => {
                    return Err((
                        child,
                        format!("its parent {parent} is {}", other.describe()),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// The spool file: contents appended while the archive is read, read back by range.
pub(crate) struct Spool {
    writer: BufWriter<File>,
    len: u64,
}

impl Spool {
    pub fn new(file: File) -> Self {
        Self {
            writer: BufWriter::with_capacity(1 << 20, file),
            len: 0,
        }
    }

    /// Appends exactly `size` bytes of `reader`; returns their range.
    pub fn append(&mut self, reader: &mut dyn Read, size: u64) -> io::Result<Content> {
        let offset = self.len;
        let copied = io::copy(&mut reader.take(size), &mut self.writer)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("expected {size} bytes, the archive held {copied}"),
            ));
        }
        self.len += size;
        Ok(Content::Spooled { offset, len: size })
    }

    /// Ends writing; the contents can then be read back.
    pub fn finish(mut self) -> io::Result<SpoolFile> {
        self.writer.flush()?;
        let file = self.writer.into_inner().map_err(|e| e.into_error())?;
        Ok(SpoolFile { file })
    }
}

/// A finished spool, read by range.
pub(crate) struct SpoolFile {
    file: File,
}

impl SpoolFile {
    /// A reader of `content` and its length.
    pub fn open<'a>(&'a self, content: &'a Content) -> (Box<dyn Read + 'a>, u64) {
        match content {
            Content::Spooled { offset, len } => (
                Box::new(RangeReader {
                    file: &self.file,
                    pos: *offset,
                    end: offset + len,
                }),
                *len,
            ),
            Content::Generated(bytes) => (Box::new(bytes.as_slice()), bytes.len() as u64),
        }
    }

    /// The whole of `content` in memory (files whose placeholder is rewritten).
    pub fn read(&self, content: &Content) -> io::Result<Vec<u8>> {
        let (mut reader, len) = self.open(content);
        let mut data = Vec::with_capacity(len as usize);
        reader.read_to_end(&mut data)?;
        Ok(data)
    }
}

struct RangeReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Spooled files by their path in the archive, for hard links to point at.
pub(crate) type Spooled = HashMap<String, (Content, bool)>;

/// Reads the package's entries into a spool and a sorted plan of the layer (paths
/// relative to the prefix), with entry points and parent directories added.
pub(crate) fn stage(
    store: &Store,
    package: &CondaPackage,
    key: &LayerKey,
) -> Result<(Plan, Spool), InstallError> {
    let label = package.label();
    let meta = package.metadata();
    let conflict = |path: &str, reason: String| InstallError::Conflict {
        package: label.clone(),
        path: path.to_string(),
        reason,
    };
    let mut spool = Spool::new(anonymous_file(store).map_err(|source| InstallError::Write {
        package: label.clone(),
        source,
    })?);
    let mut plan = Plan::default();
    let mut spooled = Spooled::new();
    let mut seen = HashSet::new();
    // What paths.json says each file holds: conda checks it, and so a compressed
    // bomb whose tar header claims gigabytes is refused before a byte is spooled.
    let declared: HashMap<&str, u64> = meta
        .paths
        .iter()
        .filter_map(|p| Some((p.path.as_str(), p.size_in_bytes?)))
        .collect();
    // And nothing is spooled past what the store's disk can take.
    let mut room = store.free_space().unwrap_or(u64::MAX);
    let whole_archive = package.format() == PackageFormat::TarBz2;
    package.read_entries(|entry| -> Result<(), InstallError> {
        let source = entry.path;
        let info = whole_archive && (source == "info" || source.starts_with("info/"));
        let target = match key.python {
            Some(python) if !info => noarch::target_path(&source, python),
            _ => source.clone(),
        };
        let origin = if info {
            Origin::Info
        } else {
            Origin::Package(source.clone())
        };
        let placeholder = if info {
            None
        } else {
            meta.placeholders.get(&source).cloned()
        };
        let node = match entry.kind {
            EntryKind::Directory => Node::Dir { listed: false },
            EntryKind::Symlink(target) => Node::Symlink { target, origin },
            EntryKind::File => {
                if let Some(&size) = declared.get(source.as_str()) {
                    if size != entry.size {
                        return Err(conflict(
                            &source,
                            format!(
                                "the archive holds {} bytes, info/paths.json says {size}",
                                entry.size
                            ),
                        ));
                    }
                }
                room = room.checked_sub(entry.size).ok_or_else(|| {
                    conflict(
                        &source,
                        format!(
                            "{} bytes do not fit in the {room} bytes free where the store is",
                            entry.size
                        ),
                    )
                })?;
                let content =
                    spool
                        .append(entry.reader, entry.size)
                        .map_err(|e| PackageError::Entry {
                            package: label.clone(),
                            path: source.clone(),
                            reason: e.to_string(),
                        })?;
                let executable = entry.mode & 0o111 != 0;
                spooled.insert(source.clone(), (content.clone(), executable));
                Node::File {
                    content,
                    executable,
                    placeholder,
                    origin,
                }
            }
            EntryKind::HardLink(to) => {
                let (content, executable) = spooled.get(&to).cloned().ok_or_else(|| {
                    conflict(
                        &source,
                        format!("a hard link to {to}, which the archive does not hold before it"),
                    )
                })?;
                Node::File {
                    content,
                    executable,
                    placeholder,
                    origin,
                }
            }
        };
        plan.insert(target, node)
            .map_err(|reason| conflict(&source, reason))?;
        seen.insert(source);
        Ok(())
    })?;

    for entry in &meta.paths {
        let target = match key.python {
            Some(python) => noarch::target_path(&entry.path, python),
            None => entry.path.clone(),
        };
        if entry.is_directory() {
            plan.insert(target, Node::Dir { listed: true })
                .map_err(|reason| conflict(&entry.path, reason))?;
        } else if !seen.contains(&entry.path) {
            return Err(InstallError::MissingFile {
                package: label.clone(),
                file: entry.path.clone(),
            });
        }
    }
    if let Some(python) = key.python {
        for entry_point in &meta.entry_points {
            let script = entry_point.script(key.prefix.as_str(), python);
            let node = Node::File {
                content: Content::Generated(script.into_bytes()),
                executable: true,
                placeholder: None,
                origin: Origin::EntryPoint,
            };
            let path = entry_point.target_path();
            plan.insert(path.clone(), node).map_err(|reason| {
                conflict(
                    &path,
                    format!("entry point {}: {reason}", entry_point.command),
                )
            })?;
        }
    }
    plan.add_parents()
        .map_err(|(path, reason)| conflict(&path, reason))?;
    Ok((plan, spool))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_and_parents() {
        let mut plan = Plan::default();
        let file = || Node::File {
            content: Content::Generated(vec![]),
            executable: false,
            placeholder: None,
            origin: Origin::EntryPoint,
        };
        plan.insert("a/b/c".into(), file()).unwrap();
        plan.insert("a".into(), Node::Dir { listed: true }).unwrap();
        plan.insert("a".into(), Node::Dir { listed: false })
            .unwrap();
        assert!(matches!(plan.nodes["a"], Node::Dir { listed: true }));
        assert!(plan.insert("a/b/c".into(), file()).is_err());
        plan.add_parents().unwrap();
        assert_eq!(plan.nodes.keys().collect::<Vec<_>>(), ["a", "a/b", "a/b/c"]);
        plan.insert("x".into(), file()).unwrap();
        plan.insert("x/y".into(), file()).unwrap();
        assert_eq!(plan.add_parents().unwrap_err().0, "x/y");
    }
}
