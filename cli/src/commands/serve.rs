//! `stowage serve`: the store as a read-only registry until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use stowage::store::Store;
use stowage::{bind, raise_fd_limit, serve_with, ServeOptions};
use tokio::signal::unix::{signal, SignalKind};

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
            ..ServeOptions::default()
        };
        serve_with(store.clone(), listener, shutdown, options).await?;
        Ok(ExitCode::SUCCESS)
    })
}
