//! `factor`: build a factored image from a base image and conda packages. The base's
//! layers come first, then one layer per package in conda's install order (every
//! package after those it depends on, each level by name: see
//! [`super::install_order`]), then one small layer of `conda-meta/*.json` records.
//! Built as one of a set ([`super::set`], which counts each package's `users`), a
//! level's packages more of the set's images use go first, and the packages only
//! this image uses go on top of the shared ones, merged into one layer when there are
//! two or more: a runtime pays per layer it commits, and a layer only one image holds
//! saves nothing. Docker's overlay2 refuses more than 127 layers: past `max_layers`,
//! the packages the store's images share least are merged into that layer too, and
//! the image still runs.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::PathBuf;

use serde::Serialize;

use rayon::prelude::*;

use super::install::{install_package, InstallError, LayerOptions, PackageLayer};
use super::install_order::install_order;
use super::layer_tar::{anonymous_file, entry_path, prefix_dirs, LayerTarWriter};
use super::metadata::PackageMetadata;
use super::package::{CondaPackage, PackageError};
use crate::oci::annotation::{ANNOTATION_PACKAGES, ANNOTATION_PREFIX, ANNOTATION_PYTHON};
use crate::oci::assemble::{assemble_image, base_image, AssembleError, AssembleLayer, RunConfig};
use crate::oci::layers::Compression;
use crate::store::{Descriptor, Digest, Store, StoreError, MANIFEST_LIMIT};

/// Docker's overlay2 limit is 127; two are left for the runtime's own.
pub const DEFAULT_MAX_LAYERS: usize = 125;

/// What to build.
#[derive(Debug, Clone)]
pub struct FactorOptions {
    /// A stored image to build on (its layers first, its run configuration kept).
    pub base: Option<String>,
    pub packages: Vec<PathBuf>,
    /// How many images of a set use each of `packages` (empty for an image built
    /// alone). Within an install-order level, packages more images use go first; those
    /// only this image uses (1) go on top, merged into one layer if two or more.
    pub users: HashMap<PathBuf, usize>,
    pub layer: LayerOptions,
    pub max_layers: usize,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
}

/// What `factor` built.
#[derive(Debug, Clone, Serialize)]
pub struct FactorReport {
    pub name: String,
    pub manifest_digest: String,
    pub packages: usize,
    pub layers: usize,
    /// Packages merged into one layer to stay under `max_layers`.
    pub grouped: Vec<String>,
    /// Package layers the store did not hold before.
    pub layers_written: usize,
}

/// Why a factored image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FactorError {
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{base} base layers, the packages and the conda-meta layer cannot fit in {max} layers"
    )]
    TooManyLayers { base: usize, max: usize },
    #[error("building the {what} layer: {source}")]
    Write {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Builds the image and records it as `name`.
pub fn factor(
    store: &Store,
    name: &str,
    options: &FactorOptions,
) -> Result<FactorReport, FactorError> {
    factor_with(store, name, options, Vec::new())
}

/// [`factor`], with `opened` packages (read from elsewhere, say registry blobs in the
/// store) besides the files `options.packages` names.
pub fn factor_with(
    store: &Store,
    name: &str,
    options: &FactorOptions,
    opened: Vec<CondaPackage>,
) -> Result<FactorReport, FactorError> {
    // Each package is read, laid out and compressed on its own, on every core; the
    // layers are then put in install order.
    let from_files = options.packages.par_iter().map(|path| {
        let mut package = CondaPackage::open_in(store, path)?;
        let layer = install_package(store, &package, &options.layer)?;
        package.release();
        Ok::<_, FactorError>((package, layer))
    });
    let from_store = opened.into_par_iter().map(|package| {
        let layer = install_package(store, &package, &options.layer)?;
        Ok((package, layer))
    });
    let built: Vec<(CondaPackage, PackageLayer)> =
        from_files.chain(from_store).collect::<Result<_, _>>()?;
    // Packages opened from elsewhere count as used by no other image of a set.
    let users: Vec<usize> = (0..built.len())
        .map(|i| options.packages.get(i).and_then(|p| options.users.get(p)))
        .map(|n| n.copied().unwrap_or(0))
        .collect();
    let metadata: Vec<&PackageMetadata> = built.iter().map(|(p, _)| p.metadata()).collect();
    let order = install_order(&metadata, &users);
    // The image's own packages go on top of the shared ones, still in install order.
    let (shared, own): (Vec<usize>, Vec<usize>) = order.into_iter().partition(|&i| users[i] != 1);
    let own_labels: Vec<String> = match own.len() {
        0 | 1 => Vec::new(),
        _ => own.iter().map(|&i| built[i].1.label.clone()).collect(),
    };
    let mut slots: Vec<Option<PackageLayer>> =
        built.into_iter().map(|(_, layer)| Some(layer)).collect();
    let installed: Vec<PackageLayer> = shared
        .into_iter()
        .chain(own)
        .map(|i| {
            slots[i]
                .take()
                .expect("install_order gives each index once")
        })
        .collect();
    let (mut run, mut layers) = match &options.base {
        Some(base) => base_image(store, base)?,
        None => (
            RunConfig {
                os: "linux".into(),
                architecture: crate::oci::platform::Platform::host().architecture,
                ..RunConfig::default()
            },
            Vec::new(),
        ),
    };
    let budget = options.max_layers.saturating_sub(layers.len() + 1);
    if budget == 0 && !installed.is_empty() {
        return Err(FactorError::TooManyLayers {
            base: layers.len(),
            max: options.max_layers,
        });
    }
    let grouped = grouped_labels(store, &installed, own_labels, budget)?;
    for layer in installed.iter().filter(|l| !grouped.contains(&l.label)) {
        layers.push(AssembleLayer {
            descriptor: layer.descriptor(),
            diff_id: Some(layer.diff_id.clone()),
        });
    }
    if !grouped.is_empty() {
        let group: Vec<&PackageLayer> = installed
            .iter()
            .filter(|l| grouped.contains(&l.label))
            .collect();
        layers.push(merge_layers(store, &group, &options.layer)?);
    }
    layers.push(meta_layer(store, &installed, &options.layer)?);

    let prefix = options.layer.prefix.as_str();
    prepend(
        &mut run.env,
        "PATH",
        &format!("{prefix}/bin"),
        Some("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    );
    prepend(
        &mut run.env,
        "LD_LIBRARY_PATH",
        &format!("{prefix}/lib"),
        None,
    );
    if let Some(entrypoint) = &options.entrypoint {
        run.entrypoint = Some(entrypoint.clone());
    }
    if let Some(cmd) = &options.cmd {
        run.cmd = Some(cmd.clone());
    }
    let descriptor = assemble_image(store, name, &run, &layers)?;
    Ok(FactorReport {
        name: name.to_string(),
        manifest_digest: descriptor.digest().to_string(),
        packages: installed.len(),
        layers: layers.len(),
        grouped,
        layers_written: installed.iter().filter(|l| !l.already_stored).count(),
    })
}

/// Puts `dir` in front of the `var` list in `env` (or sets it, from `default`).
fn prepend(env: &mut Vec<String>, var: &str, dir: &str, default: Option<&str>) {
    let key = format!("{var}=");
    match env.iter_mut().find(|e| e.starts_with(&key)) {
        Some(entry) => {
            let rest = entry[key.len()..].to_string();
            if !rest.split(':').any(|d| d == dir) {
                *entry = if rest.is_empty() {
                    format!("{key}{dir}")
                } else {
                    format!("{key}{dir}:{rest}")
                };
            }
        }
        None => env.push(match default {
            Some(rest) => format!("{key}{dir}:{rest}"),
            None => format!("{key}{dir}"),
        }),
    }
}

/// The labels of the packages to merge into one layer: the image's `own`, then as
/// many of the rest as the image needs to fit in `budget` package layers, those the
/// store's images use least (ties by label).
fn grouped_labels(
    store: &Store,
    installed: &[PackageLayer],
    mut own: Vec<String>,
    budget: usize,
) -> Result<Vec<String>, StoreError> {
    let rest: Vec<&PackageLayer> = installed
        .iter()
        .filter(|l| !own.contains(&l.label))
        .collect();
    // The merged layer takes one of the budget's places once it exists.
    let room = budget - usize::from(!own.is_empty());
    if rest.len() > room {
        let merge = rest.len() - room + usize::from(own.is_empty());
        own.extend(least_shared(store, rest, merge)?);
    }
    Ok(own)
}

/// The labels of the `merge` packages of `candidates` the store's images use least
/// (ties by label).
fn least_shared(
    store: &Store,
    candidates: Vec<&PackageLayer>,
    merge: usize,
) -> Result<Vec<String>, StoreError> {
    let mut uses: HashMap<Digest, usize> = HashMap::new();
    for stored in store.refs()? {
        let Ok(bytes) = store.read_blob(stored.descriptor.digest(), MANIFEST_LIMIT) else {
            continue;
        };
        if let Ok(manifest) = serde_json::from_slice::<oci_spec::image::ImageManifest>(&bytes) {
            for layer in manifest.layers() {
                *uses.entry(layer.digest().clone()).or_default() += 1;
            }
        }
    }
    let mut ranked = candidates;
    ranked.sort_by_key(|l| (uses.get(&l.digest).copied().unwrap_or(0), l.label.clone()));
    Ok(ranked
        .into_iter()
        .take(merge)
        .map(|l| l.label.clone())
        .collect())
}

/// Merges package layers into one deterministic layer: their sorted entries are
/// merged in path order (streaming, never a whole layer in memory); a directory is
/// written once, and for a file two packages both hold, the later package's wins.
fn merge_layers(
    store: &Store,
    group: &[&PackageLayer],
    options: &LayerOptions,
) -> Result<AssembleLayer, FactorError> {
    let write = |source| FactorError::Write {
        what: "merged",
        source,
    };
    let mut archives = Vec::new();
    for layer in group {
        let media_type = layer.media_type.to_string();
        let compression = Compression::of(&media_type)
            .ok_or_else(|| write(io::Error::other(format!("{media_type} is not a tar layer"))))?;
        let blob = store.open_blob(&layer.digest)?;
        archives.push(tar::Archive::new(compression.decoder(blob).map_err(write)?));
    }
    let mut streams = archives
        .iter_mut()
        .map(|a| a.entries())
        .collect::<io::Result<Vec<_>>>()
        .map_err(write)?;
    let mut heads = streams
        .iter_mut()
        .map(|s| s.next().transpose())
        .collect::<io::Result<Vec<_>>>()
        .map_err(write)?;
    let mut writer =
        LayerTarWriter::new(options.compression, anonymous_file(store).map_err(write)?)
            .map_err(write)?;
    loop {
        // The smallest path; on a tie the later package wins.
        let mut best: Option<(usize, String)> = None;
        for (i, head) in heads.iter().enumerate() {
            if let Some(entry) = head {
                let path = entry_name(entry).map_err(write)?;
                if best.as_ref().is_none_or(|(_, b)| path <= *b) {
                    best = Some((i, path));
                }
            }
        }
        let Some((winner, path)) = best else { break };
        let entry = heads[winner].as_mut().expect("the winner has an entry");
        let header = entry.header().clone();
        match header.entry_type() {
            tar::EntryType::Directory => writer.add_dir(&path),
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(write)?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                writer.add_symlink(&path, &target)
            }
            tar::EntryType::Regular => {
                let size = header.size().map_err(write)?;
                let executable = header.mode().map_err(write)? & 0o111 != 0;
                writer.add_file(&path, executable, size, entry as &mut dyn Read)
            }
            other => Err(io::Error::other(format!(
                "{path}: unexpected tar entry type {other:?}"
            ))),
        }
        .map_err(write)?;
        for i in 0..heads.len() {
            let same = match &heads[i] {
                Some(entry) => entry_name(entry).map_err(write)? == path,
                None => false,
            };
            if same {
                heads[i] = None;
                heads[i] = streams[i].next().transpose().map_err(write)?;
            }
        }
    }
    // tar stops at its end marker: read each blob to its end so the store checks its
    // digest, and a layer that rotted on disk is never merged into a fresh one.
    drop(heads);
    drop(streams);
    for archive in archives {
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(write)?;
    }
    let built = writer.finish().map_err(write)?;
    let (digest, size, diff_id) = (built.digest.clone(), built.size, built.diff_id.clone());
    built.commit(store)?;
    let mut descriptor = Descriptor::new(options.compression.media_type(), size, digest);
    let labels: Vec<&str> = group.iter().map(|l| l.label.as_str()).collect();
    // The group says what it was made for, as each package layer does, so a lockfile
    // can record it.
    let mut annotations: HashMap<String, String> = group
        .iter()
        .flat_map(|l| &l.annotations)
        .filter(|(k, _)| *k == ANNOTATION_PREFIX || *k == ANNOTATION_PYTHON)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(ANNOTATION_PACKAGES.to_string(), labels.join(","));
    descriptor.set_annotations(Some(annotations));
    Ok(AssembleLayer {
        descriptor,
        diff_id: Some(diff_id),
    })
}

fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> io::Result<String> {
    Ok(entry
        .path()?
        .to_string_lossy()
        .trim_end_matches('/')
        .to_string())
}

/// The last layer: `<prefix>/conda-meta/<name>-<version>-<build>.json` for every
/// package, so conda tools in the image know what is installed.
fn meta_layer(
    store: &Store,
    installed: &[PackageLayer],
    options: &LayerOptions,
) -> Result<AssembleLayer, FactorError> {
    let write = |source| FactorError::Write {
        what: "conda-meta",
        source,
    };
    let prefix = options.prefix.as_str();
    let mut writer =
        LayerTarWriter::new(options.compression, anonymous_file(store).map_err(write)?)
            .map_err(write)?;
    for dir in prefix_dirs(prefix) {
        writer.add_dir(&dir).map_err(write)?;
    }
    writer
        .add_dir(&entry_path(prefix, "conda-meta"))
        .map_err(write)?;
    let mut records: Vec<(String, Vec<u8>)> = installed
        .iter()
        .map(|l| (entry_path(prefix, &l.record_path()), l.record_json()))
        .collect();
    records.sort();
    records.dedup_by(|a, b| a.0 == b.0);
    for (path, json) in &records {
        writer
            .add_file(path, false, json.len() as u64, json.as_slice())
            .map_err(write)?;
    }
    let built = writer.finish().map_err(write)?;
    let (digest, size, diff_id) = (built.digest.clone(), built.size, built.diff_id.clone());
    built.commit(store)?;
    let mut descriptor = Descriptor::new(options.compression.media_type(), size, digest);
    descriptor.set_annotations(Some(
        [("org.conda.layer.kind".to_string(), "conda-meta".to_string())]
            .into_iter()
            .collect(),
    ));
    Ok(AssembleLayer {
        descriptor,
        diff_id: Some(diff_id),
    })
}
