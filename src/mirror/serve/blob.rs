//! `GET`/`HEAD /v2/<name>/blobs/<digest>`: a stored blob streamed from disk, whole or
//! one byte range.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{
    HeaderMap, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, RANGE,
};
use hyper::{Response, StatusCode};
use rustix::io::ReadWriteFlags;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::naming::Located;
use super::response::{response, ApiError, BlobStream, Body, ErrorCode};
use super::State;
use crate::store::{parse_digest, Digest, Hasher};

/// Bytes read from disk at a time: small, since a response holds a few of them
/// however slowly its client reads. Cached chunks are read without leaving the
/// runtime (see [`read_chunk`]), so small chunks cost no thread hand-offs.
const CHUNK: usize = 64 * 1024;

/// Chunks read ahead of the client. A chunk is read only once there is room for it,
/// so a response whose client stopped reading holds these and what hyper queues for
/// the socket (its 64 KiB write buffer and one chunk beyond it): 256 KiB.
const READ_AHEAD: usize = 2;

/// Answers a blob request. Any stored blob is served under any served repository name.
/// With [`ServeOptions::verify_blobs`](super::ServeOptions), a whole blob is hashed
/// while it streams and the response is cut short, never completed, if the bytes on
/// disk no longer match the digest; a range is never checked.
///
/// Pulling through, a blob the store lacks that a served manifest named is fetched
/// from upstream and streamed whole as it arrives (a `Range` is ignored: 200), with
/// its `Content-Length`, and ends in an error if it fails verification (`tap`).
pub(super) async fn blob(
    state: &State,
    located: &Located,
    digest: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let digest = parse_digest(digest).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::DigestInvalid,
            e.to_string(),
        )
    })?;
    let slot = Arc::clone(&state.open_blobs)
        .acquire_owned()
        .await
        .map_err(ApiError::internal)?;
    if let Some(through) = &state.through {
        let from_peer = crate::pull::peers::asked_by_a_peer(headers);
        let source = through
            .known(&digest)
            .or_else(|| through.asked_by_peer(located, &digest, headers));
        if let Some((repository, descriptor)) = source {
            if !state.store.has(&digest) {
                let size = descriptor.size();
                let builder = response(StatusCode::OK)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header("Docker-Content-Digest", digest.to_string())
                    .header(ETAG, format!("\"{digest}\""))
                    .header(CONTENT_LENGTH, size);
                let body = if head || size == 0 {
                    Body::Empty
                } else {
                    through.blob_body(repository, descriptor, slot, from_peer)
                };
                return builder.body(body).map_err(ApiError::internal);
            }
        }
    }
    let (file, size) = {
        let (state, located, digest) = (state.clone(), located.clone(), digest.clone());
        tokio::task::spawn_blocking(move || open(&state, &located, &digest))
            .await
            .map_err(ApiError::internal)??
    };
    let range = headers
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(Range::Whole, |v| Range::parse(v, size));
    let builder = response(StatusCode::OK)
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(ACCEPT_RANGES, "bytes")
        .header("Docker-Content-Digest", digest.to_string())
        .header(ETAG, format!("\"{digest}\""));
    let (builder, start, len) = match range {
        Range::Whole => (builder, 0, size),
        Range::Bytes { start, end } => (
            builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(CONTENT_RANGE, format!("bytes {start}-{end}/{size}")),
            start,
            end + 1 - start,
        ),
        Range::Unsatisfiable => {
            return builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(CONTENT_RANGE, format!("bytes */{size}"))
                .header(CONTENT_LENGTH, 0)
                .body(Body::Empty)
                .map_err(ApiError::internal);
        }
    };
    let body = if head || len == 0 {
        Body::Empty
    } else {
        let verify = (state.options.verify_blobs && len == size).then_some(digest);
        stream(file, slot, start, len, verify)
    };
    builder
        .header(CONTENT_LENGTH, len)
        .body(body)
        .map_err(ApiError::internal)
}

/// Checks the repository is served and opens the blob (blocking).
/// Pulling through, blobs are served under any name: an image fetched through has
/// no ref until it is whole.
fn open(state: &State, located: &Located, digest: &Digest) -> Result<(File, u64), ApiError> {
    let name = located.repository.as_str();
    let catalog = state.catalog.get().map_err(ApiError::internal)?;
    if state.through.is_none()
        && catalog
            .repository_in(name, located.registry.as_deref())
            .is_none()
    {
        return Err(ApiError::name_unknown(name));
    }
    let path = state.store.blob_path(digest);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::BlobUnknown,
                format!("blob {digest} is not in this store"),
            ))
        }
        Err(e) => return Err(ApiError::internal(format!("{}: {e}", path.display()))),
    };
    let size = file
        .metadata()
        .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?
        .len();
    Ok((file, size))
}

/// What a `Range` header asks of a blob of known size.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// No range, or one this server ignores (several ranges, other units, bad syntax):
    /// the whole blob, as RFC 9110 allows.
    Whole,
    /// Bytes `start..=end`, clamped to the blob.
    Bytes { start: u64, end: u64 },
    /// A range that starts past the end (416).
    Unsatisfiable,
}

impl Range {
    /// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n`.
    fn parse(header: &str, size: u64) -> Self {
        let Some(spec) = header.trim().strip_prefix("bytes=") else {
            return Self::Whole;
        };
        if spec.contains(',') {
            return Self::Whole;
        }
        let Some((first, last)) = spec.trim().split_once('-') else {
            return Self::Whole;
        };
        let number = |s: &str| s.trim().parse::<u64>().ok();
        match (first.trim().is_empty(), last.trim().is_empty()) {
            // bytes=-n: the last n bytes.
            (true, false) => match number(last) {
                Some(0) => Self::Unsatisfiable,
                Some(n) if size > 0 => Self::Bytes {
                    start: size.saturating_sub(n),
                    end: size - 1,
                },
                Some(_) => Self::Unsatisfiable,
                None => Self::Whole,
            },
            (false, _) => {
                let Some(start) = number(first) else {
                    return Self::Whole;
                };
                let end = if last.trim().is_empty() {
                    u64::MAX
                } else {
                    match number(last) {
                        Some(end) if end >= start => end,
                        _ => return Self::Whole,
                    }
                };
                if start >= size {
                    Self::Unsatisfiable
                } else {
                    Self::Bytes {
                        start,
                        end: end.min(size - 1),
                    }
                }
            }
            (true, true) => Self::Whole,
        }
    }
}

/// A body fed by a task that reads `len` bytes from `start` a chunk at a time
/// ([`read_chunk`]), at most [`READ_AHEAD`] chunks ahead of the client, holding `slot`
/// among the open blobs until the file is closed. With `verify`, the bytes are hashed
/// on the way and the last chunk is withheld (the response fails) if they do not
/// match.
fn stream(
    file: File,
    slot: OwnedSemaphorePermit,
    start: u64,
    len: u64,
    verify: Option<Digest>,
) -> Body {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    tokio::spawn(async move {
        pump(file, start, len, verify, tx).await;
        drop(slot); // the file is closed: another response may open one
    });
    Body::Stream(BlobStream {
        chunks: rx,
        remaining: len,
    })
}

async fn pump(
    file: File,
    start: u64,
    len: u64,
    verify: Option<Digest>,
    tx: mpsc::Sender<io::Result<Bytes>>,
) {
    let file = Arc::new(file);
    let end = start + len;
    let mut hasher = match &verify {
        Some(digest) => Hasher::new(digest).ok(),
        None => None,
    };
    let mut offset = start;
    while offset < end {
        // Room in the channel first, then the read: never a chunk waiting in hand.
        let Ok(slot) = tx.reserve().await else {
            return; // the client went away
        };
        let n = (end - offset).min(CHUNK as u64) as usize;
        let last = offset + n as u64 == end;
        // Hashing takes a while (a core per 2 GB/s): on the blocking pool, with the read.
        let read = match hasher.take() {
            None => read_chunk(&file, offset, n).await,
            Some(mut h) => {
                let file = Arc::clone(&file);
                tokio::task::spawn_blocking(move || {
                    let buf = read_at(&file, offset, vec![0; n], 0)?;
                    h.update(&buf);
                    Ok((buf, h))
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)))
                .map(|(buf, h)| {
                    hasher = Some(h);
                    buf
                })
            }
        };
        let chunk = match read {
            Ok(buf) => Bytes::from(buf),
            Err(e) => {
                tracing::warn!("serve: reading a blob at byte {offset}: {e}");
                slot.send(Err(e));
                return;
            }
        };
        if last {
            if let (Some(hasher), Some(expected)) = (hasher.take(), verify.as_ref()) {
                let actual = hasher.finish();
                if actual != *expected {
                    let message = format!(
                        "stored blob {expected} is corrupt: it hashes to {actual} \
                         (run `stowage verify`)"
                    );
                    tracing::error!("serve: {message}");
                    slot.send(Err(io::Error::new(io::ErrorKind::InvalidData, message)));
                    return;
                }
            }
        }
        slot.send(Ok(chunk));
        offset += n as u64;
    }
}

/// Reads `n` bytes at `offset`: straight from the page cache when they are all there
/// (`preadv2` with `RWF_NOWAIT`), else on the blocking pool. A cached blob so costs
/// no hand-off to another thread per chunk, and a cold one never blocks the runtime.
async fn read_chunk(file: &Arc<File>, offset: u64, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; n];
    let mut cached = 0;
    while cached < n {
        let mut slice = [io::IoSliceMut::new(&mut buf[cached..])];
        let at = offset + cached as u64;
        match rustix::io::preadv2(&**file, &mut slice, at, ReadWriteFlags::NOWAIT) {
            Ok(read) if read > 0 => cached += read,
            // Not cached (EAGAIN), not supported, or the end: the blocking read tells.
            _ => break,
        }
    }
    if cached == n {
        return Ok(buf);
    }
    let file = Arc::clone(file);
    tokio::task::spawn_blocking(move || read_at(&file, offset, buf, cached))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// Fills `buf` from `filled` on with the bytes at `offset + filled` (blocking).
fn read_at(file: &File, offset: u64, mut buf: Vec<u8>, filled: usize) -> io::Result<Vec<u8>> {
    let end = offset + buf.len() as u64;
    file.read_exact_at(&mut buf[filled..], offset + filled as u64)
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the blob ends before byte {end}"),
            ),
            _ => e,
        })?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::Range;

    #[test]
    fn ranges() {
        let bytes = |start, end| Range::Bytes { start, end };
        assert_eq!(Range::parse("bytes=100-199", 1000), bytes(100, 199));
        assert_eq!(Range::parse("bytes=100-", 1000), bytes(100, 999));
        assert_eq!(Range::parse("bytes=900-5000", 1000), bytes(900, 999));
        assert_eq!(Range::parse("bytes=-10", 1000), bytes(990, 999));
        assert_eq!(Range::parse("bytes=-5000", 1000), bytes(0, 999));
        assert_eq!(Range::parse("bytes=1000-", 1000), Range::Unsatisfiable);
        assert_eq!(Range::parse("bytes=0-0", 0), Range::Unsatisfiable);
        assert_eq!(Range::parse("bytes=-0", 1000), Range::Unsatisfiable);
        assert_eq!(Range::parse("bytes=5-1", 1000), Range::Whole);
        assert_eq!(Range::parse("bytes=0-1,5-6", 1000), Range::Whole);
        assert_eq!(Range::parse("items=0-1", 1000), Range::Whole);
        assert_eq!(Range::parse("bytes=x-1", 1000), Range::Whole);
    }
}
