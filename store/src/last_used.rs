//! When each ref was last used (pulled, synced, served or loaded), for evicting the
//! least recently used images first. Recorded without touching `index.json`: one small
//! file per ref under `stowage/used/`, named by a hash of the ref and holding its
//! name, whose modification time is the last use. A use is one open and one write of
//! the same bytes (no rename, no fsync: losing the last few records in a crash only
//! makes an image look a little older than it is).

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::digest::sha256_of;
use crate::error::{IoContext, StoreError};
use crate::Store;

impl Store {
    /// Records that the refs `names` were used just now.
    pub fn record_use<S: AsRef<str>>(&self, names: &[S]) -> Result<(), StoreError> {
        if names.is_empty() {
            return Ok(());
        }
        let dir = self.used_dir();
        fs::create_dir_all(&dir).at(&dir)?;
        for name in names {
            let name = name.as_ref();
            let path = dir.join(file_name(name));
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&path)
                .at(&path)?;
            // The same bytes every time: a reader never sees another name, and the
            // write sets the modification time.
            file.write_all_at(name.as_bytes(), 0).at(&path)?;
            file.set_modified(SystemTime::now()).at(&path)?;
        }
        Ok(())
    }

    /// When each ref that has a record was last used.
    pub fn last_used(&self) -> Result<HashMap<String, SystemTime>, StoreError> {
        let dir = self.used_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(e) => return Err(e).at(&dir),
        };
        let mut used = HashMap::new();
        for entry in entries {
            let path = entry.at(&dir)?.path();
            let (Ok(bytes), Ok(meta)) = (fs::read(&path), fs::metadata(&path)) else {
                continue; // removed meanwhile
            };
            let (Ok(name), Ok(when)) = (String::from_utf8(bytes), meta.modified()) else {
                continue;
            };
            if !name.is_empty() {
                used.insert(name, when);
            }
        }
        Ok(used)
    }

    /// Forgets the records of refs no longer in the store.
    pub(crate) fn forget_use(&self, names: &[&str]) {
        let dir = self.used_dir();
        for name in names {
            let _ = fs::remove_file(dir.join(file_name(name)));
        }
    }

    fn used_dir(&self) -> PathBuf {
        self.layout().state_dir().join("used")
    }
}

/// A ref name can hold `/` and `:` and be 1 KiB long: the file is named by its hash.
fn file_name(name: &str) -> String {
    sha256_of(name.as_bytes()).digest()[..32].to_string()
}
