//! `stowage copy` and `stowage mirror`: push images to another registry.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use stowage::store::{Descriptor, Store};
use stowage::{
    copy as copy_image, pull, pull_many, pull_referrers, ClientConfig, CopyReport, PullOptions,
    PushOptions, Reference, ReferrerFilter,
};

use super::args::{BlobArgs, ReferrerArgs, RegistryArgs};
use super::progress_for;
use super::Output;
use tokio::runtime::Runtime;

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The image: a name in the store, or a registry reference (pulled into the store
    /// first, so nothing is downloaded twice).
    source: String,
    /// Where to push it: [registry/]repository[:tag].
    target: String,
    #[command(flatten)]
    push: PushArgs,
}

#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// A file of references, one a line; `#` starts a comment.
    list: PathBuf,
    /// The registry (host[:port]) to mirror to; each image keeps its repository and tag.
    #[arg(long)]
    to: String,
    #[command(flatten)]
    push: PushArgs,
}

#[derive(Debug, Args)]
struct PushArgs {
    /// One PUT per blob instead of chunked uploads.
    #[arg(long)]
    monolithic: bool,
    #[command(flatten)]
    blobs: BlobArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    /// With a registry source, its referrers are pulled with it; either way, only the
    /// stored referrers of these types are pushed (without the flag: every one the
    /// store holds).
    #[command(flatten)]
    referrers: ReferrerArgs,
}

impl PushArgs {
    /// How to reach `target` (the registry flags, as for a pull) and how to upload.
    fn options(&self, target: &Reference) -> anyhow::Result<(ClientConfig, PushOptions)> {
        let config = self.registry.config(&[&target.registry])?;
        Ok((
            config,
            PushOptions {
                monolithic: self.monolithic,
                referrers: self
                    .referrers
                    .referrers
                    .clone()
                    .unwrap_or(ReferrerFilter::All),
            },
        ))
    }
}

/// The store name of `source`, pulling it first when it is only on a registry.
fn ensure_local(
    tokio: &Runtime,
    store: &Store,
    source: &str,
    args: &PushArgs,
    out: &Output,
) -> anyhow::Result<String> {
    if let Some(stored) = store.resolve_ref(source)? {
        if let Some(filter) = &args.referrers.referrers {
            refresh_referrers(tokio, store, source, &stored, filter, args);
        }
        return Ok(source.to_string());
    }
    let reference: Reference = source
        .parse()
        .with_context(|| format!("{source} is neither an image in the store nor a reference"))?;
    let client = args.registry.client(&[&reference.registry])?;
    let report = tokio.block_on(pull(
        client,
        store,
        &reference,
        &PullOptions {
            blobs: args.blobs.options(),
            referrers: args.referrers.referrers.clone(),
            ..PullOptions::default()
        },
        progress_for(out),
    ))?;
    Ok(report.reference)
}

/// With `--referrers`, a source the store holds has its referrers fetched from the
/// registry it names (the stored image stays as it is). Where that registry cannot be
/// reached, the referrers the store holds are pushed, and a warning says so.
fn refresh_referrers(
    tokio: &Runtime,
    store: &Store,
    source: &str,
    stored: &Descriptor,
    filter: &ReferrerFilter,
    args: &PushArgs,
) {
    let Ok(reference) = source.parse::<Reference>() else {
        return;
    };
    let fetched = args
        .registry
        .client(&[&reference.registry])
        .and_then(|client| {
            Ok(tokio.block_on(pull_referrers(&client, store, &reference, stored, filter))?)
        });
    if let Err(e) = fetched {
        tracing::warn!(
            "{source}: its referrers could not be fetched from the registry ({e:#}); \
             pushing those the store holds"
        );
    }
}

fn print(report: &CopyReport, out: &Output) {
    let referrers = match report.referrers_pushed {
        0 => String::new(),
        n => format!(", {n} referrer(s)"),
    };
    out.line(format!(
        "{} -> {} {}: {} blobs uploaded ({}), {} mounted, {} already there{referrers}",
        report.source,
        report.target,
        report.manifest_digest,
        report.blobs_uploaded,
        indicatif::HumanBytes(report.bytes_uploaded),
        report.blobs_mounted,
        report.blobs_present
    ));
}

pub fn copy(
    tokio: &Runtime,
    store: &Store,
    args: &CopyArgs,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let target: Reference = args.target.parse()?;
    let name = ensure_local(tokio, store, &args.source, &args.push, out)?;
    let (config, options) = args.push.options(&target)?;
    let report = tokio.block_on(copy_image(store, &name, &target, &config, &options))?;
    print(&report, out);
    out.json(serde_json::to_value(&report)?);
    Ok(ExitCode::SUCCESS)
}

pub fn mirror(
    tokio: &Runtime,
    store: &Store,
    args: &MirrorArgs,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.list)
        .with_context(|| format!("reading {}", args.list.display()))?;
    let lines: Vec<&str> = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .collect();
    // Every source the store lacks is pulled first, together (its refs recorded in
    // one update of index.json however long the list), then each image is pushed.
    let mut names: Vec<Option<String>> = Vec::with_capacity(lines.len());
    let mut missing: Vec<(usize, Reference)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(stored) = store.resolve_ref(line)? {
            if let Some(filter) = &args.push.referrers.referrers {
                refresh_referrers(tokio, store, line, &stored, filter, &args.push);
            }
            names.push(Some(line.to_string()));
        } else {
            let reference: Reference = line.parse().with_context(|| {
                format!("{line} is neither an image in the store nor a reference")
            })?;
            missing.push((i, reference));
            names.push(None);
        }
    }
    if !missing.is_empty() {
        let hosts: Vec<&str> = missing.iter().map(|(_, r)| r.registry.as_str()).collect();
        let client = args.push.registry.client(&hosts)?;
        let references: Vec<Reference> = missing.iter().map(|(_, r)| r.clone()).collect();
        let options = PullOptions {
            blobs: args.push.blobs.options(),
            referrers: args.push.referrers.referrers.clone(),
            ..PullOptions::default()
        };
        let pulled = tokio.block_on(pull_many(
            client,
            store,
            &references,
            &options,
            progress_for(out),
        ))?;
        for ((i, _), result) in missing.into_iter().zip(pulled) {
            names[i] = Some(result?.reference);
        }
    }
    let mut reports = Vec::new();
    for (line, name) in lines.iter().zip(names) {
        let name = name.expect("every source is in the store");
        let target = line.parse::<Reference>()?.mirrored_to(&args.to);
        let (config, options) = args.push.options(&target)?;
        let report = tokio.block_on(copy_image(store, &name, &target, &config, &options))?;
        print(&report, out);
        reports.push(report);
    }
    out.json(json!({ "images": reports }));
    Ok(ExitCode::SUCCESS)
}
