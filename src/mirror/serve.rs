//! `stowage serve`: the store as a read-only OCI distribution registry, so podman,
//! docker, skopeo and containerd on a node pull from localhost.
//!
//! Endpoints (GET and HEAD; anything that would write gets 405 `UNSUPPORTED`):
//! - `/v2/`: 200 with `Docker-Distribution-API-Version: registry/2.0`;
//! - `/v2/<name>/manifests/<tag|digest>`: the stored document byte for byte, with its
//!   own media type as `Content-Type`, `Docker-Content-Digest` and `Content-Length`;
//! - `/v2/<name>/blobs/<digest>`: any stored blob, streamed from disk, with
//!   `Range: bytes=a-b`, `bytes=a-` and `bytes=-n` (206, or 416 past the end);
//! - `/v2/<name>/tags/list` and `/v2/_catalog`, paginated with `n` and `last`;
//! - `/v2/<name>/referrers/<digest>`: the store's referrers record of the subject
//!   (an empty index when there is none), filtered by `artifactType`; the tag schemas'
//!   tags (`sha256-<hex>.sig`, `.att`, `.sbom`, and `sha256-<hex>`) resolve from the
//!   same records (`referrers`).
//!
//! Each ref of the store is served under its repository path without the registry
//! host (`127.0.0.1:5000/tools/samtools:1.20` as `tools/samtools:1.20`, and
//! `docker.io/library/alpine` as `library/alpine` or `alpine`). A request may name
//! the registry (containerd's `?ns=HOST`, a mirror path `HOST/x/y` whose host is an
//! upstream, else the default upstream: `naming`); one that names none gets, when two
//! refs map to the same repository and tag, the first in index.json, the other then
//! served by digest only. With [`ServeOptions::upstream`] what the store lacks is
//! pulled through (`upstream`, `tap`). Errors are the spec's JSON documents
//! (`{"errors":[{"code":"MANIFEST_UNKNOWN","message":...}]}`). The store is read as it
//! is at each request: refs pulled while serving appear at once.
//!
//! Against clients that hold connections without using them: a request head must
//! arrive within [`ServeOptions::header_timeout`] (also how long an HTTP/1 connection
//! may sit idle between requests), a connection that moves no byte for
//! [`ServeOptions::idle_timeout`] is closed, at most
//! [`ServeOptions::max_connections`] are open at once (the rest wait in the listen
//! backlog), and a blob response holds at most 256 KiB of the blob in memory however
//! slowly its client reads.

mod admission;
mod blob;
mod catalog;
mod eviction;
mod fd_limit;
mod idle;
mod manifest;
mod naming;
mod page;
mod referrers;
mod response;
mod routes;
mod tap;
mod upstream;
mod usage;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinSet;

use crate::store::{Store, StoreError};
use admission::{Admission, Admitted};
use catalog::CatalogCache;
pub use fd_limit::raise_fd_limit;
use idle::IdleTimeout;
pub use upstream::Upstreams;

/// The most an HTTP/1 connection buffers to write (and the largest request head it
/// reads): about one blob chunk beyond it is queued before hyper waits for the socket.
const MAX_BUF: usize = 64 * 1024;

/// How a server behaves; [`ServeOptions::default`] is what `stowage serve` uses.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Hash every blob served whole and cut the response short, never completing it,
    /// if the bytes on disk no longer match their digest. Off by default: it costs
    /// about a core per 2 GB/s, and every client checks the digests itself.
    pub verify_blobs: bool,
    /// How long a shutdown waits for requests in flight (a blob half sent) to finish
    /// before it drops their connections (default 10 s).
    pub drain_timeout: Duration,
    /// How long a client has to send a request head once it connected or its previous
    /// response ended (default 10 s, as nginx and Go servers commonly use); an HTTP/1
    /// connection idle between requests is closed after it too.
    pub header_timeout: Duration,
    /// How long a connection may move no byte in either direction before it is closed:
    /// a client that stopped reading a response, an idle HTTP/2 connection (default
    /// 60 s, nginx's `send_timeout`).
    pub idle_timeout: Duration,
    /// Connections open at once; past it the server stops accepting and new ones wait
    /// in the listen backlog. Blob files open at once are capped at the same number
    /// (HTTP/2 streams past it wait for one). `None` (the default): what the open-file
    /// limit leaves room for, a socket and a blob file per connection after a reserve
    /// of 64.
    pub max_connections: Option<usize>,
    /// Keep the store's blobs under this many bytes, evicting the least recently used
    /// images once a minute (`serve --max-size`). `None` (the default): no limit.
    pub max_size: Option<u64>,
    /// Pull through from these registries what the store lacks (`serve --upstream`;
    /// see the `upstream` module). `None` (the default): serve the store only.
    pub upstream: Option<Upstreams>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            verify_blobs: false,
            drain_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
            max_size: None,
            upstream: None,
        }
    }
}

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listening socket could not be opened.
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// The listening socket has no local address.
    #[error("reading the listening address: {0}")]
    LocalAddr(#[source] io::Error),
    /// The store's index.json could not be read when the server started.
    #[error("reading the store's refs: {0}")]
    Store(#[from] StoreError),
    /// The open-file limit could not be raised.
    #[error("raising the open-file limit: {0}")]
    FdLimit(#[source] io::Error),
    /// The server task failed (panicked or was cancelled).
    #[error("the server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What every request handler shares.
#[derive(Clone)]
struct State(Arc<Inner>);

struct Inner {
    store: Store,
    catalog: CatalogCache,
    options: ServeOptions,
    /// Blob files open at once, as many as connections: an HTTP/1 connection sends
    /// one blob at a time and never waits here, HTTP/2 streams beyond that do, so the
    /// open-file budget holds however requests are multiplexed.
    open_blobs: Arc<Semaphore>,
    /// Which images were served by tag, for least-recently-used eviction.
    usage: usage::UseRecorder,
    /// The pull-through state, with `--upstream`.
    through: Option<upstream::Through>,
}

impl Inner {
    /// The repository and registry a request names (`naming`).
    fn locate(&self, name: &str, query: &str) -> naming::Located {
        let upstreams = self.through.as_ref().map_or(&[][..], |t| &t.registries[..]);
        naming::locate(name, query, upstreams)
    }
}

impl std::ops::Deref for State {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Opens the listening socket (`host:port`; port 0 picks a free one), on the first of
/// the addresses `host` resolves to that can be bound.
pub async fn bind(addr: &str) -> Result<TcpListener, ServeError> {
    let failed = |source| ServeError::Bind {
        addr: addr.to_string(),
        source,
    };
    let mut last = None;
    for candidate in tokio::net::lookup_host(addr).await.map_err(failed)? {
        match admission::listen(candidate) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(failed(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on")
    })))
}

/// Serves `store` on `listener` until `shutdown` completes; then stops accepting,
/// lets requests in flight finish (at most [`ServeOptions::drain_timeout`]) and
/// returns. Fails at once if the store's refs cannot be read; errors of single
/// requests and connections are answered or logged, never fatal.
pub async fn serve(
    store: Store,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_with(store, listener, shutdown, ServeOptions::default()).await
}

/// [`serve`] with options.
pub async fn serve_with(
    store: Store,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    options: ServeOptions,
) -> Result<(), ServeError> {
    let drain_timeout = options.drain_timeout;
    let max_connections = options
        .max_connections
        .unwrap_or_else(fd_limit::default_max_connections);
    let builder = builder(&options);
    let _evicting = options
        .max_size
        .map(|max| eviction::Evicting::start(store.clone(), max));
    let through = options
        .upstream
        .as_ref()
        .map(|u| upstream::Through::new(u, store.clone()));
    let state = State(Arc::new(Inner {
        through,
        catalog: CatalogCache::new(store.clone()),
        usage: usage::UseRecorder::new(store.clone()),
        store,
        options,
        open_blobs: Arc::new(Semaphore::new(max_connections)),
    }));
    {
        let state = state.clone();
        tokio::task::spawn_blocking(move || state.catalog.get()).await??;
    }
    let addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
    tracing::info!(
        "serving {} on http://{addr} (at most {max_connections} connections)",
        state.store.root().display()
    );
    let mut admission = Admission::new(listener, max_connections);
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let Admitted { stream, peer, slot } = tokio::select! {
            () = &mut shutdown => break,
            admitted = admission.accept() => admitted,
        };
        let _ = stream.set_nodelay(true);
        let connection = connection(builder.clone(), state.clone(), stream, stopping.clone());
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection from {peer}: {e}");
            }
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(admission);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{} connections still busy after {drain_timeout:?}; dropping them",
            connections.len()
        );
        connections.shutdown().await;
    }
    tracing::info!("stopped serving on http://{addr}");
    Ok(())
}

/// The connection builder: HTTP/1.1 with a request-head timeout and a small write
/// buffer, or HTTP/2 with prior knowledge.
fn builder(options: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .max_buf_size(MAX_BUF);
    builder
}

/// One connection (HTTP/1.1, or HTTP/2 with prior knowledge), shut down gracefully
/// once `stopping` turns true: requests in flight finish, idle connections close.
async fn connection(
    builder: auto::Builder<TokioExecutor>,
    state: State,
    stream: tokio::net::TcpStream,
    mut stopping: watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (first, idle) = (state.options.header_timeout, state.options.idle_timeout);
    let service = hyper::service::service_fn(move |request| routes::handle(state.clone(), request));
    let io = TokioIo::new(IdleTimeout::new(stream, first, idle));
    let connection = builder.serve_connection(io, service).into_owned();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result,
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    connection.as_mut().graceful_shutdown();
    connection.await
}

/// A server running on its own task, for tests and embedding: started on a given
/// address (port 0 for a free one), stopped with [`Server::stop`].
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Server {
    /// Binds `addr` and serves `store` on a task of the current runtime.
    pub async fn start(
        store: Store,
        addr: &str,
        options: ServeOptions,
    ) -> Result<Self, ServeError> {
        let listener = bind(addr).await?;
        let addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve_with(store, listener, shutdown, options));
        Ok(Self {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish, and waits for the server.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await?
    }
}
