//! Command-line arguments and dispatch. Every command is a call into the library; this
//! layer only parses, prints (human lines or `--json`), and picks the exit status.

mod archive;
mod args;
mod blobs;
mod copy;
mod factor_set;
mod factored;
mod lockfile;
mod maintain;
mod policy_args;
mod pull;
mod runtime;
mod serve;
mod unpack;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use stowage::store::Store;
use stowage::{ProgressReporter, Silent, TerminalProgress};

/// Daemonless OCI registry puller and content-addressed layer store.
#[derive(Debug, Parser)]
#[command(name = "stowage", version, about)]
pub struct Cli {
    /// The store directory (an OCI image layout).
    #[arg(long, global = true, env = "STOWAGE_STORE")]
    store: Option<PathBuf>,

    /// Print a JSON summary for scripts instead of human lines.
    #[arg(long, global = true)]
    json: bool,

    /// Only errors (wins over --verbose).
    #[arg(short, long, global = true)]
    quiet: bool,

    /// More detail (repeat for debug logs); before the command only: after `run`, `-v`
    /// binds a volume, as in podman and docker.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pull an image from a registry into the store.
    Pull(pull::PullArgs),
    /// Print the manifest digest a reference resolves to (asks the registry).
    Resolve(pull::ResolveArgs),
    /// Pin images (platform manifest and every layer) in a lockfile.
    Lock(lockfile::LockArgs),
    /// Make the store hold everything a lockfile (stowage.lock or bv.lock) pins.
    Sync(lockfile::SyncArgs),
    /// Write images and only the blobs they need as an OCI layout (a tar archive or a
    /// directory) to carry to an air-gapped store.
    Export(archive::ExportArgs),
    /// Add the images of an OCI layout (tar archive or directory) to the store, every
    /// blob verified before any ref is recorded.
    Import(archive::ImportArgs),
    /// Push an image (from the store, or pulled through it) to a registry, uploading
    /// only the blobs the target lacks.
    Copy(copy::CopyArgs),
    /// Push every image of a list to one registry.
    Mirror(copy::MirrorArgs),
    /// Fetch only the listed layers the store lacks.
    EnsureLayers(factored::EnsureArgs),
    /// Build an image from layers already in the store (no network).
    Assemble(factored::AssembleArgs),
    /// Build a factored image: a base image plus one layer per conda package.
    Factor(factored::FactorArgs),
    /// Build the factored images of a set file together: packages only one image
    /// uses share one layer of that image's.
    FactorSet(factor_set::FactorSetArgs),
    /// Add a blob from a file or stdin, checked against its expected digest and size.
    Ingest(blobs::IngestArgs),
    /// Re-hash stored blobs, quarantine corrupt ones, and report what refs lack.
    Verify(maintain::VerifyArgs),
    /// Remove blobs that no ref reaches.
    Gc(maintain::GcArgs),
    /// Show how much room the store takes.
    Du,
    /// List the images in the store.
    Ls,
    /// Serve the store as a read-only registry (GET/HEAD, Range) on a local address.
    Serve(serve::ServeArgs),
    /// Stream a stored image into podman or docker (`--into`), and check it arrived.
    Load(runtime::LoadArgs),
    /// Run a stored image in podman or docker, loading it first if the runtime lacks it.
    Run(runtime::RunArgs),
    /// Unpack a stored image into an empty directory as a root filesystem (no runtime).
    Unpack(unpack::UnpackArgs),
    /// Pull or sync images, then load each one the runtime does not already hold.
    Warm(runtime::WarmArgs),
    /// Show a stored image: platform, layers, entrypoint (no network).
    Inspect {
        /// The image's name in the store (as `ls` shows it).
        name: String,
    },
}

impl Cli {
    /// Logs go to stderr through `tracing`; `RUST_LOG` overrides the level.
    pub fn init_logging(&self) {
        let level = match (self.quiet, self.verbose) {
            (true, _) => "error",
            (_, 0) => "warn",
            (_, 1) => "info",
            _ => "debug",
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
        // Colours only on a terminal: on a pipe or in a log file they are noise.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }

    fn open_store(&self) -> anyhow::Result<Store> {
        let dir = match &self.store {
            Some(dir) => dir.clone(),
            None => default_store_dir()?,
        };
        Store::open(&dir).with_context(|| format!("opening the store at {}", dir.display()))
    }
}

/// Where output goes: human lines, or one JSON document at the end.
pub(crate) struct Output {
    json: bool,
    quiet: bool,
}

impl Output {
    /// A human line (suppressed by `--json` and `-q`).
    pub fn line(&self, text: impl AsRef<str>) {
        if !self.json && !self.quiet {
            println!("{}", text.as_ref());
        }
    }

    /// A line that matters even with `-q` (a problem found); suppressed by `--json`.
    pub fn problem(&self, text: impl AsRef<str>) {
        if !self.json {
            println!("{}", text.as_ref());
        }
    }

    /// Whether human progress may be drawn (no `--json`, no `-q`).
    pub fn interactive(&self) -> bool {
        !self.json && !self.quiet
    }

    /// Whether the output is one JSON document (`--json`).
    pub fn wants_json(&self) -> bool {
        self.json
    }

    /// The JSON summary (only with `--json`).
    pub fn json(&self, value: serde_json::Value) {
        if self.json {
            println!("{value}");
        }
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let out = Output {
        json: cli.json,
        quiet: cli.quiet,
    };
    // One async runtime for the whole command, dropped (waiting for its blocking
    // tasks) when the command is done.
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let tokio = &tokio;
    match &cli.command {
        Command::Resolve(args) => return pull::resolve(tokio, args, &out),
        Command::Lock(args) => return lockfile::lock(tokio, args, &out),
        _ => {}
    }
    let store = cli.open_store()?;
    match &cli.command {
        Command::Pull(args) => pull::pull(tokio, &store, args, &out),
        Command::Resolve(_) | Command::Lock(_) => unreachable!("handled above, without a store"),
        Command::Sync(args) => lockfile::sync(tokio, &store, args, &out),
        Command::Export(args) => archive::export(&store, args, &out),
        Command::Import(args) => archive::import(&store, args, &out),
        Command::Copy(args) => copy::copy(tokio, &store, args, &out),
        Command::EnsureLayers(args) => factored::ensure(tokio, &store, args, &out),
        Command::Assemble(args) => factored::assemble(&store, args, &out),
        Command::Factor(args) => factored::factor(tokio, &store, args, &out),
        Command::FactorSet(args) => factor_set::factor_set(&store, args, &out),
        Command::Mirror(args) => copy::mirror(tokio, &store, args, &out),
        Command::Ingest(args) => blobs::ingest(&store, args, &out),
        Command::Verify(args) => maintain::verify(&store, args, &out),
        Command::Gc(args) => maintain::gc(&store, args, &out),
        Command::Du => maintain::du(&store, &out),
        Command::Ls => maintain::ls(&store, &out),
        Command::Serve(args) => serve::serve(tokio, &store, args, &out),
        Command::Load(args) => runtime::load(&store, args, &out),
        Command::Run(args) => runtime::run(&store, args, &out),
        Command::Unpack(args) => unpack::unpack_image(&store, args, &out),
        Command::Warm(args) => runtime::warm(tokio, &store, args, &out),
        Command::Inspect { name } => maintain::inspect(&store, name, &out),
    }
}

/// `$XDG_DATA_HOME/stowage`, else `~/.local/share/stowage`.
fn default_store_dir() -> anyhow::Result<PathBuf> {
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(data).join("stowage"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("no --store given and neither STOWAGE_STORE, XDG_DATA_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/stowage"))
}

/// Bars on a terminal; nothing on a pipe, with `--json` or with `-q`.
pub fn progress_for(out: &Output) -> Arc<dyn ProgressReporter> {
    if out.interactive() && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        Arc::new(TerminalProgress::default())
    } else {
        Arc::new(Silent)
    }
}
