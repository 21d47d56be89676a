//! The arguments several commands share, and their conversion into library
//! configuration: registry flags become a `ClientConfig` (and a `Client`), blob flags
//! become `BlobOptions`, package layer flags become `FactorOptions`. Command modules
//! import shared flags only from here.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use stowage::{
    BlobOptions, Client, ClientConfig, Credentials, FactorOptions, LayerCompression, LayerOptions,
    LowSpeed, Prefix, ReferrerFilter, RetryPolicy, Secret,
};

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
    /// A client for the registries `references` name (see [`Self::client`]).
    pub fn client_for<'a>(
        &self,
        references: impl IntoIterator<Item = &'a str>,
    ) -> anyhow::Result<Arc<Client>> {
        let hosts = stowage::registries(references);
        self.client(&hosts.iter().map(String::as_str).collect::<Vec<_>>())
    }

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

    /// A client; `--username` credentials are for the one registry of `registries`
    /// (naming several is refused: one registry's password is never sent to another).
    pub fn client(&self, registries: &[&str]) -> anyhow::Result<Arc<Client>> {
        Ok(Arc::new(Client::new(self.config(registries)?)?))
    }

    /// The configuration [`client`](Self::client) builds a client from, for pushes as
    /// well as pulls; `registries` as there.
    pub fn config(&self, registries: &[&str]) -> anyhow::Result<ClientConfig> {
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
        Ok(ClientConfig {
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
        })
    }
}

/// Other stowage nodes to ask for blobs before the registry; shared by `pull`, `sync`
/// and `warm` (and what `serve --upstream` asks on a local client's behalf).
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Ask these peers (stowage serves) for each missing blob before the registry, its
    /// owner by rendezvous hashing first: `dns:NAME[:PORT]` or a bare host name (every
    /// A/AAAA record is a peer, as a Kubernetes headless Service lists them),
    /// `HOST:PORT,HOST:PORT`, or `file:PATH` (one HOST[:PORT] a line, read again when
    /// it changes). The port is 5000 when none is given. Every blob is verified
    /// whatever its source.
    #[arg(long, value_name = "SPEC")]
    peers: Option<stowage::PeerSpec>,
    /// This node's own address as the peer set names it, never asked (a peer on one of
    /// this machine's addresses other than loopback is left out too).
    #[arg(long = "self", value_name = "HOST:PORT", requires = "peers")]
    self_addr: Option<String>,
    /// Seconds between resolutions of a DNS peers name.
    #[arg(long, value_name = "S", default_value_t = 10, requires = "peers")]
    peers_refresh: u64,
}

impl PeerArgs {
    /// The peer set, when `--peers` was given.
    pub fn peers(&self) -> anyhow::Result<Option<Arc<stowage::Peers>>> {
        let Some(spec) = &self.peers else {
            return Ok(None);
        };
        let options = stowage::PeerOptions {
            refresh: std::time::Duration::from_secs(self.peers_refresh),
            self_addr: self.self_addr.clone(),
            ..stowage::PeerOptions::default()
        };
        Ok(Some(Arc::new(stowage::Peers::new(spec.clone(), options)?)))
    }

    /// [`Self::peers`] for a node listening on `listening`: without `--self`, that
    /// address is this node's (an unspecified one, 0.0.0.0, names none: this machine's
    /// own addresses are left out anyway).
    pub fn peers_listening_on(
        &self,
        listening: std::net::SocketAddr,
    ) -> anyhow::Result<Option<Arc<stowage::Peers>>> {
        if self.self_addr.is_some() || listening.ip().is_unspecified() {
            return self.peers();
        }
        let with_self = PeerArgs {
            peers: self.peers.clone(),
            self_addr: Some(listening.to_string()),
            peers_refresh: self.peers_refresh,
        };
        with_self.peers()
    }
}

/// Whether to carry an image's referrers; shared by `pull`, `lock` and `sync`.
#[derive(Debug, Args)]
pub struct ReferrerArgs {
    /// Also carry the image's referrers (signatures, SBOMs, attestations), found
    /// through the registry's referrers API or the tag schemas: all of them when given
    /// bare, or those of the comma-separated artifact types given
    /// (`--referrers=application/spdx+json`).
    #[arg(long, value_name = "TYPES", num_args = 0..=1, require_equals = true,
          default_missing_value = "all")]
    pub referrers: Option<ReferrerFilter>,
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

/// How conda packages become layers; shared by `factor` and `factor-set`.
#[derive(Debug, Args)]
pub struct PackageLayerArgs {
    /// The environment prefix the packages are installed under.
    #[arg(long, default_value = stowage::DEFAULT_PREFIX)]
    prefix: String,
    /// The environment's Python (X.Y), for noarch: python packages.
    #[arg(long)]
    python: Option<String>,
    /// tar+gzip layers instead of tar+zstd (for engines that cannot read zstd).
    #[arg(long)]
    gzip: bool,
    /// Past this many layers, the least shared packages share one layer.
    #[arg(long, default_value_t = stowage::DEFAULT_MAX_LAYERS)]
    max_layers: usize,
}

impl PackageLayerArgs {
    /// Factor options with these layer settings and nothing else.
    pub fn options(&self) -> anyhow::Result<FactorOptions> {
        let layer = LayerOptions {
            prefix: Prefix::new(&self.prefix)?,
            python: self
                .python
                .as_deref()
                .map(|v| v.parse().map_err(|e| anyhow::anyhow!("--python {v}: {e}")))
                .transpose()?,
            compression: if self.gzip {
                LayerCompression::Gzip
            } else {
                LayerCompression::Zstd
            },
        };
        Ok(FactorOptions {
            base: None,
            packages: Vec::new(),
            users: Default::default(),
            layer,
            max_layers: self.max_layers,
            entrypoint: None,
            cmd: None,
        })
    }
}

/// A size as people write it: `20GiB`, `500MB`, `1.5 TiB`, or plain bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("{text:?} is not a size (e.g. 20GiB, 500MB): {e}"))
}
