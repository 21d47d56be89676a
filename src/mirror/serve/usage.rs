//! Recording which images `serve` hands out, for least-recently-used eviction
//! ([`crate::store::Store::last_used`]): a manifest served by tag records its ref, at
//! most once a minute per ref, so a busy server writes a record per image and minute,
//! not per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::Store;

/// How long after recording a ref's use another use is not written down.
const QUIET: Duration = Duration::from_secs(60);

pub(super) struct UseRecorder {
    store: Store,
    recorded: Mutex<HashMap<String, Instant>>,
}

impl UseRecorder {
    pub(super) fn new(store: Store) -> Self {
        Self {
            store,
            recorded: Mutex::default(),
        }
    }

    /// Notes that `store_ref` was served now (blocking: may write a small file).
    pub(super) fn used(&self, store_ref: &str) {
        let now = Instant::now();
        {
            let mut recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
            if recorded
                .get(store_ref)
                .is_some_and(|at| now.duration_since(*at) < QUIET)
            {
                return;
            }
            recorded.insert(store_ref.to_string(), now);
        }
        if let Err(e) = self.store.record_use(&[store_ref]) {
            tracing::debug!("recording the use of {store_ref}: {e}");
        }
    }
}
