//! A big blob starts as one stream, the lead, asking for the whole blob as a closed
//! Range. While it runs, the client's blob downloads are timed as a whole: when over
//! the last `probe` they brought less than `split_below` a second (registries and
//! CDNs cap each connection, a long round trip slows each one), the lead is told to
//! stop a little past where it is, and the rest of the blob is fetched as closed
//! ranges of about `range_size`, in order, `ranges_per_blob` connections in all (the
//! lead joins them when it stops).
//!
//! Why not split every big blob from the start: where the link already brings hundreds
//! of MB/s (loopback, a registry on the LAN) the limit is the CPU on both ends, and
//! every extra request costs the registry work. Measured here from a loopback registry:
//! one 200 MB blob in 0.20 s as one stream and 0.29 s as eight ranges of 8 MiB; four of
//! them in 0.70 s as four streams and 0.88 s when some were split. The whole link is
//! judged, not the lead alone, because several streams at once (four blobs, or small
//! blobs beside a big one) each get a share of a fast link and look slow one by one.
//! Where connections are capped, the ranges win by their number (8 × 25 MB/s).

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use futures_util::stream::{FuturesUnordered, TryStreamExt};

use super::blob::{plan, BlobOptions, Job, Outcome};
use super::{Client, RegistryError};

/// The lead stream's progress, shared with the task that decides whether to split.
pub(super) struct Lead {
    state: Mutex<LeadState>,
}

struct LeadState {
    /// Where the lead has claimed bytes up to.
    pos: u64,
    /// Where it must stop: the end of its hole, or where the split ranges begin.
    stop_at: u64,
    /// When the last look at the link's speed (or the lead's first byte) was, and how
    /// many bytes the client had received by then.
    last_look: Option<(Instant, u64)>,
    /// False once the registry answered the lead's Range with the whole blob.
    splittable: bool,
    /// It has stopped.
    done: bool,
}

/// What the timing of the lead says.
enum Decision {
    /// Not enough seen yet, or fast so far: look again later.
    Wait,
    /// Do not split this blob (the lead finished, the registry ignores Range, or too
    /// little is left for more connections to help).
    Never,
    /// Split: the lead stops here and ranges take the rest.
    At(u64),
}

impl Lead {
    fn new(hole: &Range<u64>) -> Self {
        Self {
            state: Mutex::new(LeadState {
                pos: hole.start,
                stop_at: hole.end,
                last_look: None,
                splittable: true,
                done: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LeadState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the bytes from `pos` to `end` for the lead's next write; returns how far
    /// it may write (less than `end` once it has reached the split).
    /// `received` is the client's count of blob bytes, to start the first look from.
    pub(super) fn claim(&self, pos: u64, end: u64, received: u64) -> u64 {
        let mut state = self.lock();
        if state.last_look.is_none() {
            state.last_look = Some((Instant::now(), received));
        }
        let limit = end.min(state.stop_at).max(pos);
        state.pos = limit;
        limit
    }

    /// Where the lead stops.
    pub(super) fn stop_at(&self) -> u64 {
        self.lock().stop_at
    }

    /// The registry ignores Range: one stream it stays.
    pub(super) fn refuse_split(&self) {
        self.lock().splittable = false;
    }

    fn finish(&self) {
        self.lock().done = true;
    }

    /// Judges the link: split when, since the last look and over at least `probe`, the
    /// client received (`received` is its count now) less than `below` bytes a second
    /// and the lead has at least `min_rest` bytes to go; it stops `margin` bytes past
    /// where it is.
    fn judge(
        &self,
        received: u64,
        below: u64,
        min_rest: u64,
        margin: u64,
        probe: std::time::Duration,
    ) -> Decision {
        let mut state = self.lock();
        if state.done || !state.splittable {
            return Decision::Never;
        }
        let rest = state.stop_at - state.pos;
        if rest < min_rest {
            return Decision::Never;
        }
        let Some((since, from)) = state.last_look else {
            return Decision::Wait;
        };
        let elapsed = since.elapsed();
        if elapsed < probe {
            return Decision::Wait;
        }
        state.last_look = Some((Instant::now(), received));
        let rate = received.saturating_sub(from) as f64 / elapsed.as_secs_f64();
        if rate >= below as f64 {
            return Decision::Wait;
        }
        let at = state.pos + margin;
        state.stop_at = at;
        Decision::At(at)
    }
}

impl Client {
    /// Fetches the holes of a big blob: the first by a lead stream that is split into
    /// ranges when it proves slow (see the module docs), the others after it.
    pub(super) async fn fetch_split(
        &self,
        job: &Job<'_>,
        holes: Vec<Range<u64>>,
        options: &BlobOptions,
    ) -> Result<Vec<Outcome>, RegistryError> {
        let size = job.descriptor.size();
        let lead_hole = holes[0].clone();
        let lead = Lead::new(&lead_hole);
        let queue: Mutex<VecDeque<Range<u64>>> = Mutex::new(holes[1..].iter().cloned().collect());
        // Once the registry has shown it ignores Range, the ranges not yet started are
        // not requested at all.
        let ignored = AtomicBool::new(false);
        // Ends the wait for the next look at the lead once it has stopped.
        let stopped = tokio::sync::Notify::new();
        let (lead, queue, ignored, stopped) = (&lead, &queue, &ignored, &stopped);
        let lead_end = lead_hole.end;
        let leading = async move {
            let first = self.fetch_range(job, lead_hole, true, Some(lead)).await;
            lead.finish();
            stopped.notify_one();
            let mut outcomes = vec![first?];
            outcomes.extend(self.work_through(job, queue, ignored).await?);
            Ok::<_, RegistryError>(outcomes)
        };
        let helping = async move {
            if options.ranges_per_blob < 2 {
                return Ok(Vec::new());
            }
            loop {
                tokio::select! {
                    () = tokio::time::sleep(options.probe) => {}
                    () = stopped.notified() => return Ok(Vec::new()),
                }
                let decision = lead.judge(
                    self.received(),
                    options.split_below,
                    2 * options.range_size,
                    options.range_size,
                    options.probe,
                );
                let at = match decision {
                    Decision::Wait => continue,
                    Decision::Never => return Ok(Vec::new()),
                    Decision::At(at) => at,
                };
                tracing::debug!(digest = %job.descriptor.digest(), at, "one stream is slow; splitting");
                {
                    let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
                    let rest: Vec<Range<u64>> = std::iter::once(at..lead_end)
                        .chain(queue.drain(..))
                        .collect();
                    queue.extend(plan(&rest, size, options));
                }
                let helpers = options.ranges_per_blob - 1;
                let helpers: FuturesUnordered<_> = (0..helpers)
                    .map(|_| self.work_through(job, queue, ignored))
                    .collect();
                return helpers.try_concat().await;
            }
        };
        // FuturesUnordered, not join!: it polls only the future that was woken, where
        // join! would poll the timer (and every helper) for each chunk of the lead.
        let both: FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>>> =
            [Box::pin(leading) as _, Box::pin(helping) as _]
                .into_iter()
                .collect();
        both.try_concat().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_slow_lead_stops_one_margin_past_where_it_is_and_never_overlaps_the_ranges() {
        let lead = Lead::new(&(0..100 * MIB));
        let judge = |below| lead.judge(MIB, below, 16 * MIB, 8 * MIB, Duration::ZERO);
        assert!(matches!(judge(u64::MAX), Decision::Wait), "no byte yet");
        assert_eq!(lead.claim(0, MIB, 0), MIB);
        assert!(matches!(judge(0), Decision::Wait), "fast enough");
        let Decision::At(at) = judge(u64::MAX) else {
            panic!("a slow link is split");
        };
        assert_eq!((at, lead.stop_at()), (9 * MIB, 9 * MIB));
        // The lead writes up to the split and no further, however much it receives.
        assert_eq!(lead.claim(MIB, 5 * MIB, MIB), 5 * MIB);
        assert_eq!(lead.claim(5 * MIB, 20 * MIB, MIB), 9 * MIB);
        assert_eq!(lead.claim(9 * MIB, 10 * MIB, MIB), 9 * MIB);
        assert!(
            matches!(judge(u64::MAX), Decision::Never),
            "nothing left to split"
        );
    }

    #[test]
    fn a_lead_the_registry_answered_whole_or_that_finished_is_never_split() {
        let whole = Lead::new(&(0..100 * MIB));
        whole.claim(0, MIB, 0);
        whole.refuse_split();
        let judge = |lead: &Lead| lead.judge(MIB, u64::MAX, 0, MIB, Duration::ZERO);
        assert!(matches!(judge(&whole), Decision::Never));
        let done = Lead::new(&(0..100 * MIB));
        done.claim(0, MIB, 0);
        done.finish();
        assert!(matches!(judge(&done), Decision::Never));
    }
}
