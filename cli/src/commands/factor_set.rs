//! `stowage factor-set`: the factored images of a set file, built together so that a
//! package only one image uses is merged into that image's own layer.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use stowage::store::Store;

use super::args::PackageLayerArgs;
use super::Output;

#[derive(Debug, Args)]
pub struct FactorSetArgs {
    /// The set file (TOML): `base = REF` and `[[image]]` tables of `name`, `packages`
    /// (paths relative to the file) and optionally `base`, `entrypoint`, `cmd`.
    set: PathBuf,
    #[command(flatten)]
    layers: PackageLayerArgs,
}

pub fn factor_set(store: &Store, args: &FactorSetArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let images = stowage::read_factor_set(&args.set, &args.layers.options()?)?;
    let reports = stowage::factor_set(store, images)?;
    for report in &reports {
        out.line(format!(
            "{} {}: {} packages in {} layers ({} new), {} merged into one layer",
            report.name,
            report.manifest_digest,
            report.packages,
            report.layers,
            report.layers_written,
            report.grouped.len()
        ));
    }
    out.json(serde_json::json!({ "images": reports }));
    Ok(ExitCode::SUCCESS)
}
