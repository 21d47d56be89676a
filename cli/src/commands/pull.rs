//! `stowage pull` and `stowage resolve`: the registry side of the command line.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use stowage::oci::platform::Platform;
use stowage::oci::reference::Reference;
use stowage::pull::expect::Expectations;
use stowage::pull::progress::{ProgressReporter, Silent, TerminalProgress};
use stowage::pull::{pull as pull_image, PullOptions};
use stowage::registry::{
    BlobOptions, Client, ClientConfig, Credentials, LowSpeed, RetryPolicy, Secret,
};
use stowage::store::{parse_digest, Store};

use super::Output;

/// How to reach registries; shared by every command that talks to one.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Talk plain HTTP to this registry (host[:port]); loopback registries always are.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure: Vec<String>,
    /// Trust this CA certificate (PEM) besides the system roots.
    #[arg(long, value_name = "FILE")]
    ca_cert: Vec<PathBuf>,
    /// Log in with this user name (the password is read from stdin).
    #[arg(long, requires = "password_stdin")]
    username: Option<String>,
    /// Read the password for --username from stdin.
    #[arg(long)]
    password_stdin: bool,
    /// Downloads (blobs, or byte ranges of big blobs) in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The password, once read from stdin.
    #[arg(skip)]
    password: std::sync::OnceLock<String>,
    /// Attempts per request on 429, 5xx and dropped connections (backoff doubles from
    /// 200 ms and honours Retry-After, each wait at most 30 s).
    #[arg(long, default_value_t = 6)]
    retries: u32,
    /// A blob response bringing fewer bytes a second than this for --low-speed-time
    /// is given up on and retried (a retry that is slow too counts as a failure); 0
    /// turns the limit off.
    #[arg(long, value_name = "BYTES_PER_S", default_value_t = LowSpeed::default().bytes_per_second)]
    low_speed_limit: u64,
    /// The window --low-speed-limit is judged over, in seconds.
    #[arg(long, value_name = "S", default_value_t = LowSpeed::default().window.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    low_speed_time: u64,
}

impl RegistryArgs {
    /// The `--username` credentials, the password read from stdin once.
    pub fn credentials(&self) -> anyhow::Result<Option<Credentials>> {
        let Some(username) = &self.username else {
            return Ok(None);
        };
        let password = match self.password.get() {
            Some(password) => password.clone(),
            None => {
                let mut password = String::new();
                std::io::stdin()
                    .read_to_string(&mut password)
                    .context("reading the password from stdin")?;
                let password = password.trim_end_matches(['\n', '\r']).to_string();
                self.password.get_or_init(|| password).clone()
            }
        };
        Ok(Some(Credentials::Basic {
            username: username.clone(),
            password: Secret::new(password),
        }))
    }

    /// `--ca-cert` files.
    pub fn ca_cert_paths(&self) -> &[PathBuf] {
        &self.ca_cert
    }

    /// `--insecure-registry` hosts.
    pub fn insecure_hosts(&self) -> &[String] {
        &self.insecure
    }

    /// A client; `--username` credentials are for the one registry of `registries`
    /// (naming several is refused: one registry's password is never sent to another).
    pub fn client(&self, registries: &[&str]) -> anyhow::Result<Arc<Client>> {
        let mut credentials = HashMap::new();
        let mut hosts: Vec<&str> = registries.to_vec();
        hosts.sort_unstable();
        hosts.dedup();
        if let (Some(username), [_, _, ..]) = (&self.username, hosts.as_slice()) {
            anyhow::bail!(
                "--username {username} would log in to {} registries ({}): give one \
                 registry's images per command, or put the credentials in auth.json or \
                 docker's config.json, which are per registry",
                hosts.len(),
                hosts.join(", ")
            );
        }
        if let Some(basic) = self.credentials()? {
            for registry in hosts {
                credentials.insert(registry.to_string(), basic.clone());
            }
        }
        let config = ClientConfig {
            insecure: self.insecure.clone(),
            ca_certs: self.ca_cert.clone(),
            credentials,
            concurrency: self.concurrency,
            low_speed: LowSpeed {
                bytes_per_second: self.low_speed_limit,
                window: std::time::Duration::from_secs(self.low_speed_time),
            },
            retry: RetryPolicy {
                attempts: self.retries.max(1),
                ..RetryPolicy::default()
            },
        };
        Ok(Arc::new(Client::new(config)?))
    }
}

/// How big blobs are fetched; shared by every command that fetches blobs.
#[derive(Debug, Args)]
pub struct BlobArgs {
    /// Blobs at least this many bytes start as one stream that is split into parallel
    /// byte ranges when it proves slow.
    #[arg(long, default_value_t = 16 << 20)]
    split_threshold: u64,
    /// Bytes per second: that stream is split when the pull's downloads together bring
    /// less than this.
    #[arg(long, default_value_t = 256 << 20)]
    split_below: u64,
    /// The size of those ranges, about (64 KiB to 1 GiB).
    #[arg(long, default_value_t = 8 << 20,
          value_parser = clap::value_parser!(u64).range((64 << 10)..=(1 << 30)))]
    range_size: u64,
    /// Ranges of one blob in flight at once.
    #[arg(long, default_value_t = 8)]
    ranges_per_blob: u64,
}

impl BlobArgs {
    /// The options these flags describe.
    pub fn options(&self) -> BlobOptions {
        BlobOptions {
            split_threshold: self.split_threshold,
            split_below: self.split_below,
            range_size: self.range_size,
            ranges_per_blob: self.ranges_per_blob,
            ..BlobOptions::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: [registry/]repository[:tag][@digest].
    reference: String,
    /// Fail unless the registry's manifest has this digest.
    #[arg(long)]
    digest: Option<String>,
    /// The platform to pick from an index (os/arch[/variant]); default: this machine's.
    #[arg(long)]
    platform: Option<Platform>,
    /// Keep the whole index and every platform.
    #[arg(long)]
    all_platforms: bool,
    /// Use only the store; fail if the image is not there.
    #[arg(long)]
    offline: bool,
    /// Seconds a tag's last resolution is trusted when the image is all in the store
    /// (0: ask the registry every time).
    #[arg(long, default_value_t = 0)]
    ttl: u64,
    #[command(flatten)]
    blobs: BlobArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn pull(store: &Store, args: &PullArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let reference: Reference = args.reference.parse()?;
    let mut options = PullOptions {
        all_platforms: args.all_platforms,
        offline: args.offline,
        ttl: std::time::Duration::from_secs(args.ttl),
        expect: Expectations {
            digest: args.digest.as_deref().map(parse_digest).transpose()?,
            ..Expectations::default()
        },
        blobs: args.blobs.options(),
        ..PullOptions::default()
    };
    if let Some(platform) = &args.platform {
        options.platform = platform.clone();
    }
    let client = args.registry.client(&[&reference.registry])?;
    let progress = progress_for(out);
    let report = runtime()?.block_on(pull_image(client, store, &reference, &options, progress))?;
    out.line(format!(
        "{} {}: {} layers, fetched {} in {} blobs, {} already present, {:.2} s",
        report.reference,
        report.manifest_digest,
        report.layers,
        indicatif::HumanBytes(report.bytes_fetched),
        report.blobs_fetched,
        indicatif::HumanBytes(report.bytes_present),
        report.seconds
    ));
    out.json(serde_json::to_value(&report)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The image: [registry/]repository[:tag][@digest].
    reference: String,
    /// The platform to pick from an index; default: this machine's.
    #[arg(long)]
    platform: Option<Platform>,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn resolve(args: &ResolveArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let reference: Reference = args.reference.parse()?;
    let client = args.registry.client(&[&reference.registry])?;
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    let resolved = runtime()?.block_on(stowage::pull::resolve_digest(
        &client, &reference, &platform,
    ))?;
    out.line(&resolved.manifest_digest);
    out.json(json!({
        "reference": reference.to_string(),
        "manifest_digest": resolved.manifest_digest.to_string(),
        "index_digest": resolved.index_digest.map(|d| d.to_string()),
        "platform": platform.to_string(),
    }));
    Ok(ExitCode::SUCCESS)
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Bars on a terminal; nothing on a pipe, with `--json` or with `-q`.
pub fn progress_for(out: &Output) -> Arc<dyn ProgressReporter> {
    if out.interactive() && std::io::stderr().is_terminal() {
        Arc::new(TerminalProgress::default())
    } else {
        Arc::new(Silent)
    }
}
