//! Fetching blobs into the store's ingest: streamed and hashed as they arrive, resumed
//! with closed Range requests after a cut, and, for big blobs on a slow connection,
//! split into byte ranges fetched over parallel connections (one connection is capped
//! by real registries and CDNs; see `split.rs`). A registry that ignores Range gets one
//! plain stream that fills the holes.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, TryStreamExt};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;

use super::low_speed::SpeedWindow;
use super::{Client, RegistryError};
use crate::oci::reference::Reference;
use crate::store::{Committed, Descriptor, Ingest};

/// How blobs are split into ranges.
#[derive(Debug, Clone)]
pub struct BlobOptions {
    /// Blobs at least this big start as one stream that is split into parallel ranges
    /// when the link proves slower than `split_below`.
    pub split_threshold: u64,
    /// Bytes per second. While the client's blob downloads together bring this much,
    /// the link is limited by the CPUs or the network card, not by a per-connection
    /// cap, and more connections would only add work; below it, big blobs are split.
    pub split_below: u64,
    /// How often, while a big blob is one stream, the link's speed is judged.
    pub probe: Duration,
    /// At most this many ranges of one blob in flight.
    pub ranges_per_blob: u64,
    /// Ranges are about this big. They are requested in order, `ranges_per_blob` at a
    /// time, so they also finish roughly in order: the hash, which can only follow the
    /// contiguous prefix, keeps up with the bytes as they arrive instead of reading most
    /// of the blob back after the last range lands.
    pub range_size: u64,
    /// No range is smaller than this.
    pub min_range: u64,
}

impl Default for BlobOptions {
    fn default() -> Self {
        Self {
            split_threshold: 16 << 20,
            split_below: 256 << 20,
            probe: Duration::from_millis(50),
            ranges_per_blob: 8,
            range_size: 8 << 20,
            min_range: 4 << 20,
        }
    }
}

/// Called with the offset and length of each write.
pub type OnBytes<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

/// One blob being fetched: what every request for a piece of it needs.
#[derive(Clone, Copy)]
pub(super) struct Job<'a> {
    reference: &'a Reference,
    pub(super) descriptor: &'a Descriptor,
    ingest: &'a Ingest,
    on_bytes: OnBytes<'a>,
}

/// How one request ended.
pub(super) enum Outcome {
    /// The range is complete.
    Done,
    /// The stream stopped early; this many bytes of the range arrived.
    Cut(u64),
    /// The registry answered a Range request with the whole blob.
    RangeIgnored,
    /// The response ran below the low-speed limit; this many bytes of it arrived.
    TooSlow(u64),
}

impl Client {
    /// Downloads what `ingest` still lacks of `descriptor` and commits it. The digest is
    /// checked over the whole blob before commit; a mismatch stores nothing.
    pub async fn fetch_blob(
        &self,
        reference: &Reference,
        descriptor: &Descriptor,
        ingest: Ingest,
        options: &BlobOptions,
        on_bytes: OnBytes<'_>,
    ) -> Result<Committed, RegistryError> {
        let ingest = Arc::new(ingest);
        let size = descriptor.size();
        let job = Job {
            reference,
            descriptor,
            ingest: &ingest,
            on_bytes,
        };
        let holes = ingest.missing();
        let outcomes = if size >= options.split_threshold && !holes.is_empty() {
            self.fetch_split(&job, holes, options).await?
        } else {
            self.fetch_holes(&job, holes, options).await?
        };
        if outcomes.iter().any(|o| matches!(o, Outcome::RangeIgnored)) {
            tracing::debug!(digest = %descriptor.digest(), "registry ignores Range; one plain stream");
            self.fetch_range(&job, 0..size, false).await?;
        }
        let ingest = Arc::into_inner(ingest).expect("every range task has finished");
        match tokio::task::spawn_blocking(move || ingest.commit()).await {
            Ok(committed) => Ok(committed?),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down (another blob failed the pull): the partial
            // stays on disk for the next pull to resume.
            Err(_) => Err(RegistryError::BadBlob {
                digest: descriptor.digest().clone(),
                detail: "not committed: the pull stopped".into(),
            }),
        }
    }

    /// A small blob's holes, a request each, `ranges_per_blob` at a time; once the
    /// registry has shown it ignores Range, the holes not yet started are not asked for.
    async fn fetch_holes(
        &self,
        job: &Job<'_>,
        holes: Vec<Range<u64>>,
        options: &BlobOptions,
    ) -> Result<Vec<Outcome>, RegistryError> {
        let queue = std::sync::Mutex::new(holes.into());
        let ignored = AtomicBool::new(false);
        let workers: FuturesUnordered<_> = (0..options.ranges_per_blob.max(1))
            .map(|_| self.work_through(job, &queue, &ignored))
            .collect();
        workers.try_concat().await
    }

    /// Fetches each range `queue` hands out until it is empty (or the registry has
    /// shown it ignores Range: then the rest is left to one plain stream).
    pub(super) async fn work_through(
        &self,
        job: &Job<'_>,
        queue: &std::sync::Mutex<std::collections::VecDeque<Range<u64>>>,
        ignored: &AtomicBool,
    ) -> Result<Vec<Outcome>, RegistryError> {
        let mut outcomes = Vec::new();
        loop {
            if ignored.load(Ordering::Relaxed) {
                return Ok(outcomes);
            }
            let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
            let Some(piece) = next else {
                return Ok(outcomes);
            };
            let outcome = self.fetch_range(job, piece, true).await?;
            if matches!(outcome, Outcome::RangeIgnored) {
                ignored.store(true, Ordering::Relaxed);
            }
            outcomes.push(outcome);
        }
    }

    /// Fetches `want` (retrying cuts from where they stopped) into the ingest. With
    /// `ranged` false the body is the whole blob and only the holes are written.
    pub(super) async fn fetch_range(
        &self,
        job: &Job<'_>,
        want: Range<u64>,
        ranged: bool,
    ) -> Result<Outcome, RegistryError> {
        let (descriptor, ingest) = (job.descriptor, job.ingest);
        let mut start = want.start;
        let mut failures = 0;
        loop {
            let missing_before = missing_bytes(ingest);
            let outcome = self.request(job, start..want.end, ranged).await?;
            // Progress is new bytes on disk: a plain stream that always breaks at the
            // same byte brings nothing new and must run out of attempts.
            let progressed = match outcome {
                Outcome::Cut(got) if ranged => got > 0,
                _ => missing_bytes(ingest) < missing_before,
            };
            match outcome {
                Outcome::Cut(got) if progressed => {
                    failures = 0;
                    start += got;
                    if !ranged {
                        // A plain stream restarts from 0 (only holes are written).
                        start = 0;
                    }
                }
                Outcome::TooSlow(got) => {
                    // Slow bytes still count, but not as progress: a registry that
                    // drips runs out of attempts however much it drips.
                    failures += 1;
                    start += if ranged { got } else { 0 };
                    if failures >= self.retry.attempts {
                        let limit = self.low_speed;
                        return Err(RegistryError::BadBlob {
                            digest: descriptor.digest().clone(),
                            detail: format!(
                                "{failures} responses in a row ran below the low-speed limit \
                                 of {} bytes/s over {} s (at byte {start}; see --low-speed-limit)",
                                limit.bytes_per_second,
                                limit.window.as_secs()
                            ),
                        });
                    }
                }
                Outcome::Cut(_) => {
                    failures += 1;
                    if failures >= self.retry.attempts {
                        return Err(RegistryError::BadBlob {
                            digest: descriptor.digest().clone(),
                            detail: format!(
                                "the stream broke {failures} times in a row without progress at byte {start}"
                            ),
                        });
                    }
                    tokio::time::sleep(self.retry.delay(failures, None)).await;
                }
                other => return Ok(other),
            }
            if ranged {
                // After a cut: continue with a Range, never open-ended.
                if start >= want.end {
                    return Ok(Outcome::Done);
                }
            } else if ingest.missing().is_empty() {
                return Ok(Outcome::Done);
            }
            tracing::debug!(digest = %descriptor.digest(), start, "resuming a cut stream");
        }
    }

    /// One GET. Holds one of the process-wide download permits while it streams.
    async fn request(
        &self,
        job: &Job<'_>,
        want: Range<u64>,
        ranged: bool,
    ) -> Result<Outcome, RegistryError> {
        let Job {
            reference,
            descriptor,
            ingest,
            on_bytes,
        } = *job;
        let digest = descriptor.digest();
        let size = descriptor.size();
        let host = reference.api_host();
        let url = format!(
            "{}/v2/{}/blobs/{digest}",
            self.base_url(host).await,
            reference.repository
        );
        let whole = want == (0..size);
        let mut headers = HeaderMap::new();
        if ranged && !whole {
            let value = format!("bytes={}-{}", want.start, want.end - 1);
            headers.insert(RANGE, HeaderValue::from_str(&value).expect("ascii"));
        }
        let _permit = self.downloads().acquire().await.expect("never closed");
        let mut response = self.get(host, &reference.repository, &url, headers).await?;
        let bad = |detail: String| RegistryError::BadBlob {
            digest: digest.clone(),
            detail,
        };
        let mut ranged = ranged;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                let content_range = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !content_range_matches(content_range, &want, size) {
                    return Err(bad(format!(
                        "asked for bytes {}-{}, the registry sent Content-Range {content_range:?}",
                        want.start,
                        want.end - 1
                    )));
                }
            }
            StatusCode::OK if ranged && !whole => return Ok(Outcome::RangeIgnored),
            StatusCode::OK => ranged = false,
            other => {
                return Err(bad(format!(
                    "unexpected HTTP {} to a blob GET",
                    other.as_u16()
                )))
            }
        }
        // Where the body's first byte belongs.
        let mut pos = if ranged { want.start } else { 0 };
        let body_start = pos;
        let end = if ranged { want.end } else { size };
        let mut speed = SpeedWindow::new(self.low_speed);
        loop {
            let chunk = match tokio::time::timeout_at(speed.deadline(), response.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    tracing::debug!(%digest, at = pos, "stream cut: {e}");
                    return Ok(Outcome::Cut(pos - body_start));
                }
                // The window ended with nothing arriving: judged below like any chunk.
                Err(_) => bytes::Bytes::new(),
            };
            let chunk_end = pos + chunk.len() as u64;
            self.count_received(chunk.len() as u64);
            if chunk_end > end {
                if !ranged {
                    // Cut at size + 1: the ingest refuses the extra bytes and names them.
                    ingest.write_at(size, &chunk[..1])?;
                }
                return Err(bad(format!(
                    "the registry sent more than the {} bytes asked for",
                    end - want.start
                )));
            }
            if ranged {
                ingest.write_at(pos, &chunk)?;
                on_bytes(pos, chunk.len() as u64);
            } else {
                for hole in ingest.missing() {
                    let from = hole.start.max(pos);
                    let to = hole.end.min(chunk_end);
                    if from < to {
                        let slice = &chunk[(from - pos) as usize..(to - pos) as usize];
                        ingest.write_at(from, slice)?;
                        on_bytes(from, slice.len() as u64);
                    }
                }
            }
            pos = chunk_end;
            if let Err(bytes) = speed.arrived(chunk.len() as u64) {
                tracing::debug!(%digest, at = pos, bytes, "a window below the low-speed limit");
                return Ok(Outcome::TooSlow(pos - body_start));
            }
        }
        if pos < end {
            return Ok(Outcome::Cut(pos - body_start));
        }
        Ok(Outcome::Done)
    }
}

fn missing_bytes(ingest: &Ingest) -> u64 {
    ingest.missing().iter().map(|r| r.end - r.start).sum()
}

/// Splits the holes of a partial blob into the ranges to request.
pub(super) fn plan(holes: &[Range<u64>], size: u64, options: &BlobOptions) -> Vec<Range<u64>> {
    if size < options.split_threshold {
        return holes.to_vec();
    }
    // A whole number of rounds of `ranges_per_blob` ranges, each about `range_size`
    // (rounded up, so leftover bytes never make a tiny extra request, and no round is
    // left half empty on a slow link).
    let per_round = options.ranges_per_blob.max(1);
    let rounds = size.div_ceil(per_round * options.range_size.max(1)).max(1);
    let piece = size.div_ceil(per_round * rounds).max(options.min_range);
    let mut pieces = Vec::new();
    for hole in holes {
        let mut at = hole.start;
        while at < hole.end {
            let next = (at + piece).min(hole.end);
            pieces.push(at..next);
            at = next;
        }
    }
    pieces
}

/// Whether `Content-Range: bytes a-b/total` is exactly the range asked for.
fn content_range_matches(header: &str, want: &Range<u64>, size: u64) -> bool {
    let Some(rest) = header.strip_prefix("bytes ") else {
        return false;
    };
    let Some((range, total)) = rest.split_once('/') else {
        return false;
    };
    let Some((a, b)) = range.split_once('-') else {
        return false;
    };
    let total_ok = total == "*" || total.parse::<u64>() == Ok(size);
    a.parse::<u64>() == Ok(want.start) && b.parse::<u64>() == Ok(want.end - 1) && total_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn big_blobs_are_split_small_ones_are_not() {
        let options = BlobOptions::default();
        assert_eq!(plan(&[0..1000], 1000, &options), vec![0..1000]);
        // `--split-threshold 0` and an empty blob: nothing to split, no division by 0.
        let always = BlobOptions {
            split_threshold: 0,
            ..BlobOptions::default()
        };
        assert!(plan(&[], 0, &always).is_empty());
        let size = 64 << 20;
        let pieces = plan(&[0..size], size, &options);
        assert_eq!(pieces.len(), 8);
        assert_eq!(pieces.last().unwrap().end, size);
        // A big blob: whole rounds of eight ranges of about range_size, in order.
        let size = 200 << 20;
        let pieces = plan(&[0..size], size, &options);
        assert_eq!(pieces.len(), 32);
        assert!(pieces.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!((pieces[0].start, pieces.last().unwrap().end), (0, size));
        let pieces = plan(&[(10 << 20)..(12 << 20), (40 << 20)..size], size, &options);
        assert_eq!(pieces.first(), Some(&((10 << 20)..(12 << 20))));
        assert_eq!(
            pieces.iter().map(|r| r.end - r.start).sum::<u64>(),
            (2 << 20) + size - (40 << 20)
        );
    }

    #[test]
    fn content_range_must_match_exactly() {
        assert!(content_range_matches("bytes 10-19/100", &(10..20), 100));
        assert!(content_range_matches("bytes 10-19/*", &(10..20), 100));
        assert!(!content_range_matches("bytes 0-19/100", &(10..20), 100));
        assert!(!content_range_matches("bytes 10-19/99", &(10..20), 100));
        assert!(!content_range_matches("", &(10..20), 100));
    }
}
