//! `stowage-faultproxy`: the proxy as a program, for benchmarks that put a modelled
//! WAN link (round trip, per-connection bandwidth cap) or faults between a registry
//! and clients that are not Rust tests (skopeo, podman, curl, stowage's binary).
//!
//! It prints `listening on HOST:PORT` (flushed) once the port is bound, then serves
//! until killed.

use std::io::Write;
use std::time::Duration;

use clap::Parser;
use stowage_faultproxy::{Faults, Proxy};

/// A counting, fault-injecting, pacing HTTP proxy in front of a registry.
#[derive(Debug, Parser)]
#[command(name = "stowage-faultproxy", version)]
struct Args {
    /// The registry to forward to, HOST:PORT (plain HTTP).
    #[arg(long)]
    upstream: String,
    /// Where to listen, HOST:PORT; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Milliseconds to wait before forwarding each request (a round trip).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Per-connection response pacing, bytes per second (0: unpaced).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Cut blob GET responses after this many body bytes.
    #[arg(long)]
    cut_blob_after: Option<u64>,
    /// How many responses to cut (0 with --cut-blob-after: 1).
    #[arg(long, default_value_t = 0)]
    cuts: u32,
    /// Flip a bit of the blob byte at this offset.
    #[arg(long)]
    corrupt_blob_at: Option<u64>,
    /// How many responses to corrupt (0: all).
    #[arg(long, default_value_t = 0)]
    corruptions: u32,
    /// Drop Range headers, so blobs come back whole with 200.
    #[arg(long)]
    ignore_range: bool,
    /// Answer this many blob GETs with 429 first.
    #[arg(long, default_value_t = 0)]
    too_many_requests: u32,
    /// Retry-After seconds sent with the 429s.
    #[arg(long)]
    retry_after: Option<u64>,
    /// Answer every blob GET with 503.
    #[arg(long)]
    always_503: bool,
    /// Answer every blob GET with a 307 to the same path under this base URL.
    #[arg(long)]
    redirect_blobs_to: Option<String>,
}

fn main() {
    let args = Args::parse();
    let faults = Faults {
        cut_blob_after: args.cut_blob_after,
        cuts: args.cuts,
        corrupt_blob_at: args.corrupt_blob_at,
        corruptions: args.corruptions,
        ignore_range: args.ignore_range,
        too_many_requests: args.too_many_requests,
        retry_after: args.retry_after,
        always_503: args.always_503,
        redirect_blobs_to: args.redirect_blobs_to,
        delay: Duration::from_millis(args.delay_ms),
        rate: Some(args.rate).filter(|&r| r > 0),
    };
    let proxy = match Proxy::bind(&args.listen, &args.upstream, faults) {
        Ok(proxy) => proxy,
        Err(e) => {
            eprintln!("stowage-faultproxy: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening on {}", proxy.addr());
    let _ = stdout.flush();
    drop(stdout);
    loop {
        std::thread::park();
    }
}
