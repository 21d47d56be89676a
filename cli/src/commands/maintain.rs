//! Store upkeep: `verify`, `gc`, `du` and `ls`.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use indicatif::HumanBytes;
use serde_json::json;
use stowage::store::{parse_digest, EvictOptions, Store, PARTIALS_OLDER_THAN};

use super::Output;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Check only these blobs (default: every blob in the store).
    digests: Vec<String>,
    /// Check the store against this lockfile (stowage.lock or bv.lock) instead: every
    /// pinned blob present and intact, layers as pinned, diff_ids as the configs say.
    #[arg(long, value_name = "LOCKFILE", conflicts_with = "digests")]
    lock: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Report what would be removed, remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also remove partial ingests nobody is writing (their lock is free) that have not
    /// changed for S seconds (0: every idle one).
    #[arg(long, value_name = "S", default_value_t = PARTIALS_OLDER_THAN.as_secs())]
    partials_older_than: u64,
    /// Cache nodes: evict the least recently used images (pulled, synced, served or
    /// loaded longest ago) until the blobs the remaining ones reach take at most SIZE
    /// (e.g. 20GiB, 500MB).
    #[arg(long, value_name = "SIZE", value_parser = super::args::parse_size)]
    max_size: Option<u64>,
    /// Evict every image not used for DURATION (e.g. 30d, 12h).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    max_age: Option<Duration>,
    /// Never evict an image this lockfile (stowage.lock or bv.lock) pins; repeatable.
    #[arg(long, value_name = "LOCKFILE")]
    keep: Vec<std::path::PathBuf>,
}

pub fn verify(store: &Store, args: &VerifyArgs, out: &Output) -> anyhow::Result<ExitCode> {
    if let Some(lockfile) = &args.lock {
        return verify_lock(store, lockfile, out);
    }
    let only = args
        .digests
        .iter()
        .map(|d| parse_digest(d))
        .collect::<Result<Vec<_>, _>>()?;
    let report = store.verify((!only.is_empty()).then_some(&only[..]))?;
    for bad in &report.corrupt {
        out.problem(format!(
            "corrupt {}: its {} bytes hash to {}; moved to {}",
            bad.digest,
            bad.size,
            bad.actual,
            bad.quarantined_to.display()
        ));
    }
    for gone in &report.missing {
        out.problem(format!(
            "missing {} (needed by {})",
            gone.digest, gone.referenced_by
        ));
    }
    out.line(format!(
        "checked {} blobs ({}): {} corrupt, {} missing",
        report.checked,
        HumanBytes(report.bytes),
        report.corrupt.len(),
        report.missing.len()
    ));
    out.json(json!({
        "checked": report.checked,
        "bytes": report.bytes,
        "corrupt": report.corrupt.iter().map(|c| json!({
            "digest": c.digest.to_string(),
            "actual": c.actual.to_string(),
            "size": c.size,
            "quarantined_to": c.quarantined_to,
        })).collect::<Vec<_>>(),
        "missing": report.missing.iter().map(|m| json!({
            "digest": m.digest.to_string(),
            "referenced_by": m.referenced_by,
        })).collect::<Vec<_>>(),
    }));
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn gc(store: &Store, args: &GcArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let older_than = Duration::from_secs(args.partials_older_than);
    if args.max_size.is_some() || args.max_age.is_some() {
        return evict(store, args, older_than, out);
    }
    let report = store.gc_with(&[], args.dry_run, older_than)?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    out.line(format!(
        "{verb} {} blobs, {} ({} kept), and {} idle partial ingests, {}",
        report.removed.len(),
        HumanBytes(report.bytes_freed),
        report.kept,
        report.partials_removed,
        HumanBytes(report.partial_bytes_freed),
    ));
    out.json(json!({
        "dry_run": args.dry_run,
        "removed": report.removed.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "bytes_freed": report.bytes_freed,
        "kept": report.kept,
        "partials_removed": report.partials_removed,
        "partial_bytes_freed": report.partial_bytes_freed,
    }));
    Ok(ExitCode::SUCCESS)
}

/// `gc --max-size` / `--max-age`: evict least recently used images, then sweep.
fn evict(
    store: &Store,
    args: &GcArgs,
    older_than: Duration,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let mut options = EvictOptions {
        max_size: args.max_size,
        max_age: args.max_age,
        dry_run: args.dry_run,
        partials_older_than: older_than,
        ..EvictOptions::default()
    };
    for lockfile in &args.keep {
        for pin in stowage::read_pins(lockfile)? {
            options.keep_names.insert(pin.store_name());
            options
                .keep_digests
                .extend([pin.digest].into_iter().chain(pin.manifest));
        }
    }
    let report = store.evict(&options)?;
    let verb = if args.dry_run {
        "would evict"
    } else {
        "evicted"
    };
    let now = SystemTime::now();
    for image in &report.evicted {
        let idle = now.duration_since(image.last_used).unwrap_or_default();
        out.line(format!(
            "{verb} {} (last used {} ago; {} only it used)",
            image.name,
            humantime::format_duration(Duration::from_secs(idle.as_secs())),
            HumanBytes(image.bytes_freed)
        ));
    }
    out.line(format!(
        "{verb} {} images: the refs now reach {} (before: {}); {} blobs, {} {}",
        report.evicted.len(),
        HumanBytes(report.live_bytes_after),
        HumanBytes(report.live_bytes_before),
        report.gc.removed.len(),
        HumanBytes(report.gc.bytes_freed),
        if args.dry_run {
            "unreferenced already"
        } else {
            "removed"
        },
    ));
    out.json(json!({
        "dry_run": args.dry_run,
        "evicted": report.evicted.iter().map(|e| json!({
            "name": e.name,
            "digest": e.digest.to_string(),
            "last_used": e.last_used.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "bytes_freed": e.bytes_freed,
        })).collect::<Vec<_>>(),
        "live_bytes_before": report.live_bytes_before,
        "live_bytes_after": report.live_bytes_after,
        "removed": report.gc.removed.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "bytes_freed": report.gc.bytes_freed,
        "kept": report.gc.kept,
        "partials_removed": report.gc.partials_removed,
        "partial_bytes_freed": report.gc.partial_bytes_freed,
    }));
    Ok(ExitCode::SUCCESS)
}

pub fn du(store: &Store, out: &Output) -> anyhow::Result<ExitCode> {
    let usage = store.usage()?;
    out.line(format!(
        "{} refs, {} blobs ({}), {} partial ingests ({})",
        usage.refs,
        usage.blobs,
        HumanBytes(usage.blob_bytes),
        usage.ingests,
        HumanBytes(usage.ingest_bytes)
    ));
    out.json(json!({
        "refs": usage.refs,
        "blobs": usage.blobs,
        "blob_bytes": usage.blob_bytes,
        "ingests": usage.ingests,
        "ingest_bytes": usage.ingest_bytes,
    }));
    Ok(ExitCode::SUCCESS)
}

pub fn ls(store: &Store, out: &Output) -> anyhow::Result<ExitCode> {
    if !out.wants_json() {
        store.for_each_ref(|name, descriptor| {
            out.line(format!("{name}\t{}", descriptor.digest()))
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    // Streamed, entry by entry: a store of 100 000 refs is not built up as a document.
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut first = true;
    let mut written = Ok(());
    write!(stdout, "[")?;
    store.for_each_ref(|name, descriptor| {
        if written.is_err() {
            return;
        }
        let entry = json!({
            "name": name,
            "digest": descriptor.digest().to_string(),
            "media_type": descriptor.media_type().to_string(),
            "size": descriptor.size(),
        });
        let separator = if first { "" } else { "," };
        first = false;
        written = write!(stdout, "{separator}{entry}");
    })?;
    written?;
    writeln!(stdout, "]")?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(store: &Store, name: &str, out: &Output) -> anyhow::Result<ExitCode> {
    let info = stowage::inspect(store, name)?;
    out.line(format!(
        "{} {} ({})",
        info.reference, info.digest, info.media_type
    ));
    out.line(format!("platforms: {}", info.platforms.join(", ")));
    for layer in &info.layers {
        out.line(format!(
            "  {} {} {}",
            layer.digest,
            HumanBytes(layer.size),
            layer.media_type
        ));
    }
    if !info.layers.is_empty() {
        out.line(format!("size: {}", HumanBytes(info.size)));
        out.line(format!(
            "entrypoint: {:?} cmd: {:?}",
            info.entrypoint, info.cmd
        ));
    }
    out.json(serde_json::to_value(&info)?);
    Ok(ExitCode::SUCCESS)
}

fn verify_lock(
    store: &Store,
    lockfile: &std::path::Path,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let pins = stowage::read_pins(lockfile)?;
    let report = stowage::verify_lock(store, &pins)?;
    for problem in &report.problems {
        out.problem(format!("{}: {}", problem.image, problem.detail));
    }
    for note in &report.unchecked {
        out.line(format!("not checked: {}: {}", note.image, note.detail));
    }
    out.line(format!(
        "{} images, {} blobs ({}) re-hashed: {} problems",
        report.images,
        report.blobs_checked,
        HumanBytes(report.bytes_checked),
        report.problems.len()
    ));
    out.json(serde_json::to_value(&report)?);
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
