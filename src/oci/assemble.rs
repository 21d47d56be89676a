//! `assemble_image`: from layers that are all in the store, write an image's config
//! (with diff_ids computed from the decompressed layers, and checked against any the
//! caller expects) and manifest, and record it under a local ref. No network.

use std::collections::HashMap;

use oci_spec::image::{ImageConfiguration, MediaType};
use rayon::prelude::*;
use serde_json::{json, Value};

use crate::oci::layers::diff_id;
use crate::store::{Descriptor, Digest, Store, StoreError, MANIFEST_LIMIT};

/// One layer to assemble, with the diff_id it must have if the caller knows it.
#[derive(Debug, Clone)]
pub struct AssembleLayer {
    pub descriptor: Descriptor,
    pub diff_id: Option<Digest>,
}

/// How the image runs: taken from a base image's config, then adjusted.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    pub os: String,
    pub architecture: String,
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
}

/// Why an image could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("{image}: {} layers are not in the store (run ensure-layers first): {}", digests.len(), digests.join(", "))]
    Missing { image: String, digests: Vec<String> },
    #[error("{image}: layer {index} ({digest}): diff_id expected {expected}, the decompressed content hashes to {actual}")]
    DiffId {
        image: String,
        index: usize,
        digest: String,
        expected: String,
        actual: String,
    },
    #[error("{image}: layer {index}: {detail}")]
    Layer {
        image: String,
        index: usize,
        detail: String,
    },
    #[error("{image}: base image: {detail}")]
    Base { image: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The run configuration and layers of a stored base image.
pub fn base_image(
    store: &Store,
    name: &str,
) -> Result<(RunConfig, Vec<AssembleLayer>), AssembleError> {
    let base = |detail: String| AssembleError::Base {
        image: name.to_string(),
        detail,
    };
    let descriptor = store
        .resolve_ref(name)?
        .ok_or_else(|| base("not in the store".into()))?;
    let manifest: oci_spec::image::ImageManifest =
        serde_json::from_slice(&store.read_blob(descriptor.digest(), MANIFEST_LIMIT)?)
            .map_err(|e| base(format!("not a single-platform image manifest: {e}")))?;
    let config: ImageConfiguration =
        serde_json::from_slice(&store.read_blob(manifest.config().digest(), MANIFEST_LIMIT)?)
            .map_err(|e| base(format!("malformed config: {e}")))?;
    let run = config.config().clone().unwrap_or_default();
    let diff_ids = config.rootfs().diff_ids();
    let layers = manifest
        .layers()
        .iter()
        .enumerate()
        .map(|(i, l)| AssembleLayer {
            descriptor: l.clone(),
            diff_id: diff_ids.get(i).and_then(|d| d.parse().ok()),
        })
        .collect();
    Ok((
        RunConfig {
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            env: run.env().clone().unwrap_or_default(),
            entrypoint: run.entrypoint().clone(),
            cmd: run.cmd().clone(),
            working_dir: run.working_dir().clone(),
        },
        layers,
    ))
}

/// Writes the config and manifest for `layers` (in order) and names the image `name`.
/// Every layer must be stored; each one's diff_id is computed by decompressing it
/// (gzip, zstd or plain, in parallel) and must equal the expected one when given.
pub fn assemble_image(
    store: &Store,
    name: &str,
    run: &RunConfig,
    layers: &[AssembleLayer],
) -> Result<Descriptor, AssembleError> {
    // gc waits while this is held: the layers checked here, and the config and
    // manifest written below, stay until the ref names them.
    let _lease = store.lease()?;
    let missing: Vec<String> = layers
        .iter()
        .filter(|l| !store.has(l.descriptor.digest()))
        .map(|l| l.descriptor.digest().to_string())
        .collect();
    if !missing.is_empty() {
        return Err(AssembleError::Missing {
            image: name.to_string(),
            digests: missing,
        });
    }
    // A layer shared by several positions is decompressed once.
    let mut unique: Vec<&Descriptor> = Vec::new();
    for layer in layers {
        if !unique
            .iter()
            .any(|d| d.digest() == layer.descriptor.digest())
        {
            unique.push(&layer.descriptor);
        }
    }
    let computed: HashMap<Digest, Result<Digest, String>> = unique
        .par_iter()
        .map(|d| {
            (
                d.digest().clone(),
                diff_id(store, d).map_err(|e| e.to_string()),
            )
        })
        .collect();
    let mut diff_ids = Vec::with_capacity(layers.len());
    for (index, layer) in layers.iter().enumerate() {
        let actual = match &computed[layer.descriptor.digest()] {
            Ok(actual) => actual.clone(),
            Err(detail) => {
                return Err(AssembleError::Layer {
                    image: name.to_string(),
                    index,
                    detail: detail.clone(),
                })
            }
        };
        if let Some(expected) = &layer.diff_id {
            if expected != &actual {
                return Err(AssembleError::DiffId {
                    image: name.to_string(),
                    index,
                    digest: layer.descriptor.digest().to_string(),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        diff_ids.push(actual.to_string());
    }
    let mut config_section = serde_json::Map::new();
    config_section.insert("Env".into(), json!(run.env));
    if let Some(entrypoint) = &run.entrypoint {
        config_section.insert("Entrypoint".into(), json!(entrypoint));
    }
    if let Some(cmd) = &run.cmd {
        config_section.insert("Cmd".into(), json!(cmd));
    }
    if let Some(dir) = &run.working_dir {
        config_section.insert("WorkingDir".into(), json!(dir));
    }
    // No timestamps: the same layers and run config always give the same digests.
    let config = serde_json::to_vec(&json!({
        "architecture": run.architecture,
        "os": run.os,
        "config": Value::Object(config_section),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("a config serialises");
    let config_digest = store.put(&config)?;
    let config_descriptor =
        Descriptor::new(MediaType::ImageConfig, config.len() as u64, config_digest);
    let layer_descriptors: Vec<&Descriptor> = layers.iter().map(|l| &l.descriptor).collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_descriptor,
        "layers": layer_descriptors,
    }))
    .expect("a manifest serialises");
    let digest = store.put(&manifest)?;
    let descriptor = Descriptor::new(MediaType::ImageManifest, manifest.len() as u64, digest);
    store.set_ref(name, &descriptor)?;
    Ok(descriptor)
}
