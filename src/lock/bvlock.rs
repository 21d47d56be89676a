//! `bv.lock`, the lockfile of the environment tool that drives stowage, read as it is:
//! `version = 1`, a `[metadata]` table, and a `[tools.<id>]` table per tool. Fields
//! stowage does not use (and those newer versions of the tool add) are ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::lock::lockfile::{ImageKind, LayerPin, Pin};
use crate::store::{parse_digest, StoreError};

#[derive(Debug, Deserialize)]
pub(crate) struct BvLock {
    #[serde(default)]
    tools: BTreeMap<String, Tool>,
}

#[derive(Debug, Deserialize)]
struct Tool {
    image_reference: String,
    image_digest: String,
    /// The platform manifest's sha256, with or without the `sha256:` prefix.
    manifest_sha256: Option<String>,
    #[serde(default)]
    spec_kind: SpecKind,
    #[serde(default)]
    layers: Vec<Layer>,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum SpecKind {
    #[default]
    LegacyImage,
    FactoredOci,
}

#[derive(Debug, Deserialize)]
struct Layer {
    digest: String,
    size: u64,
    media_type: String,
    conda_package: Option<CondaPackage>,
}

#[derive(Debug, Deserialize)]
struct CondaPackage {
    name: String,
    version: String,
    build: String,
}

impl BvLock {
    pub(crate) fn pins(&self) -> Result<Vec<Pin>, StoreError> {
        self.tools
            .iter()
            .map(|(id, tool)| {
                let manifest = tool
                    .manifest_sha256
                    .as_deref()
                    .filter(|m| !m.is_empty())
                    .map(|m| {
                        if m.contains(':') {
                            parse_digest(m)
                        } else {
                            parse_digest(&format!("sha256:{m}"))
                        }
                    })
                    .transpose()?;
                Ok(Pin {
                    name: format!("{id} ({})", tool.image_reference),
                    reference: tool.image_reference.clone(),
                    digest: parse_digest(&tool.image_digest)?,
                    manifest,
                    platform: None,
                    kind: match tool.spec_kind {
                        SpecKind::LegacyImage => ImageKind::Oci,
                        SpecKind::FactoredOci => ImageKind::FactoredOci,
                    },
                    layers: tool
                        .layers
                        .iter()
                        .map(|l| {
                            let package = l
                                .conda_package
                                .as_ref()
                                .map(|p| format!("{}-{}-{}", p.name, p.version, p.build));
                            LayerPin::new(&l.digest, l.size, &l.media_type, package)
                        })
                        .collect::<Result<_, StoreError>>()?,
                })
            })
            .collect()
    }
}
