//! `stowage unpack`: a stored image as a root filesystem in a directory, no runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use stowage::store::Store;
use stowage::{unpack, StoredImage, UnpackOptions};

use super::Output;

#[derive(Debug, Args)]
pub struct UnpackArgs {
    /// The image's name in the store (as `ls` shows it).
    reference: String,
    /// Where the root filesystem goes: an empty or absent directory.
    dir: PathBuf,
    /// Own every file yourself instead of the uids and gids the layers name (needed
    /// when not running as root; device nodes are then skipped).
    #[arg(long)]
    rootless: bool,
    /// Layers decoded at once (default: the number of cores, at least 2).
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
}

/// Unpacks the image; prints a line per layer, and a summary.
pub fn unpack_image(store: &Store, args: &UnpackArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let image = StoredImage::open(store, &args.reference)?;
    let mut options = UnpackOptions {
        rootless: args.rootless,
        ..UnpackOptions::default()
    };
    if let Some(jobs) = args.jobs {
        options.jobs = jobs;
    }
    let bar =
        (out.interactive() && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
            let bar = ProgressBar::new(image.layers.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("unpack {bar:30} {pos}/{len} layers {msg}")
                    .expect("a valid template"),
            );
            bar
        });
    let report = unpack(store, &image, &args.dir, &options, &mut |layer| {
        let line = format!(
            "layer {}/{} {}: {} entries, {} whiteouts, {} bytes, {:.2} s",
            layer.index,
            image.layers.len(),
            layer.digest,
            layer.entries,
            layer.whiteouts,
            layer.bytes,
            layer.seconds
        );
        match &bar {
            Some(bar) => {
                bar.inc(1);
                bar.println(line);
            }
            None => out.line(line),
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut summary = format!(
        "unpacked {} ({} layers) into {} in {:.2} s",
        report.reference,
        report.layers.len(),
        report.destination.display(),
        report.seconds
    );
    if report.devices_skipped > 0 {
        summary += &format!(
            "; {} device nodes skipped (rootless)",
            report.devices_skipped
        );
    }
    if report.xattrs_skipped > 0 {
        summary += &format!("; {} extended attributes not set", report.xattrs_skipped);
    }
    out.line(summary);
    out.json(serde_json::to_value(&report)?);
    Ok(ExitCode::SUCCESS)
}
