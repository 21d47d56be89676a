//! The low-speed limit, as curl's `--speed-limit`/`--speed-time`: a blob response that
//! brings fewer than `bytes_per_second` for `window` on end is given up on. A read
//! timeout alone never fires on a registry that drips one byte a second.

use std::time::Duration;

use tokio::time::Instant;

/// The slowest a blob response may be, judged over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowSpeed {
    /// Bytes per second; 0 turns the limit off.
    pub bytes_per_second: u64,
    pub window: Duration,
}

impl Default for LowSpeed {
    /// 1 KiB/s over 30 s: far below any working link, even one shared by many
    /// downloads, and short enough that a stalled pull says so within a minute.
    fn default() -> Self {
        Self {
            bytes_per_second: 1024,
            window: Duration::from_secs(30),
        }
    }
}

/// One response's progress against the limit.
pub(crate) struct SpeedWindow {
    limit: LowSpeed,
    started: Instant,
    bytes: u64,
}

impl SpeedWindow {
    pub(crate) fn new(limit: LowSpeed) -> Self {
        Self {
            limit,
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// When the current window ends (far off when the limit is off).
    pub(crate) fn deadline(&self) -> Instant {
        let window = if self.limit.bytes_per_second == 0 {
            Duration::from_secs(365 * 24 * 3600)
        } else {
            self.limit.window
        };
        self.started + window
    }

    /// Counts `n` bytes that arrived (0 when the deadline passed with nothing); `Err`
    /// with the window's bytes when a window ended below the limit.
    pub(crate) fn arrived(&mut self, n: u64) -> Result<(), u64> {
        self.bytes += n;
        if Instant::now() < self.deadline() {
            return Ok(());
        }
        let wanted = self.limit.bytes_per_second * self.limit.window.as_secs().max(1);
        if self.bytes < wanted {
            return Err(self.bytes);
        }
        self.started = Instant::now();
        self.bytes = 0;
        Ok(())
    }
}
