//! Accepting connections: at most a fixed number open at once, the rest waiting in a
//! listen backlog deep enough to hold them, and accept errors (out of file
//! descriptors, say) retried with a growing pause and logged once per burst rather
//! than once per attempt.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The first pause after a failed accept; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Connections the kernel completes and queues before the server accepts them; it
/// caps this at `net.core.somaxconn` (4096 by default since Linux 5.4). Past it, a
/// client's SYN is dropped and it retries after a second or more.
const BACKLOG: u32 = 4096;

/// Opens a listening socket on `addr` with a [`BACKLOG`]-deep queue (std's and tokio's
/// `bind` use 128, too shallow for the connections [`Admission`] leaves waiting).
pub(super) fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std's `TcpListener::bind` does on Unix: a restarted server rebinds its port
    // while the old one's connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The listener and the slots of open connections.
pub(super) struct Admission {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    /// Failed accepts since the last one that worked.
    failures: u64,
}

/// An accepted connection and its slot, freed when it is dropped.
pub(super) struct Admitted {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) slot: OwnedSemaphorePermit,
}

impl Admission {
    pub(super) fn new(listener: TcpListener, max_connections: usize) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(max_connections)),
            failures: 0,
        }
    }

    /// The next connection, once a slot is free: until then the kernel keeps new
    /// connections in the listen backlog. Cancel-safe.
    pub(super) async fn accept(&mut self) -> Admitted {
        loop {
            let slot = Arc::clone(&self.slots)
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    if self.failures > 0 {
                        tracing::info!(
                            "accepting connections again after {} failed attempts",
                            self.failures
                        );
                        self.failures = 0;
                    }
                    return Admitted { stream, peer, slot };
                }
                Err(e) => {
                    drop(slot);
                    if self.failures == 0 {
                        tracing::warn!("accepting a connection: {e}; retrying with backoff");
                    }
                    self.failures += 1;
                    tokio::time::sleep(backoff(self.failures)).await;
                }
            }
        }
    }
}

/// The pause after the `failures`th failed accept in a row.
fn backoff(failures: u64) -> Duration {
    let doublings = u32::try_from(failures.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    MIN_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::backoff;

    #[test]
    fn backoff_doubles_up_to_a_second() {
        assert_eq!(backoff(1), Duration::from_millis(10));
        assert_eq!(backoff(2), Duration::from_millis(20));
        assert_eq!(backoff(7), Duration::from_millis(640));
        assert_eq!(backoff(8), Duration::from_secs(1));
        assert_eq!(backoff(u64::MAX), Duration::from_secs(1));
    }
}
