//! A big blob starts as one stream, the lead: closed Range requests one after another
//! on one connection, the first one range long and each next one twice the last
//! (200 MB would be five requests). While it runs, the client's blob downloads are timed as
//! a whole: when over a `probe` they brought less than `split_below` a second
//! (registries and CDNs cap each connection, a long round trip slows each one), what
//! the lead has not asked for yet is planned as closed ranges of about `range_size`,
//! in order, and fetched by `ranges_per_blob - 1` more connections; the lead finishes
//! the request it is in and joins them. Nothing is fetched twice: no request is cut
//! short to make room for the ranges (a dropped connection wastes what was in flight).
//! A lead that on its own, over its first two ranges' worth of completed requests,
//! brought `split_below` a second or more shows a link no split would help: it then
//! asks for each hole that is left in one request (on loopback each further request
//! cost the registry 3–5 ms before its first byte; 200 MB is now three requests). Two
//! ranges' worth, not one request, so a short hole left by a resume or a burst at the
//! start of a connection does not decide it.
//!
//! Why not split every big blob from the start: where the link already brings hundreds
//! of MB/s (loopback, a registry on the LAN) the limit is the CPU on both ends, and
//! every extra request costs the registry work. Measured here from a loopback registry:
//! one 200 MB blob in 0.20 s as one stream and 0.29 s as eight ranges of 8 MiB; four of
//! them in 0.71 s as four streams and 0.94 s as ranges. The whole link is judged, not
//! the lead alone, because several streams at once (four blobs, or small blobs beside a
//! big one) each get a share of a fast link and look slow one by one. Where connections
//! are capped, the ranges win by their number (8 × 25 MB/s).

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, TryStreamExt};

use super::blob::{plan, BlobOptions, Job, Outcome};
use super::{Client, RegistryError};

/// What the lead has still to ask for, shared with the task that decides whether to
/// split.
struct Lead {
    state: Mutex<LeadState>,
}

struct LeadState {
    /// The holes (or parts of them) the lead has not requested yet, in order.
    left: VecDeque<Range<u64>>,
    /// The size of its next request.
    step: u64,
    /// Bytes and time of the lead's completed requests, until it proves fast.
    sample: (u64, Duration),
    /// The lead alone proved the link fast: it takes the rest, hole by hole.
    fast: bool,
    /// When the link's speed was last looked at (or the lead started), and how many
    /// bytes the client had received by then.
    last_look: (Instant, u64),
    /// The rest went to the ranges, or the lead has stopped: nothing more to decide.
    settled: bool,
}

/// What a look at the link says.
enum Decision {
    /// Fast, or too little seen: look again later.
    Wait,
    /// Do not split this blob (the lead has stopped, or too little is left for more
    /// connections to help).
    Never,
    /// Split: these holes go to the ranges.
    Split(Vec<Range<u64>>),
}

impl Lead {
    /// A lead for `holes`, its first request `first_step` long; the first look at the
    /// link measures from now, when the client had `received` bytes.
    fn new(holes: Vec<Range<u64>>, first_step: u64, received: u64) -> Self {
        Self {
            state: Mutex::new(LeadState {
                left: holes.into(),
                step: first_step.max(1),
                sample: (0, Duration::ZERO),
                fast: false,
                last_look: (Instant::now(), received),
                settled: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LeadState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lead's next request, or `None` once the rest went to the ranges.
    fn next_request(&self) -> Option<Range<u64>> {
        let mut state = self.lock();
        if state.settled && !state.fast {
            return None;
        }
        let hole = state.left.pop_front()?;
        let step = if state.fast { u64::MAX } else { state.step };
        let end = hole.end.min(hole.start.saturating_add(step));
        if end < hole.end {
            state.left.push_front(end..hole.end);
        }
        state.step = state.step.saturating_mul(2);
        Some(hole.start..end)
    }

    /// A lead request of `bytes` completed in `elapsed`. Once the lead's completed
    /// requests add up to `min_sample` bytes at `below` a second or faster, no split
    /// will be needed: the rest is asked for in one request per hole, and the judge is
    /// done. Returns whether that just happened.
    fn completed(&self, bytes: u64, elapsed: Duration, below: u64, min_sample: u64) -> bool {
        let mut state = self.lock();
        if state.settled {
            return false;
        }
        state.sample.0 += bytes;
        state.sample.1 += elapsed;
        let (bytes, elapsed) = state.sample;
        let rate = bytes as f64 / elapsed.as_secs_f64().max(1e-6);
        if bytes < min_sample || rate < below as f64 {
            return false;
        }
        state.settled = true;
        state.fast = true;
        true
    }

    /// The lead has stopped: a split would have nothing to take.
    fn stop(&self) {
        self.lock().settled = true;
    }

    /// Looks at the link (`received`: the client's count of blob bytes now): splits
    /// when, over at least `probe` since the last look, bytes arrived but fewer than
    /// `below` a second, and the lead has at least `min_rest` bytes not yet requested.
    /// A link that brought nothing (a registry asking to wait) is not split.
    fn judge(&self, received: u64, below: u64, min_rest: u64, probe: Duration) -> Decision {
        let mut state = self.lock();
        if state.settled {
            return Decision::Never;
        }
        let rest: u64 = state.left.iter().map(|r| r.end - r.start).sum();
        if rest == 0 || rest < min_rest {
            return Decision::Never;
        }
        let now = Instant::now();
        let (since, from) = state.last_look;
        let elapsed = now.duration_since(since);
        if elapsed < probe {
            return Decision::Wait;
        }
        state.last_look = (now, received);
        let rate = received.saturating_sub(from) as f64 / elapsed.as_secs_f64().max(1e-6);
        if rate == 0.0 || rate >= below as f64 {
            return Decision::Wait;
        }
        state.settled = true;
        Decision::Split(state.left.drain(..).collect())
    }
}

impl Client {
    /// Fetches the holes of a big blob by a lead stream that is split into ranges when
    /// the link proves slow (see the module docs).
    pub(super) async fn fetch_split(
        &self,
        job: &Job<'_>,
        holes: Vec<Range<u64>>,
        options: &BlobOptions,
    ) -> Result<Vec<Outcome>, RegistryError> {
        let size = job.descriptor.size();
        // The first request is one range long: on a slow link the blob cannot finish
        // before it does, however many ranges take the rest.
        let lead = Lead::new(holes, options.range_size, self.received());
        let queue: Mutex<VecDeque<Range<u64>>> = Mutex::default();
        // Once the registry has shown it ignores Range, the ranges not yet started are
        // not requested at all.
        let ignored = AtomicBool::new(false);
        // Ends the wait for the next look at the link once the lead has stopped.
        let stopped = tokio::sync::Notify::new();
        let (lead, queue, ignored, stopped) = (&lead, &queue, &ignored, &stopped);
        let leading = async move {
            let mut outcomes = Vec::new();
            let result = async {
                while let Some(piece) = lead.next_request() {
                    let started = Instant::now();
                    let len = piece.end - piece.start;
                    let outcome = self.fetch_range(job, piece, true).await?;
                    // Timed from before the request (and its wait for a download
                    // permit): a busy or distant link never looks faster than it is.
                    let fast = matches!(outcome, Outcome::Done)
                        && lead.completed(
                            len,
                            started.elapsed(),
                            options.split_below,
                            2 * options.range_size,
                        );
                    if fast {
                        stopped.notify_one();
                    }
                    let range_ignored = matches!(outcome, Outcome::RangeIgnored);
                    outcomes.push(outcome);
                    if range_ignored {
                        ignored.store(true, Ordering::Relaxed);
                        break;
                    }
                }
                Ok::<_, RegistryError>(())
            }
            .await;
            lead.stop();
            stopped.notify_one();
            result?;
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
                    options.probe,
                );
                let rest = match decision {
                    Decision::Wait => continue,
                    Decision::Never => return Ok(Vec::new()),
                    Decision::Split(rest) => rest,
                };
                tracing::debug!(digest = %job.descriptor.digest(), from = rest[0].start, "the link is slow; splitting");
                queue
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(plan(&rest, size, options));
                let helpers: FuturesUnordered<_> = (1..options.ranges_per_blob)
                    .map(|_| self.work_through(job, queue, ignored))
                    .collect();
                return helpers.try_concat().await;
            }
        };
        // FuturesUnordered polls only the future that was woken; join! would poll the
        // timer and every helper again for each chunk any of them receives.
        let both: FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>>> =
            [Box::pin(leading) as _, Box::pin(helping) as _]
                .into_iter()
                .collect();
        both.try_concat().await
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // lists of holes, one hole long
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_lead_asks_for_doubling_steps_in_order() {
        let lead = Lead::new(vec![0..100 * MIB, (120 * MIB)..(130 * MIB)], 16 * MIB, 0);
        let mut asked = Vec::new();
        while let Some(piece) = lead.next_request() {
            asked.push(piece);
        }
        let mib = |r: &Range<u64>| (r.start / MIB, r.end / MIB);
        let asked: Vec<_> = asked.iter().map(mib).collect();
        assert_eq!(asked, [(0, 16), (16, 48), (48, 100), (120, 130)]);
    }

    #[test]
    fn a_slow_link_hands_what_the_lead_has_not_asked_for_to_the_ranges() {
        let lead = Lead::new(vec![0..100 * MIB], 16 * MIB, 0);
        let look = |received, below| lead.judge(received, below, 16 * MIB, Duration::ZERO);
        assert_eq!(lead.next_request(), Some(0..16 * MIB));
        assert!(
            matches!(look(0, u64::MAX), Decision::Wait),
            "nothing arrived"
        );
        assert!(matches!(look(MIB, 0), Decision::Wait), "fast enough");
        let Decision::Split(rest) = look(2 * MIB, u64::MAX) else {
            panic!("a slow link is split");
        };
        assert_eq!(rest, vec![16 * MIB..100 * MIB]);
        assert_eq!(
            lead.next_request(),
            None,
            "the lead only finishes its request"
        );
        assert!(matches!(look(3 * MIB, u64::MAX), Decision::Never));
    }

    #[test]
    fn a_fast_lead_asks_for_the_rest_at_once_and_is_never_split() {
        let lead = Lead::new(vec![0..100 * MIB, (120 * MIB)..(130 * MIB)], 8 * MIB, 0);
        let ms = Duration::from_millis;
        let done = |bytes, elapsed| lead.completed(bytes, elapsed, 256 * MIB, 16 * MIB);
        assert_eq!(lead.next_request(), Some(0..8 * MIB));
        assert!(!done(8 * MIB, ms(5)), "one short request does not decide");
        assert_eq!(lead.next_request(), Some(8 * MIB..24 * MIB));
        assert!(done(16 * MIB, ms(40)), "24 MiB in 45 ms is fast");
        assert!(matches!(
            lead.judge(MIB, u64::MAX, 16 * MIB, Duration::ZERO),
            Decision::Never
        ));
        assert_eq!(lead.next_request(), Some(24 * MIB..100 * MIB));
        assert_eq!(lead.next_request(), Some(120 * MIB..130 * MIB));
        assert_eq!(lead.next_request(), None);
    }

    #[test]
    fn a_lead_slower_than_the_threshold_stays_open_to_a_split() {
        let lead = Lead::new(vec![0..100 * MIB], 8 * MIB, 0);
        let done =
            |bytes, ms| lead.completed(bytes, Duration::from_millis(ms), 256 * MIB, 16 * MIB);
        lead.next_request();
        assert!(!done(8 * MIB, 1));
        lead.next_request();
        assert!(!done(16 * MIB, 200), "24 MiB in 201 ms is not fast");
        assert!(matches!(
            lead.judge(MIB, u64::MAX, 16 * MIB, Duration::ZERO),
            Decision::Split(_)
        ));
    }

    #[test]
    fn a_lead_that_stopped_or_has_little_left_is_never_split() {
        let stopped = Lead::new(vec![0..100 * MIB], 16 * MIB, 0);
        stopped.stop();
        let look = |lead: &Lead| lead.judge(MIB, u64::MAX, 16 * MIB, Duration::ZERO);
        assert!(matches!(look(&stopped), Decision::Never));
        let nearly_done = Lead::new(vec![0..20 * MIB], 16 * MIB, 0);
        nearly_done.next_request();
        assert!(matches!(look(&nearly_done), Decision::Never));
    }
}
