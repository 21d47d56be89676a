//! The response body sent to the client: the registry's body streamed through,
//! counted, paced, and possibly corrupted or cut.
//!
//! Chunks are passed on as the `Bytes` hyper read them (no copy), split only to pace
//! or to stop exactly at a cut; the only per-chunk work is a range check for the
//! corruption offset and a token-bucket update, so the proxy keeps up with loopback.
//! Memory stays flat: a chunk is only pulled from the registry when hyper asks for
//! the next one, i.e. once the client connection has room for it.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::log::Entry;
use crate::pacing::{slice_len, TokenBucket};

/// The error type of proxied bodies.
pub(crate) type BoxError = Box<dyn Error + Send + Sync>;

/// How long a cut waits after the last allowed byte before aborting the connection.
/// hyper drops whatever it still has buffered when a body fails, so this gives it
/// time to flush those bytes to the socket: the client then really receives exactly
/// `cut_blob_after` bytes, as the log says.
const CUT_GRACE: Duration = Duration::from_millis(50);

/// The error that aborts a cut response (and with it the client connection).
#[derive(Debug)]
struct InjectedCut;

impl fmt::Display for InjectedCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("faultproxy: response cut on purpose")
    }
}

impl Error for InjectedCut {}

/// The shared pacing state of one client connection.
pub(crate) type Pacer = Arc<Mutex<Option<TokenBucket>>>;

/// Where a body's bytes come from.
enum Source {
    /// The registry's response.
    Upstream(Incoming),
    /// A response the proxy made up (errors), sent whole.
    Fixed(Option<Bytes>),
}

/// What to do to a body, decided when its response head is seen.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Abort after this many body bytes.
    pub(crate) cut_after: Option<u64>,
    /// Flip the low bit of the body byte at this offset.
    pub(crate) corrupt_at: Option<u64>,
    /// Pace at this many bytes/second with the connection's bucket.
    pub(crate) rate: Option<(u64, Pacer)>,
}

/// A streaming response body that counts what it hands to hyper into its log entry.
pub(crate) struct ProxyBody {
    source: Source,
    entry: Arc<Entry>,
    plan: Plan,
    /// Bytes pulled from the source but not yet handed on.
    pending: Bytes,
    /// A piece paid for and waiting out its pacing delay.
    ready: Option<Bytes>,
    /// The pacing delay, or the cut's grace period.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Set once the cut has started: the next wake-up fails the body.
    cutting: bool,
    /// Body bytes handed on so far.
    sent: u64,
}

impl ProxyBody {
    /// Streams the registry's `body` through `plan`, counting into `entry`.
    pub(crate) fn upstream(body: Incoming, entry: Arc<Entry>, plan: Plan) -> Self {
        Self::new(Source::Upstream(body), entry, plan)
    }

    /// Sends `bytes` (made up by the proxy) paced by `plan`, counting into `entry`.
    pub(crate) fn fixed(bytes: Bytes, entry: Arc<Entry>, plan: Plan) -> Self {
        Self::new(Source::Fixed(Some(bytes)), entry, plan)
    }

    fn new(source: Source, entry: Arc<Entry>, plan: Plan) -> Self {
        Self {
            source,
            entry,
            plan,
            pending: Bytes::new(),
            ready: None,
            sleep: None,
            cutting: false,
            sent: 0,
        }
    }

    /// Hands `piece` on, counting it.
    fn emit(&mut self, piece: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let n = piece.len() as u64;
        self.sent += n;
        self.entry.add_bytes(n);
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    /// Pulls the next frame from the source: data goes into `pending`.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<Filled> {
        let frame = match &mut self.source {
            Source::Fixed(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
            Source::Upstream(body) => {
                ready!(Pin::new(body).poll_frame(cx)).map(|r| r.map_err(BoxError::from))
            }
        };
        Poll::Ready(match frame {
            None => Filled::End,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    self.pending = data;
                    Filled::Data
                }
                Err(trailers) => Filled::PassOn(Ok(trailers)),
            },
            Some(Err(e)) => Filled::PassOn(Err(e)),
        })
    }
}

/// What [`ProxyBody::fill`] got from the source.
enum Filled {
    /// Data, now in `pending` (possibly empty).
    Data,
    /// The end of the body.
    End,
    /// Trailers or an error, to pass on as they are.
    PassOn(Result<Frame<Bytes>, BoxError>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = &mut this.sleep {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
                if this.cutting {
                    return Poll::Ready(Some(Err(Box::new(InjectedCut))));
                }
            }
            if let Some(piece) = this.ready.take() {
                return this.emit(piece);
            }
            if this.pending.is_empty() {
                match ready!(this.fill(cx)) {
                    Filled::End => return Poll::Ready(None),
                    Filled::PassOn(frame) => return Poll::Ready(Some(frame)),
                    Filled::Data if this.pending.is_empty() => continue,
                    Filled::Data => {}
                }
            }
            // There are bytes to send: cut here if this is the place.
            let mut n = this.pending.len();
            if let Some(after) = this.plan.cut_after {
                let allowed = after.saturating_sub(this.sent);
                if allowed == 0 {
                    this.cutting = true;
                    this.sleep = Some(Box::pin(tokio::time::sleep(CUT_GRACE)));
                    continue;
                }
                n = n.min(usize::try_from(allowed).unwrap_or(usize::MAX));
            }
            if let Some((rate, _)) = &this.plan.rate {
                n = n.min(slice_len(*rate));
            }
            let mut piece = this.pending.split_to(n);
            if let Some(at) = this.plan.corrupt_at {
                if let Some(i) = at.checked_sub(this.sent).filter(|&i| i < n as u64) {
                    let mut copy = BytesMut::from(&piece[..]);
                    copy[i as usize] ^= 0x01;
                    piece = copy.freeze();
                }
            }
            if let Some((rate, pacer)) = &this.plan.rate {
                let now = Instant::now();
                let mut bucket = pacer.lock().unwrap_or_else(|p| p.into_inner());
                let wait = bucket
                    .get_or_insert_with(|| TokenBucket::new(*rate, now))
                    .take(*rate, n, now);
                drop(bucket);
                if !wait.is_zero() {
                    this.ready = Some(piece);
                    this.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                    continue;
                }
            }
            return this.emit(piece);
        }
    }

    fn is_end_stream(&self) -> bool {
        let source_done = match &self.source {
            Source::Fixed(bytes) => bytes.is_none(),
            Source::Upstream(body) => body.is_end_stream(),
        };
        source_done && self.pending.is_empty() && self.ready.is_none() && !self.cutting
    }

    fn size_hint(&self) -> SizeHint {
        let buffered = (self.pending.len() + self.ready.as_ref().map_or(0, Bytes::len)) as u64;
        let mut hint = match &self.source {
            Source::Fixed(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Source::Upstream(body) => body.size_hint(),
        };
        // Raise the upper bound first: `set_lower` asserts lower <= upper.
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + buffered);
        }
        hint.set_lower(hint.lower() + buffered);
        hint
    }
}
