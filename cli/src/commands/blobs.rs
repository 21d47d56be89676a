//! `stowage ingest`: add one blob from a file or stdin (like `ctr content ingest`),
//! resuming a partial ingest left by an earlier, interrupted run.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use stowage::store::{parse_digest, Store};

use super::Output;

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The digest the content must have (sha256:… or sha512:…).
    #[arg(long)]
    digest: String,
    /// The size in bytes the content must have.
    #[arg(long)]
    size: u64,
    /// The file to read; stdin when absent or `-`.
    file: Option<PathBuf>,
}

pub fn ingest(store: &Store, args: &IngestArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let digest = parse_digest(&args.digest)?;
    let _lease = store.lease()?;
    let Some(mut ingest) = store.ingest(&digest, args.size)? else {
        out.line(format!("{digest} already present"));
        out.json(json!({"digest": digest.to_string(), "size": args.size, "status": "present", "written": 0}));
        return Ok(ExitCode::SUCCESS);
    };
    let resumed_from = ingest.offset();
    let written = match args.file.as_deref().filter(|p| p.as_os_str() != "-") {
        Some(path) => {
            let mut file =
                File::open(path).with_context(|| format!("opening {}", path.display()))?;
            file.seek(SeekFrom::Start(resumed_from))
                .with_context(|| format!("seeking in {}", path.display()))?;
            ingest.copy_from(file)?
        }
        None => {
            let mut stdin = io::stdin().lock();
            // stdin cannot seek: read past what the partial ingest already holds.
            let skipped = io::copy(&mut (&mut stdin).take(resumed_from), &mut io::sink())?;
            anyhow::ensure!(
                skipped == resumed_from,
                "stdin ended after {skipped} bytes, before the {resumed_from} bytes already ingested"
            );
            ingest.copy_from(stdin)?
        }
    };
    let committed = ingest.commit()?;
    store.sync_blob_dirs()?;
    out.line(format!(
        "{} committed ({} bytes, {} resumed from a partial ingest)",
        committed.digest, committed.size, resumed_from
    ));
    out.json(json!({
        "digest": committed.digest.to_string(),
        "size": committed.size,
        "status": "committed",
        "resumed_from": resumed_from,
        "written": written,
    }));
    Ok(ExitCode::SUCCESS)
}
