//! Per-connection response pacing: a token bucket per client connection.
//!
//! A CDN caps each connection rather than the client as a whole, which is what makes
//! parallel range requests pay off; one bucket per connection, shared by the
//! responses sent on it one after another, models that. The bucket holds at most one
//! slice's worth of tokens, so an idle connection gets a small head start and no more,
//! and bodies are sent in slices of about 10 ms each so pacing is smooth.

use std::time::{Duration, Instant};

/// Smallest slice a paced body is cut into, so very low rates still send whole packets.
const MIN_SLICE: usize = 4 << 10;
/// Largest slice, so very high rates still pace in steps of bounded size.
const MAX_SLICE: usize = 1 << 20;

/// The most bytes of a body to send in one step at `rate` bytes/second: ~10 ms worth.
pub(crate) fn slice_len(rate: u64) -> usize {
    usize::try_from(rate / 100)
        .unwrap_or(MAX_SLICE)
        .clamp(MIN_SLICE, MAX_SLICE)
}

/// A token bucket that may go into debt: a send larger than the tokens at hand is
/// allowed at once and the caller waits the debt off, which keeps slices whole.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate` bytes/second.
    pub(crate) fn new(rate: u64, now: Instant) -> Self {
        Self {
            tokens: slice_len(rate) as f64,
            last: now,
        }
    }

    /// Takes `n` bytes' worth of tokens at `rate` bytes/second (`rate` > 0) and returns
    /// how long to wait before sending those bytes.
    pub(crate) fn take(&mut self, rate: u64, n: usize, now: Instant) -> Duration {
        let rate = rate as f64;
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let cap = slice_len(rate as u64) as f64;
        self.tokens = (self.tokens + elapsed * rate).min(cap) - n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_to_the_rate_after_the_head_start() {
        let rate = 1_000_000;
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(rate, t0);
        let slice = slice_len(rate);
        assert_eq!(slice, 10_000);
        assert_eq!(bucket.take(rate, slice, t0), Duration::ZERO, "head start");
        // Sending back to back, each later slice waits its own 10 ms.
        let mut now = t0;
        for _ in 0..10 {
            let wait = bucket.take(rate, slice, now);
            assert!((wait.as_secs_f64() - 0.010).abs() < 1e-6, "{wait:?}");
            now += wait;
        }
        // An idle second earns one slice, not a second's worth.
        now += Duration::from_secs(1);
        assert_eq!(bucket.take(rate, slice, now), Duration::ZERO);
        assert!(bucket.take(rate, slice, now) > Duration::ZERO);
    }

    #[test]
    fn slices_are_bounded() {
        assert_eq!(slice_len(1), MIN_SLICE);
        assert_eq!(slice_len(u64::MAX), MAX_SLICE);
    }
}
