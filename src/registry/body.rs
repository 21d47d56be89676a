//! Reading a small response body whole (a manifest, a token), never more than a bound
//! and never slower than the low-speed limit: a registry or token service that sends
//! hundreds of megabytes, or stalls half-way, gets an error, not the process's memory
//! or a minute of its time.

use reqwest::Response;

use super::low_speed::{LowSpeed, SpeedWindow};

/// Why a body could not be read whole.
pub(crate) enum BodyError {
    /// It would pass the limit (by its `Content-Length` or by what arrived).
    TooBig,
    /// It arrived slower than the low-speed limit.
    TooSlow,
    /// The connection failed while reading it.
    Http(reqwest::Error),
}

impl BodyError {
    /// The words for an error message about `what` (say, "the token service's answer").
    pub(crate) fn describe(self, what: &str, limit: u64, low_speed: LowSpeed) -> String {
        match self {
            Self::TooBig => format!("{what} is larger than the {limit}-byte limit"),
            Self::TooSlow => format!(
                "{what} arrived slower than the low-speed limit of {} bytes/s over {} s",
                low_speed.bytes_per_second,
                low_speed.window.as_secs()
            ),
            Self::Http(e) => format!("reading {what}: {}", e.without_url()),
        }
    }
}

/// Reads `response`'s body, refusing it as soon as it would pass `limit` bytes or a
/// window of `low_speed` ends below it.
pub(crate) async fn read_limited(
    response: &mut Response,
    limit: u64,
    low_speed: LowSpeed,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::TooBig);
    }
    let mut bytes = Vec::new();
    let mut speed = SpeedWindow::new(low_speed);
    loop {
        let chunk = match tokio::time::timeout_at(speed.deadline(), response.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => return Ok(bytes),
            Ok(Err(e)) => return Err(BodyError::Http(e)),
            Err(_) => bytes::Bytes::new(),
        };
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Err(BodyError::TooBig);
        }
        bytes.extend_from_slice(&chunk);
        speed
            .arrived(chunk.len() as u64)
            .map_err(|_| BodyError::TooSlow)?;
    }
}
