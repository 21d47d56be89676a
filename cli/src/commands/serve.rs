//! `stowage serve`: the store as a read-only registry until SIGINT or SIGTERM; with
//! `--upstream`, a pull-through mirror of registries.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use stowage::store::Store;
use stowage::{bind, raise_fd_limit, serve_with, Client, ServeOptions, Upstreams};
use tokio::signal::unix::{signal, SignalKind};

use super::args::{PeerArgs, RegistryArgs};
use super::Output;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, host:port (port 0 picks a free one). The registry is
    /// unauthenticated and plain HTTP: keep it on loopback unless the network is trusted.
    #[arg(long, default_value = "127.0.0.1:5000")]
    addr: String,
    /// Hash each blob served whole and cut the response short if the stored bytes no
    /// longer match their digest (costs CPU; clients check digests themselves).
    #[arg(long)]
    verify_blobs: bool,
    /// Seconds a client has to send a request head after connecting or after its
    /// previous response; an HTTP/1 connection idle between requests is closed then too.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout: u64,
    /// Seconds a connection may move no byte either way (a client that stopped
    /// reading, an idle HTTP/2 connection) before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Connections open at once; more wait in the listen backlog. Default: what the
    /// open-file limit (raised to its hard limit at start) leaves room for, two
    /// descriptors per connection after a reserve of 64.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,
    /// Keep the store's blobs under SIZE (e.g. 20GiB) while serving: once a minute,
    /// evict the least recently used images if other processes filled it past that.
    #[arg(long, value_name = "SIZE", value_parser = super::args::parse_size)]
    max_size: Option<u64>,
    /// Pull through from this registry what the store lacks (repeatable; the first is
    /// the default): `http://HOST:PORT` (plain HTTP), `https://HOST` or `HOST`.
    /// Fetched blobs are verified and streamed to the client as they arrive; images
    /// are recorded as refs under their upstream name once whole. containerd's
    /// `?ns=HOST` or a mirror path `/v2/HOST/repo/...` picks another upstream.
    #[arg(long, value_name = "URL")]
    upstream: Vec<String>,
    /// Seconds a tag's resolution from upstream is trusted before upstream is asked
    /// again (0: always ask). Manifests by digest never expire.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    tag_ttl: u64,
    /// Serve only what the store holds: nothing is fetched from --upstream (whose
    /// hosts still name registries in ns= and mirror paths).
    #[arg(long)]
    offline: bool,
    /// With --upstream: a local client's blob is asked of these peers before upstream.
    #[command(flatten)]
    peers: PeerArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

impl ServeArgs {
    /// The pull-through configuration, with `--upstream`; `listening` is this node's
    /// address among its peers.
    fn upstreams(&self, listening: std::net::SocketAddr) -> anyhow::Result<Option<Upstreams>> {
        if self.upstream.is_empty() {
            return Ok(None);
        }
        let mut hosts = Vec::new();
        let mut plain = Vec::new();
        for url in &self.upstream {
            let host = url
                .strip_prefix("http://")
                .inspect(|h| plain.push(h.trim_end_matches('/').to_string()))
                .or_else(|| url.strip_prefix("https://"))
                .unwrap_or(url)
                .trim_end_matches('/');
            if host.is_empty() || host.contains('/') {
                anyhow::bail!(
                    "--upstream {url}: expected a registry, HOST[:PORT] or http(s)://HOST[:PORT]"
                );
            }
            hosts.push(host.to_string());
        }
        let mut config = self
            .registry
            .config(&hosts.iter().map(String::as_str).collect::<Vec<_>>())?;
        config.insecure.extend(plain);
        Ok(Some(Upstreams {
            client: std::sync::Arc::new(Client::new(config)?),
            registries: hosts,
            tag_ttl: Duration::from_secs(self.tag_ttl),
            offline: self.offline,
            peers: self.peers.peers_listening_on(listening)?,
        }))
    }
}

/// Prints `serving <store> on http://ADDR` (or, with `--json`, `{"store","addr","url"}`)
/// once listening, then serves until SIGINT or SIGTERM, letting requests in flight
/// finish.
pub fn serve(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    args: &ServeArgs,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    if let Err(e) = raise_fd_limit() {
        tracing::warn!("{e}; serving within the current limit");
    }
    runtime.block_on(async {
        // Handlers first, so a signal sent as soon as the address is printed counts.
        let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        let listener = bind(&args.addr).await?;
        let addr = listener
            .local_addr()
            .context("reading the listening address")?;
        let url = format!("http://{addr}");
        out.line(format!("serving {} on {url}", store.root().display()));
        out.json(json!({
            "store": store.root().display().to_string(),
            "addr": addr.to_string(),
            "url": url,
        }));
        let shutdown = async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        };
        let options = ServeOptions {
            verify_blobs: args.verify_blobs,
            header_timeout: Duration::from_secs(args.header_timeout),
            idle_timeout: Duration::from_secs(args.idle_timeout),
            max_connections: args
                .max_connections
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            max_size: args.max_size,
            upstream: args.upstreams(addr)?,
            ..ServeOptions::default()
        };
        serve_with(store.clone(), listener, shutdown, options).await?;
        Ok(ExitCode::SUCCESS)
    })
}
