//! `bv.lock`, the lockfile of the environment tool that drives stowage, read as it is:
//! `version = 1`, a `[metadata]` table, and a `[tools.<id>]` table per tool. Fields
//! stowage does not use (and those newer versions of the tool add) are ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::lock::pin::{ImageKind, LayerPin, Pin};
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
                    referrers: Vec::new(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::BvLock;
    use crate::lock::pin::ImageKind;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_bv_lock_becomes_pins_with_no_registry() {
        let text = format!(
            r#"
version = 1
[metadata]
generated_by = "bv 0.9"
[tools.samtools]
image_reference = "ghcr.io/x/samtools:1.20"
image_digest = "{DIGEST}"
manifest_sha256 = "{hex}"
spec_kind = "factored_oci"
added_by_a_newer_bv = true
[[tools.samtools.layers]]
digest = "{DIGEST}"
size = 42
media_type = "application/vnd.oci.image.layer.v1.tar+zstd"
conda_package = {{ name = "samtools", version = "1.20", build = "h0_0" }}
[tools.old]
image_reference = "docker.io/library/busybox:1"
image_digest = "{DIGEST}"
"#,
            hex = &DIGEST["sha256:".len()..]
        );
        let lock: BvLock = toml::from_str(&text).unwrap();
        let pins = lock.pins().unwrap();
        assert_eq!(pins.len(), 2);
        let old = &pins[0];
        assert_eq!((old.kind, old.manifest.is_none()), (ImageKind::Oci, true));
        let samtools = &pins[1];
        assert_eq!(samtools.name, "samtools (ghcr.io/x/samtools:1.20)");
        assert_eq!(samtools.kind, ImageKind::FactoredOci);
        // A bare hex manifest_sha256 is a sha256 digest.
        assert_eq!(
            samtools.manifest.as_ref().map(|d| d.to_string()).as_deref(),
            Some(DIGEST)
        );
        assert_eq!(samtools.layers[0].size, 42);
        assert_eq!(
            samtools.layers[0].package.as_deref(),
            Some("samtools-1.20-h0_0")
        );

        let bad: BvLock = toml::from_str(
            "[tools.x]\nimage_reference = \"a/b:1\"\nimage_digest = \"sha256:nothex\"\n",
        )
        .unwrap();
        assert!(bad.pins().is_err());
    }
}
