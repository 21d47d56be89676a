//! A blob from the peers: each in rendezvous order (the owner first) is asked with a
//! plain `GET http://PEER/v2/<repository>/blobs/<digest>?ns=<registry>`, the way
//! containerd asks a mirror, into the same ingest the upstream fetch would use: the
//! store verifies the digest at commit, so no peer's bytes are ever stored unchecked.
//! A peer that lacks the blob (404) is passed over; one that cannot be reached, does
//! not answer within the low-speed window, runs below the low-speed limit or breaks
//! off is passed over and skipped for a cooldown, its bytes kept for the next source
//! to resume after; one whose bytes do not match is named in the log, skipped, and
//! the blob fetched from the next source from scratch.

use std::ops::Range;

use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;

use super::set::Peers;
use crate::oci::reference::Reference;
use crate::pull::PullError;
use crate::registry::{Client, OnBytes, SpeedWindow};
use crate::store::{Descriptor, Ingest, Store, StoreError};

/// The header a node sends with every request to a peer. A peer answering from
/// upstream (`serve --upstream`) must fetch such a request from upstream itself and
/// not ask its own peers: the asker has already taken the rendezvous order into
/// account, and forwarding could go round the fleet.
pub const PEER_REQUEST_HEADER: &str = "x-stowage-peer";

/// The header a node sends with a peer request naming the blob's size, as the
/// manifest it verified gives it: a pull-through peer that served no manifest naming
/// the blob (the asker had its manifests from upstream) can still fetch it, verified
/// by digest and size like any other.
pub const PEER_SIZE_HEADER: &str = "x-stowage-blob-size";

/// Whether a request carries [`PEER_REQUEST_HEADER`]: a pull-through serve fetches
/// such a request's blob from upstream with no peers (`PullOptions::peers` `None`).
pub fn asked_by_a_peer(headers: &reqwest::header::HeaderMap) -> bool {
    headers.contains_key(PEER_REQUEST_HEADER)
}

/// The blob size a peer request names ([`PEER_SIZE_HEADER`]), if it names one.
pub fn peer_blob_size(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get(PEER_SIZE_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How the peers' turn at a blob ended.
pub(crate) enum Peered {
    /// A peer's bytes were verified and stored.
    Stored,
    /// Another process stored the blob meanwhile.
    Present,
    /// No peer could give it: fetch it upstream into this ingest. `tainted` when some
    /// of its bytes came from a peer that broke off, so no commit has checked them
    /// yet: if the upstream's commit then fails to match, they may be why.
    Upstream { ingest: Box<Ingest>, tainted: bool },
}

/// Why one peer did not give the blob.
enum Failure {
    /// 404: the peer does not hold it (and does not pull through).
    Lacks,
    /// Unreachable, too slow, broke off, an error status.
    Unavailable(String),
    /// It answered something other than what was asked (a wrong range, too many
    /// bytes): a peer that cannot be trusted.
    Wrong(String),
    /// Writing into the store failed: no other source would do better.
    Store(StoreError),
}

/// Asks the peers of `order` for `descriptor`'s blob, in turn; see the module docs.
pub(crate) async fn fetch(
    peers: &Peers,
    order: &[String],
    (client, store, reference, descriptor): (&Client, &Store, &Reference, &Descriptor),
    ingest: Ingest,
    on_bytes: OnBytes<'_>,
) -> Result<Peered, PullError> {
    let digest = descriptor.digest();
    let mut ingest = ingest;
    // Peers whose unverified bytes the partial holds.
    let mut contributed: Vec<String> = Vec::new();
    for peer in order.iter().cloned() {
        let before = missing_bytes(&ingest);
        let result = stream(
            peers, client, &peer, reference, descriptor, &ingest, on_bytes,
        )
        .await;
        if missing_bytes(&ingest) < before {
            contributed.push(peer.clone());
        }
        match result {
            Ok(()) => {}
            Err(Failure::Lacks) => {
                tracing::debug!(%digest, peer, "the peer does not hold the blob");
                continue;
            }
            Err(Failure::Unavailable(detail)) => {
                tracing::info!(%digest, peer, "peer unavailable, trying the next source: {detail}");
                peers.cool(&peer).await;
                continue;
            }
            Err(Failure::Wrong(detail)) => {
                tracing::warn!(%digest, peer, "peer skipped: {detail}");
                peers.cool(&peer).await;
                continue;
            }
            Err(Failure::Store(e)) => return Err(e.into()),
        }
        let committed = tokio::task::spawn_blocking(move || ingest.commit())
            .await
            .expect("a commit does not panic");
        match committed {
            Ok(_) => {
                tracing::info!(%digest, peer, "stored from a peer");
                return Ok(Peered::Stored);
            }
            Err(StoreError::Mismatch {
                actual_digest,
                actual_size,
                ..
            }) => {
                let earlier: Vec<&String> = contributed.iter().filter(|p| **p != peer).collect();
                tracing::warn!(
                    peer,
                    expected = %digest,
                    actual = %actual_digest,
                    actual_size,
                    earlier_peers = ?earlier,
                    "peer served bytes that do not match the digest: skipped, the blob \
                     is fetched from the next source"
                );
                for p in std::iter::once(&peer).chain(earlier) {
                    peers.cool(p).await;
                }
            }
            Err(e @ StoreError::TooLong { .. }) => {
                tracing::warn!(peer, expected = %digest, "peer skipped: {e}");
                peers.cool(&peer).await;
            }
            Err(e) => return Err(e.into()),
        }
        // The mismatching partial is gone: start again from the next source.
        contributed.clear();
        match reopen(store, descriptor).await? {
            Some(fresh) => ingest = fresh,
            None => return Ok(Peered::Present),
        }
    }
    Ok(Peered::Upstream {
        ingest: Box::new(ingest),
        tainted: !contributed.is_empty(),
    })
}

/// Opens the blob's ingest again; `None` when it is stored.
pub(crate) async fn reopen(
    store: &Store,
    descriptor: &Descriptor,
) -> Result<Option<Ingest>, PullError> {
    let (store, digest, size) = (
        store.clone(),
        descriptor.digest().clone(),
        descriptor.size(),
    );
    Ok(
        tokio::task::spawn_blocking(move || store.ingest(&digest, size))
            .await
            .expect("opening an ingest does not panic")?,
    )
}

/// Fills the ingest's holes from `peer`, a request each.
async fn stream(
    peers: &Peers,
    client: &Client,
    peer: &str,
    reference: &Reference,
    descriptor: &Descriptor,
    ingest: &Ingest,
    on_bytes: OnBytes<'_>,
) -> Result<(), Failure> {
    for hole in ingest.missing() {
        stream_hole(
            peers, client, peer, reference, descriptor, ingest, hole, on_bytes,
        )
        .await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn stream_hole(
    peers: &Peers,
    client: &Client,
    peer: &str,
    reference: &Reference,
    descriptor: &Descriptor,
    ingest: &Ingest,
    hole: Range<u64>,
    on_bytes: OnBytes<'_>,
) -> Result<(), Failure> {
    let (digest, size) = (descriptor.digest(), descriptor.size());
    let url = format!(
        "http://{peer}/v2/{}/blobs/{digest}?ns={}",
        reference.repository, reference.registry
    );
    let whole = hole == (0..size);
    let mut request = peers
        .http
        .get(&url)
        .header(PEER_REQUEST_HEADER, "1")
        .header(PEER_SIZE_HEADER, size);
    if !whole {
        request = request.header(RANGE, format!("bytes={}-{}", hole.start, hole.end - 1));
    }
    let _permit = client.downloads().acquire().await.expect("never closed");
    let limit = client.low_speed();
    let mut speed = SpeedWindow::new(limit);
    let mut response = match tokio::time::timeout_at(speed.deadline(), request.send()).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return Err(Failure::Unavailable(e.without_url().to_string())),
        Err(_) => {
            return Err(Failure::Unavailable(format!(
                "no answer within {} s",
                limit.window.as_secs()
            )))
        }
    };
    // Where the body starts in the blob.
    let body_start = match response.status() {
        StatusCode::OK => 0,
        StatusCode::PARTIAL_CONTENT => {
            let expected = format!("bytes {}-{}/{size}", hole.start, hole.end - 1);
            let found = response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if found != expected {
                return Err(Failure::Wrong(format!(
                    "asked for {expected}, it sent Content-Range {found:?}"
                )));
            }
            hole.start
        }
        StatusCode::NOT_FOUND => return Err(Failure::Lacks),
        other => return Err(Failure::Unavailable(format!("HTTP {}", other.as_u16()))),
    };
    let mut pos = body_start;
    loop {
        let chunk = match tokio::time::timeout_at(speed.deadline(), response.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                return Err(Failure::Unavailable(format!(
                    "broke off at byte {pos}: {}",
                    e.without_url()
                )))
            }
            Err(_) => bytes::Bytes::new(),
        };
        let chunk_end = pos + chunk.len() as u64;
        if chunk_end > size {
            return Err(Failure::Wrong(format!(
                "it sent more than the blob's {size} bytes"
            )));
        }
        let (from, to) = (hole.start.max(pos), hole.end.min(chunk_end));
        if from < to {
            let slice = &chunk[(from - pos) as usize..(to - pos) as usize];
            ingest.write_at(from, slice).map_err(Failure::Store)?;
            on_bytes(from, slice.len() as u64);
        }
        pos = chunk_end;
        if pos >= hole.end {
            return Ok(());
        }
        if let Err(bytes) = speed.arrived(chunk.len() as u64) {
            return Err(Failure::Unavailable(format!(
                "{bytes} bytes in {} s, below the low-speed limit of {} bytes/s",
                limit.window.as_secs(),
                limit.bytes_per_second
            )));
        }
    }
    Err(Failure::Unavailable(format!(
        "the body ended at byte {pos} of {}",
        hole.end
    )))
}

fn missing_bytes(ingest: &Ingest) -> u64 {
    ingest.missing().iter().map(|r| r.end - r.start).sum()
}
