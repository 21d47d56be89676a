//! `stowage serve`: the store as a read-only registry until SIGINT or SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use stowage::mirror::serve::{bind, serve_with, ServeOptions};
use stowage::store::Store;
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
}

/// Prints `serving <store> on http://ADDR` (or, with `--json`, `{"store","addr","url"}`)
/// once listening, then serves until SIGINT or SIGTERM, letting requests in flight
/// finish.
pub fn serve(store: &Store, args: &ServeArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let runtime = super::pull::runtime()?;
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
            ..ServeOptions::default()
        };
        serve_with(store.clone(), listener, shutdown, options).await?;
        Ok(ExitCode::SUCCESS)
    })
}
