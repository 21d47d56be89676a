//! `stowage ensure-layers` and `stowage assemble`: fetch only the layers a node lacks,
//! then build the image from local layers with no network.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use serde_json::json;
use stowage::store::{parse_digest, Descriptor, MediaType, Store};
use stowage::{
    assemble_image, base_image, ensure_layers, fetch_packages, read_pins, AssembleLayer,
    EnsureReport, PackageSource, PullOptions, Reference, RunConfig,
};

use super::args::{BlobArgs, PackageLayerArgs, RegistryArgs};
use super::progress_for;
use super::Output;
use tokio::runtime::Runtime;

#[derive(Debug, Args)]
pub struct EnsureArgs {
    /// The repository to fetch from ([registry/]repository; a tag is ignored).
    #[arg(required_unless_present = "lock")]
    repository: Option<String>,
    /// Layers as DIGEST:SIZE.
    #[arg(requires = "repository")]
    layers: Vec<String>,
    /// Every layer every image of this lockfile (stowage.lock or bv.lock) pins, each
    /// from its own image's repository.
    #[arg(long, value_name = "LOCKFILE", conflicts_with = "repository")]
    lock: Option<PathBuf>,
    #[command(flatten)]
    blobs: BlobArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn ensure(
    tokio: &Runtime,
    store: &Store,
    args: &EnsureArgs,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let mut jobs: Vec<(Reference, Vec<Descriptor>)> = Vec::new();
    if let Some(lock) = &args.lock {
        for pin in read_pins(lock)? {
            let layers = pin.layers.iter().map(|l| l.descriptor()).collect();
            jobs.push((pin.reference.parse()?, layers));
        }
    } else if let Some(repository) = &args.repository {
        let layers = args
            .layers
            .iter()
            .map(|l| {
                let (digest, size) = l
                    .rsplit_once(':')
                    .with_context(|| format!("{l}: a layer is DIGEST:SIZE"))?;
                let size: u64 = size
                    .parse()
                    .with_context(|| format!("{l}: a layer is DIGEST:SIZE"))?;
                Ok(Descriptor::new(
                    MediaType::Other("application/octet-stream".into()),
                    size,
                    parse_digest(digest)?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        jobs.push((repository.parse()?, layers));
    }
    let registries: Vec<&str> = jobs.iter().map(|(r, _)| r.registry.as_str()).collect();
    let client = args.registry.client(&registries)?;
    let mut total = EnsureReport::default();
    for (reference, layers) in &jobs {
        let report = tokio.block_on(ensure_layers(
            client.clone(),
            store,
            reference,
            layers,
            &PullOptions {
                blobs: args.blobs.options(),
                ..PullOptions::default()
            },
            progress_for(out),
        ))?;
        total.add(&report);
    }
    out.line(format!(
        "{} layers: fetched {} ({}), {} already present",
        total.layers,
        total.fetched,
        indicatif::HumanBytes(total.bytes_fetched),
        indicatif::HumanBytes(total.bytes_present)
    ));
    out.json(serde_json::to_value(&total)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct AssembleArgs {
    /// The name to record the image under in the store.
    name: String,
    /// A stored image whose layers come first and whose run configuration (os,
    /// architecture, env, entrypoint, cmd) the new image starts from.
    #[arg(long)]
    base: Option<String>,
    /// A JSON file listing the layers to add: [{"digest", "size", "media_type",
    /// "diff_id"?, "annotations"?}].
    #[arg(long, value_name = "FILE")]
    layers: Option<PathBuf>,
    /// Add to the environment (NAME=VALUE); repeatable.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// The entrypoint, as a JSON array or one word.
    #[arg(long)]
    entrypoint: Option<String>,
    /// The command, as a JSON array or one word.
    #[arg(long)]
    cmd: Option<String>,
}

#[derive(Deserialize)]
struct LayerSpec {
    digest: String,
    size: u64,
    media_type: String,
    diff_id: Option<String>,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

fn words(value: &str) -> Vec<String> {
    serde_json::from_str(value).unwrap_or_else(|_| vec![value.to_string()])
}

pub fn assemble(store: &Store, args: &AssembleArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let (mut run, mut layers) = match &args.base {
        Some(base) => base_image(store, base)?,
        None => (
            RunConfig {
                os: "linux".into(),
                architecture: stowage::Platform::host().architecture,
                ..RunConfig::default()
            },
            Vec::new(),
        ),
    };
    if let Some(path) = &args.layers {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let specs: Vec<LayerSpec> = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a list of layers", path.display()))?;
        for spec in specs {
            let mut descriptor = Descriptor::new(
                MediaType::from(spec.media_type.as_str()),
                spec.size,
                parse_digest(&spec.digest)?,
            );
            if !spec.annotations.is_empty() {
                descriptor.set_annotations(Some(spec.annotations));
            }
            layers.push(AssembleLayer {
                descriptor,
                diff_id: spec.diff_id.as_deref().map(parse_digest).transpose()?,
            });
        }
    }
    run.env.extend(args.env.iter().cloned());
    if let Some(entrypoint) = &args.entrypoint {
        run.entrypoint = Some(words(entrypoint));
    }
    if let Some(cmd) = &args.cmd {
        run.cmd = Some(words(cmd));
    }
    let descriptor = assemble_image(store, &args.name, &run, &layers)?;
    out.line(format!(
        "{} {} ({} layers)",
        args.name,
        descriptor.digest(),
        layers.len()
    ));
    out.json(json!({
        "name": args.name,
        "manifest_digest": descriptor.digest().to_string(),
        "layers": layers.len(),
    }));
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct FactorArgs {
    /// The name to record the image under in the store.
    name: String,
    /// Conda packages, one layer each: .conda or .tar.bz2 files, or package artifacts
    /// on a registry (docker://REF, oci://REF, oci://HOST/CHANNEL/SUBDIR/NAME-VERSION-
    /// BUILD.conda, or HOST/REPO:TAG naming its registry host).
    #[arg(required = true, value_name = "PKG")]
    packages: Vec<String>,
    /// A stored image to build on: its layers first, its run configuration kept.
    #[arg(long)]
    base: Option<String>,
    #[command(flatten)]
    layers: PackageLayerArgs,
    /// The entrypoint, as a JSON array or one word.
    #[arg(long)]
    entrypoint: Option<String>,
    /// The command, as a JSON array or one word.
    #[arg(long)]
    cmd: Option<String>,
    #[command(flatten)]
    blobs: BlobArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn factor(
    tokio: &Runtime,
    store: &Store,
    args: &FactorArgs,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    let mut artifacts = Vec::new();
    for arg in &args.packages {
        match PackageSource::parse(arg)? {
            PackageSource::File(path) => files.push(path),
            PackageSource::Registry(package) => artifacts.push(package),
        }
    }
    let options = stowage::FactorOptions {
        base: args.base.clone(),
        packages: files,
        entrypoint: args.entrypoint.as_deref().map(words),
        cmd: args.cmd.as_deref().map(words),
        ..args.layers.options()?
    };
    // The package blobs fetched are referenced by no ref: keep gc off them until the
    // image is recorded.
    let _lease = store.lease()?;
    let mut fetched_report = None;
    let mut opened = Vec::new();
    if !artifacts.is_empty() {
        let registries: Vec<&str> = artifacts
            .iter()
            .map(|a| a.reference.registry.as_str())
            .collect();
        let client = args.registry.client(&registries)?;
        let (fetched, report) = tokio.block_on(fetch_packages(
            client,
            store,
            &artifacts,
            &PullOptions {
                blobs: args.blobs.options(),
                ..PullOptions::default()
            },
            progress_for(out),
        ))?;
        out.line(format!(
            "{} registry packages: fetched {} in {} blobs, {} already present",
            report.packages,
            indicatif::HumanBytes(report.bytes_fetched),
            report.blobs_fetched,
            indicatif::HumanBytes(report.bytes_present)
        ));
        for package in &fetched {
            opened.push(package.open(store)?);
        }
        fetched_report = Some(report);
    }
    let report = stowage::factor_with(store, &args.name, &options, opened)?;
    out.line(format!(
        "{} {}: {} packages in {} layers ({} new){}",
        report.name,
        report.manifest_digest,
        report.packages,
        report.layers,
        report.layers_written,
        if report.grouped.is_empty() {
            String::new()
        } else {
            format!(", {} grouped into one layer", report.grouped.len())
        }
    ));
    let mut summary = serde_json::to_value(&report)?;
    if let Some(fetched) = fetched_report {
        summary["registry_packages"] = serde_json::to_value(&fetched)?;
    }
    out.json(summary);
    Ok(ExitCode::SUCCESS)
}
