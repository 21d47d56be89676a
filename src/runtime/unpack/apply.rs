//! Applying one layer's tar to the root, openat-style: every path is resolved inside
//! the root by `cap-std` (which refuses a `..`, an absolute symlink or any other
//! step that would lead out of it), and every change is then made with the entry's
//! last component relative to its parent directory's descriptor, never followed. A
//! layer can plant a symlink, but a later entry that tries to write through it to
//! outside the root fails, and nothing is written.
//!
//! OCI whiteouts are applied as the image-spec says: `.wh.NAME` removes `NAME` of the
//! layers below, `.wh..wh..opq` empties its directory of what the layers below put
//! there; neither touches what this layer itself writes.

use std::collections::HashSet;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Who owns what is unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owners {
    /// The uids and gids the layers name (needs root).
    Keep,
    /// The caller, whatever the layers say (`--rootless`).
    Caller,
}

/// What went wrong with one entry; the caller adds the layer.
#[derive(Debug)]
pub(super) enum EntryError {
    /// The entry's path, or a link's target, leads outside the root.
    Escape {
        path: String,
        detail: String,
    },
    Failed {
        path: String,
        source: io::Error,
    },
}

/// Counts for the report.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Applied {
    pub entries: u64,
    pub whiteouts: u64,
    /// Device nodes not made (only root may).
    pub devices_skipped: u64,
    /// Extended attributes the filesystem or the caller's rights refused.
    pub xattrs_skipped: u64,
}

/// The root being unpacked into, and what must wait for the end.
pub(super) struct Root {
    dir: Dir,
    owners: Owners,
    /// Directories' modes and times, set last: later entries (and layers) write into
    /// them, which a read-only mode would forbid and which would move their mtime.
    dirs: Vec<(PathBuf, u32, i64)>,
}

impl Root {
    pub fn new(dir: Dir, owners: Owners) -> Self {
        Self {
            dir,
            owners,
            dirs: Vec::new(),
        }
    }

    /// Applies one layer's entries in order.
    pub fn apply<R: Read>(&mut self, tar: R) -> Result<Applied, EntryError> {
        let mut archive = tar::Archive::new(tar);
        let mut applied = Applied::default();
        // What this layer wrote: its own whiteouts must not remove it.
        let mut written: HashSet<PathBuf> = HashSet::new();
        let entries = archive.entries().map_err(|source| EntryError::Failed {
            path: "(archive)".into(),
            source,
        })?;
        for entry in entries {
            let mut entry = entry.map_err(|source| EntryError::Failed {
                path: "(next entry)".into(),
                source,
            })?;
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let path = clean(&shown).map_err(|detail| EntryError::Escape {
                path: shown.clone(),
                detail,
            })?;
            let failed = |source: io::Error| classify(&shown, source);
            let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue; // the root itself
            };
            let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
            if name == OPAQUE {
                self.opaque(&parent, &written).map_err(failed)?;
                applied.whiteouts += 1;
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT) {
                let target = parent.join(hidden);
                if !written.contains(&target) {
                    self.remove(&target).map_err(failed)?;
                }
                applied.whiteouts += 1;
                continue;
            }
            let made = self
                .entry(&mut entry, &parent, &name, &path)
                .map_err(failed)?;
            match made {
                Made::Entry => applied.entries += 1,
                Made::SkippedDevice => applied.devices_skipped += 1,
            }
            applied.xattrs_skipped += self.xattrs(&mut entry, &parent, &name).map_err(failed)?;
            written.insert(path);
        }
        Ok(applied)
    }

    /// Sets the directories' modes and times, deepest first.
    pub fn finish(mut self) -> io::Result<()> {
        self.dirs
            .sort_by_key(|(path, ..)| std::cmp::Reverse(path.components().count()));
        for (path, mode, mtime) in std::mem::take(&mut self.dirs) {
            let name = path.file_name().expect("a directory entry has a name");
            let Ok(parent) = self.parent(path.parent().unwrap_or(Path::new(""))) else {
                continue; // removed by a later layer
            };
            match parent.symlink_metadata(name) {
                Ok(meta) if meta.is_dir() => {}
                _ => continue, // replaced by a later layer
            }
            rustix::fs::chmodat(&parent, name, Mode::from_raw_mode(mode), AtFlags::empty())?;
            set_times(&parent, name, mtime)?;
        }
        Ok(())
    }

    fn parent(&self, path: &Path) -> io::Result<Dir> {
        if path.as_os_str().is_empty() {
            self.dir.try_clone()
        } else {
            self.dir.open_dir(path)
        }
    }

    /// The directory `path`, made (with its parents) if it is missing. An existing
    /// step is opened, never made again: a symlink there is followed inside the root,
    /// or refused.
    fn parent_made(&self, path: &Path) -> io::Result<Dir> {
        match self.parent(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.dir.create_dir_all(path)?;
                self.parent(path)
            }
            other => other,
        }
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent_path: &Path,
        name: &str,
        path: &Path,
    ) -> io::Result<Made> {
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode()? & 0o7777;
        let mtime = header.mtime()? as i64;
        let (uid, gid) = (header.uid()? as u32, header.gid()? as u32);
        let parent = self.parent_made(parent_path)?;
        let existing = parent.symlink_metadata(name).ok();
        if let Some(meta) = &existing {
            if !(kind.is_dir() && meta.is_dir()) {
                if meta.is_dir() {
                    parent.remove_dir_all(name)?;
                } else {
                    parent.remove_file(name)?;
                }
            }
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut options = OpenOptions::new();
                options.write(true).create_new(true).mode(0o600);
                let mut file = parent.open_with(name, &options)?.into_std();
                io::copy(entry, &mut file)?;
                self.own(&parent, name, uid, gid)?;
                // After chown, which clears set-id bits.
                rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))?;
                rustix::fs::futimens(&file, &timestamps(mtime))?;
            }
            tar::EntryType::Directory => {
                if existing.is_none() {
                    parent.create_dir(name)?;
                }
                self.own(&parent, name, uid, gid)?;
                self.dirs.push((path.to_path_buf(), mode, mtime));
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| io::Error::other("a symlink without a target"))?;
                parent.symlink_contents(&*target, name)?;
                self.own(&parent, name, uid, gid)?;
                set_times(&parent, name, mtime)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| io::Error::other("a hard link without a target"))?;
                let target = clean(&target.to_string_lossy()).map_err(|detail| {
                    io::Error::new(io::ErrorKind::PermissionDenied, format!("escape: {detail}"))
                })?;
                self.dir.hard_link(&target, &parent, name)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let file_type = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                if self.owners == Owners::Caller && file_type != FileType::Fifo {
                    return Ok(Made::SkippedDevice);
                }
                let device = rustix::fs::makedev(
                    header.device_major()?.unwrap_or(0),
                    header.device_minor()?.unwrap_or(0),
                );
                rustix::fs::mknodat(&parent, name, file_type, Mode::from_raw_mode(mode), device)?;
                self.own(&parent, name, uid, gid)?;
                rustix::fs::chmodat(&parent, name, Mode::from_raw_mode(mode), AtFlags::empty())?;
                set_times(&parent, name, mtime)?;
            }
            other => {
                return Err(io::Error::other(format!(
                    "tar entry type {other:?} is not a file, directory, link or device"
                )))
            }
        }
        Ok(Made::Entry)
    }

    fn own(&self, parent: &Dir, name: &str, uid: u32, gid: u32) -> io::Result<()> {
        if self.owners == Owners::Caller {
            return Ok(());
        }
        let (uid, gid) = (
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        );
        rustix::fs::chownat(
            parent,
            name,
            Some(uid),
            Some(gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    /// Sets the entry's `SCHILY.xattr.*` attributes where the filesystem and the
    /// caller's rights allow; returns how many were refused.
    fn xattrs<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        parent_path: &Path,
        name: &str,
    ) -> io::Result<u64> {
        let Some(extensions) = entry.pax_extensions()? else {
            return Ok(0);
        };
        let mut attributes = Vec::new();
        for extension in extensions {
            let extension = extension?;
            if let Some(key) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                attributes.push((key.to_vec(), extension.value_bytes().to_vec()));
            }
        }
        if attributes.is_empty() {
            return Ok(0);
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Ok(attributes.len() as u64); // symlinks and devices: not set
        }
        let parent = self.parent(parent_path)?;
        let target = if kind.is_dir() {
            parent.open_dir(name)?.into_std_file()
        } else {
            parent
                .open_with(name, OpenOptions::new().read(true))?
                .into_std()
        };
        let mut refused = 0;
        for (key, value) in attributes {
            let key = std::ffi::OsStr::from_bytes(&key);
            if rustix::fs::fsetxattr(target.as_fd(), key, &value, XattrFlags::empty()).is_err() {
                refused += 1;
            }
        }
        Ok(refused)
    }

    /// Empties `dir` of everything this layer did not write.
    fn opaque(&mut self, dir: &Path, written: &HashSet<PathBuf>) -> io::Result<()> {
        let parent = self.parent_made(dir)?;
        for child in parent.entries()? {
            let child = child?;
            let name = child.file_name();
            if written.contains(&dir.join(&name)) {
                continue;
            }
            if child.file_type()?.is_dir() {
                parent.remove_dir_all(&name)?;
            } else {
                parent.remove_file(&name)?;
            }
        }
        Ok(())
    }

    /// Removes `path` if it is there.
    fn remove(&self, path: &Path) -> io::Result<()> {
        let name = path.file_name().expect("a whiteout names something");
        let parent = match self.parent(path.parent().unwrap_or(Path::new(""))) {
            Ok(parent) => parent,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        match parent.symlink_metadata(name) {
            Ok(meta) if meta.is_dir() => parent.remove_dir_all(name),
            Ok(_) => parent.remove_file(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

enum Made {
    Entry,
    SkippedDevice,
}

/// A tar path as a path relative to the root: a leading `/` and `.` steps dropped; a
/// `..` step refused (no layer a build tool writes has one).
fn clean(path: &str) -> Result<PathBuf, String> {
    let mut clean = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err("a `..` step".to_string()),
        }
    }
    Ok(clean)
}

/// cap-std refuses a step out of the root with `PermissionDenied` ("a path led outside
/// of the filesystem"); anything else is a plain failure.
fn classify(path: &str, source: io::Error) -> EntryError {
    let text = source.to_string();
    if source.kind() == io::ErrorKind::PermissionDenied
        && (text.contains("outside of the filesystem") || text.starts_with("escape: "))
    {
        EntryError::Escape {
            path: path.to_string(),
            detail: text.trim_start_matches("escape: ").to_string(),
        }
    } else {
        EntryError::Failed {
            path: path.to_string(),
            source,
        }
    }
}

fn timestamps(mtime: i64) -> Timestamps {
    let time = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: time,
        last_modification: time,
    }
}

fn set_times(parent: &Dir, name: impl AsRef<Path>, mtime: i64) -> io::Result<()> {
    rustix::fs::utimensat(
        parent,
        name.as_ref(),
        &timestamps(mtime),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}
