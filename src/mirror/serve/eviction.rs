//! `serve --max-size`: a cache node's store kept under a size while it serves, by
//! evicting the least recently used images ([`crate::store::Store::evict`]) once a
//! minute when other processes (pulls, syncs) have filled it past the limit.

use std::time::Duration;

use crate::store::{EvictOptions, Store, PARTIALS_OLDER_THAN};

/// How often the store's size is checked.
const EVERY: Duration = Duration::from_secs(60);

/// The eviction loop of a running server; stops when dropped.
pub(super) struct Evicting(tokio::task::JoinHandle<()>);

impl Evicting {
    pub(super) fn start(store: Store, max_size: u64) -> Self {
        Self(tokio::spawn(keep_under(store, max_size)))
    }
}

impl Drop for Evicting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn keep_under(store: Store, max_size: u64) {
    let mut ticks = tokio::time::interval(EVERY);
    loop {
        ticks.tick().await;
        let store = store.clone();
        let evicted = tokio::task::spawn_blocking(move || {
            let used = store.usage()?.blob_bytes;
            if used <= max_size {
                return Ok(None);
            }
            store
                .evict(&EvictOptions {
                    max_size: Some(max_size),
                    partials_older_than: PARTIALS_OLDER_THAN,
                    ..EvictOptions::default()
                })
                .map(Some)
        })
        .await;
        match evicted {
            Ok(Ok(Some(report))) => {
                for image in &report.evicted {
                    tracing::info!(
                        "evicted {} ({} bytes only it used)",
                        image.name,
                        image.bytes_freed
                    );
                }
                tracing::info!(
                    "store kept under {max_size} bytes: {} images evicted, {} bytes freed",
                    report.evicted.len(),
                    report.gc.bytes_freed
                );
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!("evicting to {max_size} bytes: {e}"),
            Err(e) => tracing::warn!("evicting to {max_size} bytes: {e}"),
        }
    }
}
