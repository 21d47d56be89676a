//! `stowage pull` and `stowage resolve`: the registry side of the command line.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use stowage::store::{parse_digest, Store};
use stowage::{pull as pull_image, Expectations, Platform, PullOptions, Reference};

use super::args::{BlobArgs, PeerArgs, ReferrerArgs, RegistryArgs};
use super::policy_args::{self, PolicyArgs, RefsBefore};
use super::{progress_for, Output};
use tokio::runtime::Runtime;

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
    peers: PeerArgs,
    #[command(flatten)]
    referrers: ReferrerArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn pull(
    tokio: &Runtime,
    store: &Store,
    args: &PullArgs,
    out: &Output,
) -> anyhow::Result<ExitCode> {
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
        referrers: args.referrers.referrers.clone(),
        peers: args.peers.peers()?,
        ..PullOptions::default()
    };
    if let Some(platform) = &args.platform {
        options.platform = platform.clone();
    }
    let client = args.registry.client(&[&reference.registry])?;
    let progress = progress_for(out);
    let policy = args.policy.load()?;
    // Only with a policy: the refs to put back if it refuses the image.
    let before = policy
        .as_ref()
        .map(|_| RefsBefore::take(store))
        .transpose()?;
    let report = tokio.block_on(pull_image(
        client.clone(),
        store,
        &reference,
        &options,
        progress,
    ))?;
    if let (Some(policy), Some(before)) = (&policy, &before) {
        let fetch = policy_args::Fetch {
            tokio,
            client: &client,
            offline: args.offline,
        };
        let pulled = policy_args::Pulled {
            reference: &reference,
            name: &report.reference,
            manifest_digest: &report.manifest_digest,
            index_digest: report.index_digest.as_deref(),
        };
        policy_args::check_pulled(&fetch, store, policy, &pulled, before)?;
    }
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
    if let Some(referrers) = &report.referrers {
        out.line(referrers_line(referrers));
    }
    out.json(serde_json::to_value(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// The human line for the referrers a pull or sync carried: how many, of which types.
pub fn referrers_line(referrers: &[stowage::PulledReferrer]) -> String {
    let mut types: Vec<&str> = referrers
        .iter()
        .map(|r| r.artifact_type.as_deref().unwrap_or("(no artifact type)"))
        .collect();
    types.sort_unstable();
    types.dedup();
    match referrers.len() {
        0 => "referrers: none found".to_string(),
        n => format!("referrers: {n} stored ({})", types.join(", ")),
    }
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

pub fn resolve(tokio: &Runtime, args: &ResolveArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let reference: Reference = args.reference.parse()?;
    let client = args.registry.client(&[&reference.registry])?;
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    let resolved = tokio.block_on(stowage::resolve_digest(&client, &reference, &platform))?;
    out.line(&resolved.manifest_digest);
    out.json(json!({
        "reference": reference.to_string(),
        "manifest_digest": resolved.manifest_digest.to_string(),
        "index_digest": resolved.index_digest.map(|d| d.to_string()),
        "platform": platform.to_string(),
    }));
    Ok(ExitCode::SUCCESS)
}
