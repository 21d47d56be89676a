//! `stowage load`, `stowage run` and `stowage warm`: hand stored images to podman or
//! docker.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use stowage::lock::lockfile::read_pins;
use stowage::oci::reference::Reference;
use stowage::pull::{pull as pull_image, PullOptions};
use stowage::runtime::{
    by_name, runtime_name, ContainerRuntime, LoadedImage, RunSpec, RuntimeInfo, StoredImage,
};
use stowage::store::Store;

use super::args::{BlobArgs, RegistryArgs};
use super::Output;
use super::{progress_for, runtime as async_runtime};

/// Which runtime to hand images to.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// The container runtime: podman or docker. podman honours STOWAGE_PODMAN_ARGS
    /// (global options, e.g. --root/--runroot), STOWAGE_PODMAN_RUNTIME (default runc)
    /// and STOWAGE_PODMAN_RUN_ARGS; docker honours STOWAGE_DOCKER_ARGS.
    #[arg(
        long,
        value_name = "RUNTIME",
        env = "STOWAGE_RUNTIME",
        default_value = "podman"
    )]
    into: String,
}

impl RuntimeArgs {
    /// The runtime, once it has answered its health check.
    fn open(&self) -> anyhow::Result<(Box<dyn ContainerRuntime>, RuntimeInfo)> {
        let runtime = by_name(&self.into)?;
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
}

/// Streams a stored image into the runtime and checks it arrived.
pub fn load(store: &Store, args: &LoadArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let (runtime, info) = args.runtime.open()?;
    let image = StoredImage::open(store, &args.reference)?;
    let name = runtime_name(&image.store_ref);
    let loaded = runtime.load(store, &image, &name)?;
    out.line(loaded_line(&image, runtime.name(), &loaded));
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
    /// The command to run instead of the image's own (after `--`).
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Loads the image unless the runtime holds it already, then runs it; the exit
/// status is the container's.
pub fn run(store: &Store, args: &RunArgs, out: &Output) -> anyhow::Result<ExitCode> {
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
    let code = runtime.run(&RunSpec {
        image: name,
        command: args.command.clone(),
    })?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
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
    registry: RegistryArgs,
}

/// One image of a warm: its name in the store, or why it is not there.
struct Wanted {
    label: String,
    store_ref: Result<String, String>,
    /// The manifest digest a lockfile pins.
    pinned: Option<String>,
}

/// Syncs (or pulls) the images into the store, then loads each one the runtime
/// does not already hold.
pub fn warm(store: &Store, args: &WarmArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let (runtime, info) = args.runtime.open()?;
    let wanted = fetch(store, args, out)?;
    let mut reports = Vec::new();
    let (mut loaded, mut skipped, mut failed) = (0, 0, 0);
    for want in wanted {
        let result = want
            .store_ref
            .and_then(|name| warm_one(store, runtime.as_ref(), &name, want.pinned.as_deref()));
        let (status, report) = match result {
            Ok((true, image)) => {
                skipped += 1;
                out.line(format!(
                    "skipped {}: {} already holds {} ({})",
                    want.label,
                    runtime.name(),
                    image.name,
                    image.id
                ));
                ("skipped", json!(image))
            }
            Ok((false, image)) => {
                loaded += 1;
                out.line(format!(
                    "loaded {} into {} as {} ({}, {:.2} s)",
                    want.label,
                    runtime.name(),
                    image.name,
                    image.id,
                    image.seconds
                ));
                ("loaded", json!(image))
            }
            Err(detail) => {
                failed += 1;
                out.problem(format!("failed {}: {detail}", want.label));
                ("failed", json!({ "detail": detail }))
            }
        };
        let mut report = report;
        report["reference"] = json!(want.label);
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

/// Pulls the references, or syncs the lockfile; says where each image is stored.
fn fetch(store: &Store, args: &WarmArgs, out: &Output) -> anyhow::Result<Vec<Wanted>> {
    let options = PullOptions {
        offline: args.offline,
        blobs: args.blobs.options(),
        ..PullOptions::default()
    };
    if let Some(lock) = &args.lock {
        let pins = read_pins(lock)?;
        let registries = registries(pins.iter().map(|p| p.reference.as_str()));
        let registries: Vec<&str> = registries.iter().map(String::as_str).collect();
        let client = args.registry.client(&registries)?;
        let report = async_runtime()
            .context("sync")?
            .block_on(stowage::lock::sync::sync(
                client,
                store,
                &pins,
                &options,
                progress_for(out),
            ));
        return Ok(pins
            .iter()
            .zip(report.images)
            .map(|(pin, synced)| Wanted {
                label: pin.name.clone(),
                store_ref: if synced.status.is_whole() {
                    pin.reference
                        .parse::<Reference>()
                        .map(|r| r.to_string())
                        .map_err(|e| e.to_string())
                } else {
                    Err(format!(
                        "{} in the store{}",
                        synced.status.as_str(),
                        synced.detail.map(|d| format!(": {d}")).unwrap_or_default()
                    ))
                },
                pinned: Some(pin.manifest.as_ref().unwrap_or(&pin.digest).to_string()),
            })
            .collect());
    }
    let registries = registries(args.references.iter().map(String::as_str));
    let registries: Vec<&str> = registries.iter().map(String::as_str).collect();
    let client = args.registry.client(&registries)?;
    let tokio = async_runtime()?;
    let mut wanted = Vec::new();
    for reference in &args.references {
        // Offline, a name the store holds as it is needs no pull (`fixture`).
        if args.offline && store.resolve_ref(reference)?.is_some() {
            wanted.push(Wanted {
                label: reference.clone(),
                store_ref: Ok(reference.clone()),
                pinned: None,
            });
            continue;
        }
        let store_ref = match reference.parse::<Reference>() {
            Ok(parsed) => tokio
                .block_on(pull_image(
                    client.clone(),
                    store,
                    &parsed,
                    &options,
                    progress_for(out),
                ))
                .map(|report| report.reference)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        wanted.push(Wanted {
            label: reference.clone(),
            store_ref,
            pinned: None,
        });
    }
    Ok(wanted)
}

fn registries<'a>(references: impl Iterator<Item = &'a str>) -> Vec<String> {
    references
        .filter_map(|r| r.parse::<Reference>().ok())
        .map(|r| r.registry)
        .collect()
}

/// Loads one stored image unless the runtime holds it; `true` when skipped.
fn warm_one(
    store: &Store,
    runtime: &dyn ContainerRuntime,
    store_ref: &str,
    pinned: Option<&str>,
) -> Result<(bool, LoadedImage), String> {
    let image = StoredImage::open(store, store_ref).map_err(|e| e.to_string())?;
    if let Some(pinned) = pinned {
        if image.manifest.digest().to_string() != pinned {
            return Err(format!(
                "the store's {store_ref} is {}, not the pinned {pinned}",
                image.manifest.digest()
            ));
        }
    }
    let name = runtime_name(&image.store_ref);
    let id = image.config.digest().to_string();
    if runtime.is_locally_available(&name, &id) {
        return Ok((
            true,
            LoadedImage {
                name,
                id,
                bytes: 0,
                seconds: 0.0,
            },
        ));
    }
    let loaded = runtime
        .load(store, &image, &name)
        .map_err(|e| e.to_string())?;
    Ok((false, loaded))
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
