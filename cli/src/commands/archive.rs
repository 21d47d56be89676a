//! `stowage export` and `stowage import`: carry images to an air-gapped store as an
//! OCI layout (a tar archive or a directory).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use indicatif::HumanBytes;
use serde_json::json;
use stowage::store::Store;
use stowage::{read_pins, ArchiveFormat, ExportReport, ImportReport};

use super::policy_args::{self, PolicyArgs, RefsBefore};
use super::Output;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Images to export, named as `stowage ls` shows them.
    #[arg(required_unless_present = "lock", conflicts_with = "lock")]
    references: Vec<String>,
    /// Export every image this lockfile (stowage.lock or bv.lock) pins instead.
    #[arg(long, value_name = "LOCKFILE")]
    lock: Option<PathBuf>,
    /// Where to write: a tar archive when OUT ends in .tar (`-`: a tar on stdout),
    /// else a directory, which must not exist or be empty.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// The layout's form; default: from OUT's name.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// For an image that is an index, export the index and every platform (default:
    /// only this machine's, or the lockfile's platform).
    #[arg(long)]
    all_platforms: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    /// One tar archive (what `skopeo copy oci-archive:` and `podman load` read).
    OciArchive,
    /// A directory (what `skopeo copy oci:` reads).
    OciDir,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// An OCI layout: a tar archive (plain, gzip or zstd), a directory, or `-` for a
    /// tar on stdin.
    source: PathBuf,
    #[command(flatten)]
    policy: PolicyArgs,
}

pub fn export(store: &Store, args: &ExportArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let plan = match &args.lock {
        Some(lockfile) => stowage::plan_pins(store, &read_pins(lockfile)?, args.all_platforms)?,
        None => stowage::plan_refs(store, &args.references, args.all_platforms)?,
    };
    let format = match args.format {
        Some(FormatArg::OciArchive) => ArchiveFormat::OciArchive,
        Some(FormatArg::OciDir) => ArchiveFormat::OciDir,
        None => {
            let name = args.output.to_string_lossy();
            anyhow::ensure!(
                ![".gz", ".tgz", ".zst", ".zstd"]
                    .iter()
                    .any(|e| name.ends_with(e)),
                "{name}: stowage writes plain tar archives (the layers are compressed \
                 already); name it .tar, or pass --format to write a directory"
            );
            ArchiveFormat::for_path(&args.output)
        }
    };
    anyhow::ensure!(
        args.output.as_os_str() != "-" || format == ArchiveFormat::OciArchive,
        "only an archive can be written to stdout"
    );
    let report = stowage::export(store, &plan, &args.output, format)?;
    let line = export_line(&report);
    let summary = export_json(&report);
    if args.output.as_os_str() == "-" {
        // stdout carries the archive: the summary goes to stderr.
        if out.json {
            eprintln!("{summary}");
        } else if !out.quiet {
            eprintln!("{line}");
        }
    } else {
        out.line(line);
        out.json(summary);
    }
    Ok(ExitCode::SUCCESS)
}

fn export_line(report: &ExportReport) -> String {
    let referrers = match report.referrers {
        0 => String::new(),
        n => format!(" with {n} referrer(s)"),
    };
    format!(
        "exported {} image(s){referrers}, {} blobs ({}) to {} ({}, {}) in {:.1}s",
        report.images.len(),
        report.blobs,
        HumanBytes(report.blob_bytes),
        report.output.display(),
        report.format.name(),
        HumanBytes(report.written),
        report.seconds
    )
}

fn export_json(report: &ExportReport) -> serde_json::Value {
    json!({
        "output": report.output,
        "format": report.format.name(),
        "images": report.images.iter().map(|i| json!({
            "name": i.name,
            "digest": i.descriptor.digest().to_string(),
            "media_type": i.descriptor.media_type().to_string(),
        })).collect::<Vec<_>>(),
        "referrers": report.referrers,
        "blobs": report.blobs,
        "blob_bytes": report.blob_bytes,
        "written": report.written,
        "seconds": report.seconds,
    })
}

pub fn import(store: &Store, args: &ImportArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let policy = args.policy.load()?;
    // Only with a policy: the refs to put back if it refuses an image.
    let before = policy
        .as_ref()
        .map(|_| RefsBefore::take(store))
        .transpose()?;
    let report = stowage::import(store, &args.source)?;
    if let (Some(policy), Some(before)) = (&policy, &before) {
        let images: Vec<_> = report
            .images
            .iter()
            .map(|i| (i.name.clone(), i.digest.clone()))
            .collect();
        policy_args::check_imported(store, policy, &images, before)?;
    }
    for image in &report.images {
        if let Some(before) = &image.replaced {
            out.line(format!("{}: {} (was {before})", image.name, image.digest));
        }
    }
    out.line(import_line(&report));
    out.json(json!({
        "source": report.source,
        "format": report.format.name(),
        "images": report.images.iter().map(|i| json!({
            "name": i.name,
            "digest": i.digest.to_string(),
            "media_type": i.media_type,
            "replaced": i.replaced.as_ref().map(ToString::to_string),
        })).collect::<Vec<_>>(),
        "unnamed": report.unnamed,
        "referrers": report.referrers,
        "blobs": report.blobs,
        "blobs_added": report.blobs_added,
        "bytes_added": report.bytes_added,
        "blobs_present": report.blobs_present,
        "seconds": report.seconds,
    }));
    Ok(ExitCode::SUCCESS)
}

fn import_line(report: &ImportReport) -> String {
    let unnamed = match report.unnamed {
        0 => String::new(),
        n => format!(" ({n} unnamed index entries left without a ref)"),
    };
    let referrers = match report.referrers {
        0 => String::new(),
        n => format!(", {n} referrer(s) recorded"),
    };
    format!(
        "imported {} image(s){referrers} from {}: {} blobs, {} added ({}), {} already present, in {:.1}s{unnamed}",
        report.images.len(),
        report.source,
        report.blobs,
        report.blobs_added,
        HumanBytes(report.bytes_added),
        report.blobs_present,
        report.seconds
    )
}
