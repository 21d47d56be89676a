//! A connection's socket that fails once no byte has moved either way for too long:
//! a client that connected and sent nothing, stopped reading a response, or left an
//! HTTP/2 connection open with nothing to do.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `io` with a deadline: `first` after the connection opens, until its first bytes
/// arrive (the request head's own timeout only starts once the protocol is known);
/// then `idle` after the last byte read or written. Past it, reads and writes fail
/// with [`io::ErrorKind::TimedOut`] and hyper closes the connection.
pub(super) struct IdleTimeout<T> {
    io: T,
    timeout: Duration,
    idle: Duration,
    last: Instant,
    /// Armed lazily: it fires at most once per `timeout`, and is pushed back then if
    /// bytes moved meanwhile, so moving bytes costs no timer update.
    deadline: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    pub(super) fn new(io: T, first: Duration, idle: Duration) -> Self {
        let last = Instant::now();
        Self {
            io,
            timeout: first,
            idle,
            last,
            deadline: Box::pin(tokio::time::sleep_until(last + first)),
        }
    }

    fn moved(&mut self) {
        self.last = Instant::now();
        self.timeout = self.idle;
    }

    /// For an I/O that is pending: pending too, or the timeout if it has passed.
    fn poll_deadline<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        loop {
            ready!(self.deadline.as_mut().poll(cx));
            let due = self.last + self.timeout;
            if due <= Instant::now() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no bytes moved for {:?}", self.timeout),
                )));
            }
            self.deadline.as_mut().reset(due);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => this.poll_deadline(cx),
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.moved();
                }
                Poll::Ready(result)
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.after_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.after_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<T> IdleTimeout<T> {
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Pending => self.poll_deadline(cx),
            Poll::Ready(Ok(n)) if n > 0 => {
                self.moved();
                Poll::Ready(Ok(n))
            }
            ready => ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::{sleep, Instant};

    use super::IdleTimeout;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn fails_only_when_nothing_moves() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = IdleTimeout::new(server, 300 * MS, 600 * MS);
        let mut byte = [0u8; 1];
        // The first bytes must come within `first`...
        sleep(200 * MS).await;
        client.write_all(b"x").await.unwrap();
        server.read_exact(&mut byte).await.unwrap();
        // ...then any byte either way pushes the deadline back by `idle`.
        sleep(400 * MS).await;
        server.write_all(b"y").await.unwrap();
        let started = Instant::now();
        let err = server.read_exact(&mut byte).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(waited >= 590 * MS && waited < 900 * MS, "{waited:?}");
    }

    #[tokio::test]
    async fn a_silent_connection_fails_after_first() {
        let (_client, server) = tokio::io::duplex(64);
        let started = Instant::now();
        let mut server = IdleTimeout::new(server, 300 * MS, 5000 * MS);
        let err = server.read_u8().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(waited >= 300 * MS && waited < 600 * MS, "{waited:?}");
    }
}
