//! What to break, and the counters that make "the first N times" faults run out.
//!
//! [`Faults`] is the plain description tests build; [`FaultState`] is the proxy's
//! live copy of it plus how many cuts, 429s and corruptions are still to be dealt
//! out. Counters are consumed when a request (or, for cuts and corruption, a response
//! head) is seen, so concurrent range requests each get a fault or not, atomically.

use std::time::Duration;

/// The faults to inject. `Faults::default()` is a faithful, unpaced proxy.
///
/// Blob faults apply to `GET /v2/<name>/blobs/<digest>` only; `delay` and `rate`
/// apply to every request.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Abort the client connection after this many body bytes of a blob GET
    /// response (one longer than that, answered 200 or 206)...
    pub cut_blob_after: Option<u64>,
    /// ...for this many responses in all (0 with `cut_blob_after` set means 1).
    pub cuts: u32,
    /// Flip the low bit of the blob byte at this absolute offset in the blob: for a
    /// 206 the offset is taken relative to the start of its `Content-Range`.
    pub corrupt_blob_at: Option<u64>,
    /// How many responses covering `corrupt_blob_at` to corrupt; 0 means every one
    /// (a persistently corrupt registry), N means only the first N (so a retry heals).
    pub corruptions: u32,
    /// Drop `Range` (and `If-Range`) before forwarding, so the registry answers 200
    /// with the whole blob, as a server without range support would.
    pub ignore_range: bool,
    /// Answer this many blob GETs with 429 Too Many Requests before letting any through.
    pub too_many_requests: u32,
    /// The `Retry-After` (seconds) sent with those 429s; none when `None`.
    pub retry_after: Option<u64>,
    /// Answer every blob GET with 503 and a distribution-spec JSON error body.
    pub always_503: bool,
    /// Answer every blob GET with `307 Temporary Redirect` to the same path and query
    /// under this base URL (e.g. `http://127.0.0.1:PORT`), as registries send blob
    /// GETs on to a storage host.
    pub redirect_blobs_to: Option<String>,
    /// Waited before forwarding each request (a distant registry's round trip).
    pub delay: Duration,
    /// Per-connection response pacing in bytes/second (a CDN's per-connection cap);
    /// `None` or 0 means unpaced.
    pub rate: Option<u64>,
}

/// What happens to one blob GET before it reaches the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Forward it.
    None,
    /// Answer 503 without forwarding.
    Unavailable,
    /// Answer 429 (with this `Retry-After`) without forwarding.
    TooMany(Option<u64>),
    /// Answer 307 to this base URL without forwarding.
    Redirect(String),
}

/// The live fault settings and the countdowns of the counted faults.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    faults: Faults,
    cuts_left: u32,
    corruptions_left: u32,
    too_many_left: u32,
}

impl FaultState {
    /// Fresh state for `faults`, with every countdown full.
    pub(crate) fn new(faults: Faults) -> Self {
        let cuts_left = match faults.cut_blob_after {
            Some(_) => faults.cuts.max(1),
            None => 0,
        };
        Self {
            cuts_left,
            corruptions_left: faults.corruptions,
            too_many_left: faults.too_many_requests,
            faults,
        }
    }

    /// The settings as given.
    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Decides whether a blob GET is refused, consuming a 429 if one is due.
    pub(crate) fn refuse_blob_get(&mut self) -> Refusal {
        if self.faults.always_503 {
            Refusal::Unavailable
        } else if let Some(base) = &self.faults.redirect_blobs_to {
            Refusal::Redirect(base.clone())
        } else if self.too_many_left > 0 {
            self.too_many_left -= 1;
            Refusal::TooMany(self.faults.retry_after)
        } else {
            Refusal::None
        }
    }

    /// For a blob response body of `len` bytes (`None`: unknown), the byte count after
    /// which to cut it, consuming a cut if one is due and the body is long enough.
    pub(crate) fn take_cut(&mut self, len: Option<u64>) -> Option<u64> {
        let after = self.faults.cut_blob_after?;
        if self.cuts_left == 0 || len.is_some_and(|len| len <= after) {
            return None;
        }
        self.cuts_left -= 1;
        Some(after)
    }

    /// For a blob response body holding blob bytes from offset `start` on (`len`
    /// bytes, `None`: unknown), the body offset of the byte to corrupt, if any,
    /// consuming a corruption when they are counted.
    pub(crate) fn take_corruption(&mut self, start: u64, len: Option<u64>) -> Option<u64> {
        let at = self.faults.corrupt_blob_at?.checked_sub(start)?;
        if len.is_some_and(|len| at >= len) {
            return None;
        }
        if self.faults.corruptions > 0 {
            if self.corruptions_left == 0 {
                return None;
            }
            self.corruptions_left -= 1;
        }
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_default_to_one_and_skip_short_bodies() {
        let mut s = FaultState::new(Faults {
            cut_blob_after: Some(100),
            ..Faults::default()
        });
        assert_eq!(s.take_cut(Some(100)), None, "a body that fits is not cut");
        assert_eq!(s.take_cut(Some(101)), Some(100));
        assert_eq!(s.take_cut(None), None, "only one cut by default");
    }

    #[test]
    fn corruption_is_relative_to_the_range_and_counted_when_asked() {
        let mut s = FaultState::new(Faults {
            corrupt_blob_at: Some(1000),
            corruptions: 1,
            ..Faults::default()
        });
        assert_eq!(s.take_corruption(2000, Some(10)), None, "range after it");
        assert_eq!(s.take_corruption(0, Some(1000)), None, "range before it");
        assert_eq!(s.take_corruption(900, Some(200)), Some(100));
        assert_eq!(s.take_corruption(0, None), None, "used up");
        let mut forever = FaultState::new(Faults {
            corrupt_blob_at: Some(5),
            ..Faults::default()
        });
        assert_eq!(forever.take_corruption(0, None), Some(5));
        assert_eq!(forever.take_corruption(0, None), Some(5));
    }

    #[test]
    fn refusals_run_out() {
        let mut s = FaultState::new(Faults {
            too_many_requests: 2,
            retry_after: Some(3),
            ..Faults::default()
        });
        assert_eq!(s.refuse_blob_get(), Refusal::TooMany(Some(3)));
        assert_eq!(s.refuse_blob_get(), Refusal::TooMany(Some(3)));
        assert_eq!(s.refuse_blob_get(), Refusal::None);
        let mut down = FaultState::new(Faults {
            always_503: true,
            ..Faults::default()
        });
        assert_eq!(down.refuse_blob_get(), Refusal::Unavailable);
    }
}
