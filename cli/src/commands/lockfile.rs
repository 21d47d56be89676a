//! `stowage lock` and `stowage sync`: pin images in a lockfile, then make the store
//! hold them (or, offline, say what it lacks).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use stowage::store::Store;
use stowage::{read_lockfile, read_pins, Lockfile, Platform, PullOptions, Reference};

use super::args::{BlobArgs, PeerArgs, ReferrerArgs, RegistryArgs};
use super::policy_args::{self, PolicyArgs, RefsBefore};
use super::progress_for;
use super::pull::referrers_line;
use super::Output;
use tokio::runtime::Runtime;

#[derive(Debug, Args)]
pub struct LockArgs {
    /// Images to pin ([registry/]repository[:tag]); with --update and none given,
    /// every image already in the lockfile.
    references: Vec<String>,
    /// The lockfile to write (kept as it is for images already pinned, unless --update).
    #[arg(short, long, default_value = "stowage.lock")]
    output: PathBuf,
    /// Resolve pinned images again and report which tags moved.
    #[arg(long)]
    update: bool,
    /// The platform to pin (os/arch[/variant]); default: this machine's.
    #[arg(long)]
    platform: Option<Platform>,
    /// Pin the images' referrers too (`[[image.referrer]]`), fetched by digest on sync.
    #[command(flatten)]
    referrers: ReferrerArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn lock(tokio: &Runtime, args: &LockArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let references = args
        .references
        .iter()
        .map(|r| r.parse::<Reference>())
        .collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(
        !references.is_empty() || args.update,
        "name the images to lock, or use --update to re-resolve the lockfile's"
    );
    let mut lockfile = if args.output.exists() {
        read_lockfile(&args.output)?
    } else {
        Lockfile::new()
    };
    let mut registries: Vec<String> = references.iter().map(|r| r.registry.clone()).collect();
    registries.extend(
        lockfile
            .images
            .iter()
            .filter_map(|i| i.reference.parse::<Reference>().ok())
            .map(|r| r.registry),
    );
    let registries: Vec<&str> = registries.iter().map(String::as_str).collect();
    let client = args.registry.client(&registries)?;
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    let moved = tokio.block_on(stowage::lock_with_referrers(
        &client,
        &mut lockfile,
        &references,
        args.update,
        &platform,
        args.referrers.referrers.as_ref(),
    ))?;
    lockfile.write(&args.output)?;
    for m in &moved {
        out.line(format!("moved: {} {} -> {}", m.reference, m.from, m.to));
    }
    out.line(format!(
        "{}: {} images pinned, {} moved",
        args.output.display(),
        lockfile.images.len(),
        moved.len()
    ));
    let referrers: Vec<_> = lockfile
        .images
        .iter()
        .flat_map(|i| {
            i.referrers.iter().map(|r| {
                json!({"image": i.reference, "subject": r.subject, "digest": r.digest,
                       "artifact_type": r.artifact_type})
            })
        })
        .collect();
    if args.referrers.referrers.is_some() {
        out.line(format!("{} referrers pinned", referrers.len()));
    }
    out.json(json!({
        "lockfile": args.output,
        "images": lockfile.images.len(),
        "referrers": referrers,
        "moved": moved.iter().map(|m| json!({"reference": m.reference, "from": m.from, "to": m.to})).collect::<Vec<_>>(),
    }));
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The lockfile: stowage.lock or bv.lock.
    #[arg(default_value = "stowage.lock")]
    lockfile: PathBuf,
    /// Fetch nothing; list what the store lacks.
    #[arg(long)]
    offline: bool,
    /// Seconds a tag's last resolution is trusted when its image is all in the store
    /// (0: ask the registry every time, so a moved tag is seen at once).
    #[arg(long, default_value_t = 0)]
    ttl: u64,
    #[command(flatten)]
    blobs: BlobArgs,
    #[command(flatten)]
    peers: PeerArgs,
    /// Pinned referrers are always fetched; this discovers those of images whose pin
    /// lists none (a bv.lock, a lockfile locked without --referrers).
    #[command(flatten)]
    referrers: ReferrerArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn sync(
    tokio: &Runtime,
    store: &Store,
    args: &SyncArgs,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let pins = read_pins(&args.lockfile)?;
    let client = args
        .registry
        .client_for(pins.iter().map(|p| p.reference.as_str()))?;
    let options = PullOptions {
        offline: args.offline,
        ttl: std::time::Duration::from_secs(args.ttl),
        blobs: args.blobs.options(),
        referrers: args.referrers.referrers.clone(),
        peers: args.peers.peers()?,
        ..PullOptions::default()
    };
    let policy = args.policy.load()?;
    // Only with a policy: the refs to put back if it refuses an image.
    let before = policy
        .as_ref()
        .map(|_| RefsBefore::take(store))
        .transpose()?;
    let mut report = tokio.block_on(stowage::sync(
        client.clone(),
        store,
        &pins,
        &options,
        progress_for(out),
    ));
    if let (Some(policy), Some(before)) = (&policy, &before) {
        let fetch = policy_args::Fetch {
            tokio,
            client: &client,
            offline: args.offline,
        };
        policy_args::check_synced(&fetch, store, policy, &pins, &mut report, before)?;
    }
    for image in &report.images {
        let detail = image
            .detail
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        let line = format!("{} {}{detail}", image.status.as_str(), image.name);
        if !image.status.is_whole() {
            out.problem(line);
        } else {
            out.line(line);
            if !image.referrers.is_empty() {
                out.line(format!("  {}", referrers_line(&image.referrers)));
            }
        }
    }
    out.line(format!(
        "{} images, {} fetched",
        report.images.len(),
        indicatif::HumanBytes(report.bytes_fetched)
    ));
    out.json(serde_json::to_value(&report)?);
    Ok(if report.is_complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
