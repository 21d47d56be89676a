//! When to try a request again: 429 and 5xx answers and dropped connections, with
//! exponential backoff that honours the registry's Retry-After, up to a cap.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;

/// How many times and how long to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The first delay; doubled each time.
    pub base: Duration,
    /// No single wait is longer than this, whatever Retry-After says.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            base: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Whether an answer with this status is worth another try.
    pub fn retryable(status: StatusCode) -> bool {
        status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
    }

    /// The wait before attempt `attempt + 1` (`attempt` counts from 1): Retry-After
    /// when the registry sent one in seconds, else exponential backoff.
    pub fn delay(&self, attempt: u32, headers: Option<&HeaderMap>) -> Duration {
        let asked = headers
            .and_then(|h| h.get(RETRY_AFTER))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let backoff = self.base * 2u32.saturating_pow(attempt.saturating_sub(1));
        asked.unwrap_or(backoff).min(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_wins_over_backoff_up_to_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1, None), Duration::from_millis(200));
        assert_eq!(policy.delay(3, None), Duration::from_millis(800));
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(policy.delay(1, Some(&headers)), Duration::from_secs(2));
        headers.insert(RETRY_AFTER, "3600".parse().unwrap());
        assert_eq!(policy.delay(1, Some(&headers)), Duration::from_secs(30));
    }
}
