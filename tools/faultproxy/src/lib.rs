//! `stowage-faultproxy`: a counting, fault-injecting, pacing HTTP/1.1 proxy to put
//! between a registry client (stowage, or skopeo/podman/curl in benchmarks) and a
//! real registry.
//!
//! Tests use it to see what the client asked for ([`Proxy::log`]) and to make the
//! registry misbehave in the ways real ones do ([`Faults`]): connections cut
//! mid-blob, corrupted bytes, ignored `Range`, 429 with `Retry-After`, 503s, a long
//! round trip and a per-connection bandwidth cap. Benchmarks run the binary in front
//! of a registry to model a WAN link.
//!
//! The proxy runs on its own thread with its own tokio runtime, so plain `#[test]`
//! functions can use it without a runtime of their own:
//!
//! ```no_run
//! use stowage_faultproxy::{Faults, Proxy};
//! let proxy = Proxy::start("127.0.0.1:5000", Faults {
//!     cut_blob_after: Some(1 << 20),
//!     ..Faults::default()
//! });
//! // ... point the client at proxy.addr() ...
//! assert_eq!(proxy.blob_gets().len(), 2, "one cut, one resumed");
//! ```

mod body;
mod faults;
mod forward;
mod log;
mod pacing;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::oneshot;

pub use crate::faults::Faults;
pub use crate::log::{is_blob_path, Record};

use crate::faults::FaultState;
use crate::forward::{Conn, State, UpstreamClient};
use crate::log::Log;

/// A running proxy. Dropping it stops the proxy: the port is closed and every
/// client connection (and the upstream ones) is dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy to the registry at `upstream` (`host:port`, plain HTTP) on a free
    /// loopback port.
    ///
    /// # Panics
    /// If no loopback port can be bound or the runtime cannot start (tests want a
    /// loud failure there).
    pub fn start(upstream: &str, faults: Faults) -> Proxy {
        Self::bind("127.0.0.1:0", upstream, faults)
            .unwrap_or_else(|e| panic!("faultproxy: cannot start on 127.0.0.1:0: {e}"))
    }

    /// Starts a proxy to `upstream` listening on `listen` (`host:port`; port 0 picks a
    /// free one). The port is bound when this returns.
    pub fn bind(listen: &str, upstream: &str, faults: Faults) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream: upstream.to_owned(),
            listen: addr.to_string(),
            faults: Mutex::new(FaultState::new(faults)),
            log: Log::default(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("faultproxy")
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("faultproxy {addr}"))
            .spawn(move || {
                runtime.block_on(serve(listener, thread_state, stopped));
                // Drops every connection task, and with them their sockets.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Proxy {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address clients should use, `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The address the proxy listens on.
    pub fn socket_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The registry this proxy forwards to.
    pub fn upstream(&self) -> &str {
        &self.state.upstream
    }

    /// Replaces the faults for the requests that arrive from now on, with every
    /// counted fault (cuts, 429s, corruptions) counting down afresh.
    pub fn set_faults(&self, faults: Faults) {
        *self.state.faults() = FaultState::new(faults);
    }

    /// The faults in force, as last set.
    pub fn faults(&self) -> Faults {
        self.state.faults().faults().clone()
    }

    /// Every request since the start or the last [`Proxy::reset_log`], in arrival order.
    pub fn log(&self) -> Vec<Record> {
        self.state.log.records()
    }

    /// Forgets the requests logged so far.
    pub fn reset_log(&self) {
        self.state.log.clear();
    }

    /// The logged blob GETs, in arrival order.
    pub fn blob_gets(&self) -> Vec<Record> {
        self.log().into_iter().filter(Record::is_blob_get).collect()
    }

    /// Body bytes sent to clients in answer to blob GETs.
    pub fn blob_bytes(&self) -> u64 {
        self.blob_gets().iter().map(|r| r.body_bytes).sum()
    }

    /// Body bytes sent to clients in answer to any request.
    pub fn total_bytes(&self) -> u64 {
        self.log().iter().map(|r| r.body_bytes).sum()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts client connections until `stopped` fires, serving each on its own task.
async fn serve(listener: TcpListener, state: Arc<State>, mut stopped: oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("faultproxy: cannot listen: {e}");
            return;
        }
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: UpstreamClient = Client::builder(TokioExecutor::new()).build(connector);
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                eprintln!("faultproxy: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let conn = Arc::new(Conn {
            id: next_id,
            pacer: Arc::default(),
        });
        let (state, client) = (Arc::clone(&state), client.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                forward::handle(Arc::clone(&state), client.clone(), Arc::clone(&conn), req)
            });
            // A client hanging up, or a cut, ends the connection with an error;
            // either way there is nothing more to do for it.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
