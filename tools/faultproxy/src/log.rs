//! The request log: one [`Record`] per request the proxy received, in arrival order.
//!
//! Tests assert on what stowage actually asked for (how many blob GETs, which ranges,
//! how many bytes went over the wire, how many connections), so every request is
//! logged when it arrives and its status and byte count are filled in as the response
//! goes out. The byte count grows while a body streams, so a snapshot taken mid-transfer
//! shows the bytes sent so far.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One request seen by the proxy, with what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The request method, e.g. `GET`.
    pub method: String,
    /// The request path, without the query string.
    pub path: String,
    /// The request's `Range` header as the client sent it (even when `ignore_range`
    /// kept it from the registry).
    pub range: Option<String>,
    /// Whether the request carried an `Authorization` header (its value is never kept).
    pub authorization: bool,
    /// The status sent to the client; 0 while the response head is not known yet.
    pub status: u16,
    /// Response body bytes handed to the client connection so far (a cut response
    /// counts only what went out before the cut).
    pub body_bytes: u64,
    /// Id of the client connection (accept order, from 1), to tell keep-alive reuse
    /// from new connections.
    pub connection: u64,
}

impl Record {
    /// Whether this is a `GET` of a blob (`/v2/<name>/blobs/<algo>:<hex>`).
    pub fn is_blob_get(&self) -> bool {
        self.method == "GET" && is_blob_path(&self.path)
    }
}

/// Whether `path` names a blob: `/v2/<name...>/blobs/<algo>:<hex>`, not an upload
/// (`/blobs/uploads/...`). A query string, if any, must already be stripped.
pub fn is_blob_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return false;
    };
    let Some(at) = rest.rfind("/blobs/") else {
        return false;
    };
    let (name, digest) = (&rest[..at], &rest[at + "/blobs/".len()..]);
    let Some((algo, hex)) = digest.split_once(':') else {
        return false;
    };
    !name.is_empty() && !algo.is_empty() && !hex.is_empty() && !digest.contains('/')
}

/// A log entry whose status and byte count are updated while the response streams.
#[derive(Debug)]
pub(crate) struct Entry {
    method: String,
    path: String,
    range: Option<String>,
    authorization: bool,
    connection: u64,
    status: AtomicU16,
    body_bytes: AtomicU64,
}

impl Entry {
    /// Records the status of the response head sent to the client.
    pub(crate) fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    /// Counts `n` more body bytes handed to the client.
    pub(crate) fn add_bytes(&self, n: u64) {
        self.body_bytes.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Record {
        Record {
            method: self.method.clone(),
            path: self.path.clone(),
            range: self.range.clone(),
            authorization: self.authorization,
            status: self.status.load(Ordering::Relaxed),
            body_bytes: self.body_bytes.load(Ordering::Relaxed),
            connection: self.connection,
        }
    }
}

/// All entries so far, shared by the connection tasks and the [`crate::Proxy`] handle.
#[derive(Debug, Default)]
pub(crate) struct Log {
    entries: Mutex<Vec<Arc<Entry>>>,
}

impl Log {
    /// Appends an entry for a request that just arrived and returns it for updating.
    pub(crate) fn push(
        &self,
        method: &str,
        path: &str,
        range: Option<String>,
        authorization: bool,
        connection: u64,
    ) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            method: method.to_owned(),
            path: path.to_owned(),
            range,
            authorization,
            connection,
            status: AtomicU16::new(0),
            body_bytes: AtomicU64::new(0),
        });
        self.lock().push(Arc::clone(&entry));
        entry
    }

    /// Every record so far, in arrival order.
    pub(crate) fn records(&self) -> Vec<Record> {
        self.lock().iter().map(|e| e.snapshot()).collect()
    }

    /// Forgets every record (responses still streaming keep counting into theirs,
    /// which are no longer listed).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Entry>>> {
        // A panicking test thread must not hide the log from the others.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::is_blob_path;

    #[test]
    fn blob_paths() {
        assert!(is_blob_path("/v2/x/blobs/sha256:abcd"));
        assert!(is_blob_path("/v2/library/busybox/blobs/sha512:00ff"));
        assert!(!is_blob_path("/v2/x/blobs/uploads/"));
        assert!(!is_blob_path("/v2/x/blobs/uploads/0c6d-uuid"));
        assert!(!is_blob_path("/v2/x/manifests/latest"));
        assert!(!is_blob_path("/v2/blobs/sha256:abcd"));
        assert!(!is_blob_path("/v2/"));
        assert!(!is_blob_path("/v3/x/blobs/sha256:abcd"));
        assert!(!is_blob_path("/v2/x/blobs/sha256:"));
    }
}
