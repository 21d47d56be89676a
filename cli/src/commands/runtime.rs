//! `stowage load`, `stowage run` and `stowage warm`: hand stored images to podman,
//! docker or containerd.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use stowage::store::Store;
use stowage::{
    by_name, parse_env, pull_targets, read_pins, runtime_name, sync_targets, warm_one,
    ContainerRuntime, Containerd, GpuRequest, LoadedImage, Mount, PullOptions, RunSpec,
    RuntimeInfo, StoredImage, WarmTarget, Warmed,
};
use tokio::runtime::Runtime;

use super::args::{BlobArgs, PeerArgs, RegistryArgs};
use super::policy_args::{self, PolicyArgs};
use super::progress_for;
use super::Output;

/// Which runtime to hand images to.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// The container runtime: podman, docker or containerd. podman honours
    /// STOWAGE_PODMAN_ARGS (global options, e.g. --root/--runroot),
    /// STOWAGE_PODMAN_RUNTIME (default runc) and STOWAGE_PODMAN_RUN_ARGS; docker
    /// honours STOWAGE_DOCKER_ARGS; containerd is driven through `ctr`.
    #[arg(
        long,
        value_name = "RUNTIME",
        env = "STOWAGE_RUNTIME",
        default_value = "podman"
    )]
    into: String,
    /// containerd's socket (with --into containerd).
    #[arg(
        long,
        value_name = "SOCKET",
        env = "CONTAINERD_ADDRESS",
        default_value = Containerd::DEFAULT_ADDRESS
    )]
    containerd_address: PathBuf,
    /// The containerd namespace images go into (with --into containerd); kubelet
    /// reads k8s.io.
    #[arg(
        long,
        value_name = "NAMESPACE",
        env = "CONTAINERD_NAMESPACE",
        default_value = Containerd::DEFAULT_NAMESPACE
    )]
    namespace: String,
}

impl RuntimeArgs {
    /// The runtime `--into` names.
    fn runtime(&self) -> anyhow::Result<Box<dyn ContainerRuntime>> {
        Ok(if self.into == "containerd" {
            Box::new(Containerd::new(&self.containerd_address, &self.namespace))
        } else {
            by_name(&self.into)?
        })
    }

    /// The runtime, once it has answered its health check.
    fn open(&self) -> anyhow::Result<(Box<dyn ContainerRuntime>, RuntimeInfo)> {
        let runtime = self.runtime()?;
        let info = runtime.health_check()?;
        Ok((runtime, info))
    }
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The image's name in the store (as `ls` shows it).
    reference: String,
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// Streams a stored image into the runtime and checks it arrived.
pub fn load(store: &Store, args: &LoadArgs, out: &Output) -> anyhow::Result<ExitCode> {
    policy_args::check_stored(store, &args.policy, &args.reference)?;
    let runtime = args.runtime.runtime()?;
    // No health check before the load: `podman info` starts runc, conmon and the
    // rest to ask their versions (0.19 s here, as long as loading a factored image
    // podman mostly holds). It runs when the load failed, whose error it may explain
    // ("docker is not running" comes before "no image named x"), and for --json,
    // whose report carries its answer.
    let attempt = StoredImage::open(store, &args.reference)
        .map_err(anyhow::Error::from)
        .and_then(|image| {
            let name = runtime_name(&image.store_ref);
            let loaded = runtime.load(store, &image, &name)?;
            Ok((image, loaded))
        });
    let (image, loaded) = match attempt {
        Ok(done) => done,
        Err(error) => {
            runtime.health_check()?;
            return Err(error);
        }
    };
    out.line(loaded_line(&image, runtime.name(), &loaded));
    if !out.wants_json() {
        return Ok(ExitCode::SUCCESS);
    }
    let info = runtime.health_check()?;
    out.json(json!({
        "reference": image.store_ref,
        "runtime": info,
        "name": loaded.name,
        "image_id": loaded.id,
        "bytes": loaded.bytes,
        "seconds": loaded.seconds,
    }));
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The image's name in the store (as `ls` shows it).
    reference: String,
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Bind a host path into the container (HOST:CONTAINER[:ro|:rw]); a relative
    /// HOST is taken from the current directory, and it must exist.
    #[arg(short = 'v', long = "volume", value_name = "HOST:CTR[:ro]", value_parser = parse_mount)]
    volumes: Vec<Mount>,
    /// Set an environment variable in the container (KEY=VALUE, or KEY to pass on
    /// this one's value).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_variable)]
    env: Vec<(String, String)>,
    /// The working directory inside the container.
    #[arg(short = 'w', long, value_name = "DIR")]
    workdir: Option<String>,
    /// The user (and group) to run as inside the container: NAME|UID[:GROUP|GID].
    #[arg(short = 'u', long, value_name = "USER")]
    user: Option<String>,
    /// Hand GPUs to the container: `all`, or device indexes like 0,1 (podman asks
    /// for CDI devices nvidia.com/gpu=..., docker for --gpus).
    #[arg(long, value_name = "all|DEVICES")]
    gpus: Option<GpuRequest>,
    /// `none` runs the container with no network at all.
    #[arg(long, value_name = "none", value_parser = ["none"])]
    network: Option<String>,
    /// The command to run instead of the image's own (after `--`).
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

/// `-v`: a relative host path is made absolute here (docker would take it for a
/// volume name), and a missing one is refused (docker would create it as root).
fn parse_mount(given: &str) -> Result<Mount, String> {
    let (host, rest) = given.split_once(':').unwrap_or((given, ""));
    let host = std::path::absolute(host).map_err(|e| format!("{given}: {e}"))?;
    if !host.exists() {
        return Err(format!("no {} on this host", host.display()));
    }
    format!("{}:{rest}", host.display())
        .parse()
        .map_err(|e: stowage::RunSpecError| e.to_string())
}

/// `-e`: KEY=VALUE, or KEY alone for this process's value of KEY.
fn parse_variable(given: &str) -> Result<(String, String), String> {
    if given.contains('=') {
        return parse_env(given).map_err(|e| e.to_string());
    }
    match std::env::var(given) {
        Ok(value) => Ok((given.to_string(), value)),
        Err(_) => Err(format!(
            "{given} is not set here, so there is no value to pass on"
        )),
    }
}

/// Loads the image unless the runtime holds it already, then runs it; the exit
/// status is the container's, and its output is stowage's own.
pub fn run(store: &Store, args: &RunArgs, out: &Output) -> anyhow::Result<ExitCode> {
    policy_args::check_stored(store, &args.policy, &args.reference)?;
    let (runtime, _) = args.runtime.open()?;
    let image = StoredImage::open(store, &args.reference)?;
    let name = runtime_name(&image.store_ref);
    let id = image.config.digest().to_string();
    if !runtime.is_locally_available(&name, &id) {
        let loaded = runtime.load(store, &image, &name)?;
        // The container's output follows on stdout: say this on stderr.
        if out.interactive() {
            eprintln!("{}", loaded_line(&image, runtime.name(), &loaded));
        }
    }
    let outcome = runtime.run(&RunSpec {
        image: name,
        command: args.command.clone(),
        mounts: args.volumes.clone(),
        env: args.env.clone(),
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        network_off: args.network.is_some(),
        gpu: args.gpus.clone(),
        capture: false,
    })?;
    // An exit code beyond a byte (only from a signal's 128 + n) is a failure.
    Ok(ExitCode::from(u8::try_from(outcome.exit_code).unwrap_or(1)))
}

#[derive(Debug, Args)]
pub struct WarmArgs {
    /// Images to pull and load ([registry/]repository[:tag][@digest]).
    #[arg(required_unless_present = "lock", conflicts_with = "lock")]
    references: Vec<String>,
    /// Sync and load every image this lockfile (stowage.lock or bv.lock) pins.
    #[arg(long, value_name = "FILE")]
    lock: Option<PathBuf>,
    /// Fetch nothing: load what the store already holds.
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    blobs: BlobArgs,
    #[command(flatten)]
    peers: PeerArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Syncs (or pulls) the images into the store, then loads each one the runtime
/// does not already hold.
pub fn warm(
    tokio: &Runtime,
    store: &Store,
    args: &WarmArgs,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let (runtime, info) = args.runtime.open()?;
    let targets = targets(tokio, store, args, out)?;
    let mut reports = Vec::new();
    let (mut loaded, mut skipped, mut failed) = (0, 0, 0);
    for target in targets {
        let (status, mut report) = match warm_one(store, runtime.as_ref(), &target) {
            Ok(Warmed {
                skipped: true,
                image,
            }) => {
                skipped += 1;
                out.line(format!(
                    "skipped {}: {} already holds {} ({})",
                    target.label,
                    runtime.name(),
                    image.name,
                    image.id
                ));
                ("skipped", json!(image))
            }
            Ok(Warmed { image, .. }) => {
                loaded += 1;
                out.line(format!(
                    "loaded {} into {} as {} ({}, {:.2} s)",
                    target.label,
                    runtime.name(),
                    image.name,
                    image.id,
                    image.seconds
                ));
                ("loaded", json!(image))
            }
            Err(e) => {
                failed += 1;
                out.problem(format!("failed {}: {e}", target.label));
                ("failed", json!({ "detail": e.to_string() }))
            }
        };
        report["reference"] = json!(target.label);
        report["status"] = json!(status);
        reports.push(report);
    }
    out.line(format!(
        "{}: {loaded} loaded, {skipped} skipped, {failed} failed",
        runtime.name()
    ));
    out.json(json!({
        "runtime": info,
        "images": reports,
        "loaded": loaded,
        "skipped": skipped,
        "failed": failed,
    }));
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Syncs the lockfile, or pulls the references.
fn targets(
    tokio: &Runtime,
    store: &Store,
    args: &WarmArgs,
    out: &Output,
) -> anyhow::Result<Vec<WarmTarget>> {
    let options = PullOptions {
        offline: args.offline,
        blobs: args.blobs.options(),
        peers: args.peers.peers()?,
        ..PullOptions::default()
    };
    if let Some(lock) = &args.lock {
        let pins = read_pins(lock)?;
        let client = args
            .registry
            .client_for(pins.iter().map(|p| p.reference.as_str()))?;
        return Ok(tokio.block_on(sync_targets(
            client,
            store,
            &pins,
            &options,
            progress_for(out),
        )));
    }
    let client = args
        .registry
        .client_for(args.references.iter().map(String::as_str))?;
    Ok(tokio.block_on(pull_targets(
        client,
        store,
        &args.references,
        &options,
        progress_for(out),
    ))?)
}

fn loaded_line(image: &StoredImage, runtime: &str, loaded: &LoadedImage) -> String {
    format!(
        "loaded {} into {runtime} as {} ({}): {} streamed in {:.2} s",
        image.store_ref,
        loaded.name,
        loaded.id,
        indicatif::HumanBytes(loaded.bytes),
        loaded.seconds
    )
}
