//! Lockfiles: `stowage.lock` (stowage's own, written by `lock`) and `bv.lock` (the
//! environment tool's, read as it is). Both become a list of [`Pin`]s: an image
//! pinned by manifest digest with every layer pinned by digest and size.
//!
//! Layer pins are digests of the compressed blobs, checked against the manifest and
//! the bytes fetched; they are never compared with the config's diff_ids.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::lock::pin::{ImageKind, LayerPin, Pin, ReferrerPin};
use crate::store::{parse_digest, write_atomic, StoreError};

/// The only `stowage.lock` / `bv.lock` format version this stowage reads and writes.
pub const LOCK_VERSION: u32 = 1;

/// One layer pinned by the digest and size of its (compressed) blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedLayer {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// `name-version-build` of the conda package a factored layer holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// The packages a grouped layer (past `--max-layers`) holds, each `name-version-build`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// The environment prefix a factored layer was installed for: the same package
    /// under another prefix is another layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The Python `X.Y` a `noarch: python` layer was laid out for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
}

/// One image in `stowage.lock`. Field order is the file's key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedImage {
    pub reference: String,
    /// The platform manifest's digest.
    pub digest: String,
    pub platform: String,
    pub kind: ImageKind,
    #[serde(rename = "layer", default)]
    pub layers: Vec<LockedLayer>,
    /// The referrers `lock --referrers` pinned; absent (and the file as before) when
    /// none were.
    #[serde(rename = "referrer", default, skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<LockedReferrer>,
}

/// One referrer pinned by digest and size: `[[image.referrer]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedReferrer {
    /// The manifest it refers to (the image's, or its index's).
    pub subject: String,
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The cosign tag suffix it was found under (`sig`, `att`, `sbom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosign_tag: Option<String>,
}

impl LockedReferrer {
    /// The lockfile entry of the referrer `descriptor` of `subject`.
    pub fn of(subject: &crate::store::Digest, descriptor: &crate::store::Descriptor) -> Self {
        Self {
            subject: subject.to_string(),
            digest: descriptor.digest().to_string(),
            size: descriptor.size(),
            media_type: descriptor.media_type().to_string(),
            artifact_type: descriptor.artifact_type().as_ref().map(|t| t.to_string()),
            cosign_tag: crate::oci::referrer::CosignTag::of(descriptor)
                .map(|t| t.suffix().to_string()),
        }
    }

    fn pin(&self) -> Result<ReferrerPin, StoreError> {
        Ok(ReferrerPin {
            subject: parse_digest(&self.subject)?,
            digest: parse_digest(&self.digest)?,
            size: self.size,
            media_type: self.media_type.clone(),
            artifact_type: self.artifact_type.clone(),
            cosign_tag: self.cosign_tag.clone(),
        })
    }
}

/// `stowage.lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lockfile {
    pub version: u32,
    #[serde(rename = "image", default)]
    pub images: Vec<LockedImage>,
}

/// Why a lockfile could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LockfileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a valid lockfile: {detail}", path.display())]
    Malformed { path: PathBuf, detail: String },
    #[error("{}: lockfile format version {found} is not supported (this stowage reads version {LOCK_VERSION}; upgrade stowage)", path.display())]
    UnsupportedVersion { path: PathBuf, found: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Lockfile {
    /// An empty lockfile of the current version.
    pub fn new() -> Self {
        Self {
            version: LOCK_VERSION,
            images: Vec::new(),
        }
    }

    /// The file's text: images sorted by reference, so diffs stay small.
    pub fn to_toml(&self) -> String {
        let mut sorted = self.clone();
        sorted.images.sort_by(|a, b| a.reference.cmp(&b.reference));
        toml::to_string(&sorted).expect("a lockfile serialises")
    }

    /// Writes the file atomically (temp file, fsync, rename).
    pub fn write(&self, path: &Path) -> Result<(), LockfileError> {
        let path = match path.parent() {
            Some(dir) if dir.as_os_str().is_empty() => Path::new(".").join(path),
            _ => path.to_path_buf(),
        };
        Ok(write_atomic(&path, self.to_toml().as_bytes())?)
    }

    /// The pins of every image.
    pub fn pins(&self) -> Result<Vec<Pin>, StoreError> {
        self.images
            .iter()
            .map(|image| {
                Ok(Pin {
                    name: image.reference.clone(),
                    reference: image.reference.clone(),
                    digest: parse_digest(&image.digest)?,
                    manifest: None,
                    platform: Some(image.platform.clone()),
                    kind: image.kind,
                    layers: image
                        .layers
                        .iter()
                        .map(|l| LayerPin::new(&l.digest, l.size, &l.media_type, l.package.clone()))
                        .collect::<Result<_, StoreError>>()?,
                    referrers: image
                        .referrers
                        .iter()
                        .map(LockedReferrer::pin)
                        .collect::<Result<_, StoreError>>()?,
                })
            })
            .collect()
    }
}

impl Default for Lockfile {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads `stowage.lock` or `bv.lock` (told apart by their tables) into pins.
pub fn read_pins(path: &Path) -> Result<Vec<Pin>, LockfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| LockfileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    pins_from_text(path, &text)
}

/// [`read_pins`] on text already read; `path` names the file in errors.
pub(crate) fn pins_from_text(path: &Path, text: &str) -> Result<Vec<Pin>, LockfileError> {
    let malformed = |detail: String| LockfileError::Malformed {
        path: path.to_path_buf(),
        detail,
    };
    let value: toml::Table = toml::from_str(text).map_err(|e| malformed(e.to_string()))?;
    match value.get("version").and_then(toml::Value::as_integer) {
        Some(v) if v == LOCK_VERSION as i64 => {}
        Some(found) => {
            return Err(LockfileError::UnsupportedVersion {
                path: path.to_path_buf(),
                found,
            })
        }
        None => return Err(malformed("no integer `version` key".into())),
    }
    if value.contains_key("tools") {
        let bv: crate::lock::bvlock::BvLock =
            toml::from_str(text).map_err(|e| malformed(e.to_string()))?;
        return bv.pins().map_err(|e| malformed(e.to_string()));
    }
    let lockfile = read(path, text)?;
    lockfile.pins().map_err(|e| malformed(e.to_string()))
}

/// Reads `stowage.lock` itself (for `lock`, which rewrites it).
pub fn read_lockfile(path: &Path) -> Result<Lockfile, LockfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| LockfileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read(path, &text)
}

/// [`read_lockfile`] on text already read; `path` names the file in errors.
pub(crate) fn read(path: &Path, text: &str) -> Result<Lockfile, LockfileError> {
    let lockfile: Lockfile = toml::from_str(text).map_err(|e| LockfileError::Malformed {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    if lockfile.version != LOCK_VERSION {
        return Err(LockfileError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: lockfile.version as i64,
        });
    }
    Ok(lockfile)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{pins_from_text, read, LockedImage, LockedLayer, Lockfile, LockfileError};
    use crate::lock::pin::ImageKind;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn image(reference: &str) -> LockedImage {
        LockedImage {
            reference: reference.into(),
            digest: DIGEST.into(),
            platform: "linux/amd64".into(),
            kind: ImageKind::FactoredOci,
            layers: vec![LockedLayer {
                digest: DIGEST.into(),
                size: 42,
                media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
                package: Some("samtools-1.20-h0_0".into()),
                packages: Vec::new(),
                prefix: None,
                python: None,
            }],
            referrers: Vec::new(),
        }
    }

    #[test]
    fn a_lockfile_round_trips_sorted_by_reference() {
        let mut lock = Lockfile::new();
        lock.images = vec![image("z.example/b:1"), image("a.example/a:1")];
        let text = lock.to_toml();
        assert!(
            text.find("a.example/a:1") < text.find("z.example/b:1"),
            "{text}"
        );
        let back = read(Path::new("stowage.lock"), &text).unwrap();
        assert_eq!(back.images[0], lock.images[1]);
        assert_eq!(back.images[1], lock.images[0]);
        let pins = pins_from_text(Path::new("stowage.lock"), &text).unwrap();
        assert_eq!(pins.len(), 2);
        assert_eq!(pins[0].digest.to_string(), DIGEST);
        assert_eq!(pins[0].layers[0].size, 42);
        assert_eq!(
            pins[0].layers[0].package.as_deref(),
            Some("samtools-1.20-h0_0")
        );
        assert_eq!(pins[0].kind, ImageKind::FactoredOci);
    }

    #[test]
    fn referrers_are_pinned_in_their_own_table_and_absent_when_none() {
        let mut lock = Lockfile::new();
        lock.images = vec![image("a.example/a:1")];
        let before = lock.to_toml();
        assert!(!before.contains("referrer"), "{before}");
        lock.images[0].referrers = vec![super::LockedReferrer {
            subject: DIGEST.into(),
            digest: DIGEST.replace("0123", "4567"),
            size: 300,
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            artifact_type: Some("application/spdx+json".into()),
            cosign_tag: Some("sbom".into()),
        }];
        let text = lock.to_toml();
        assert!(text.contains("[[image.referrer]]"), "{text}");
        assert!(text.starts_with("version = 1"), "{text}");
        let pins = pins_from_text(Path::new("stowage.lock"), &text).unwrap();
        let pinned = &pins[0].referrers[0];
        assert_eq!(pinned.size, 300);
        assert_eq!(pinned.subject.to_string(), DIGEST);
        let descriptor = pinned.descriptor();
        assert_eq!(
            crate::oci::referrer::CosignTag::of(&descriptor),
            Some(crate::oci::referrer::CosignTag::Sbom)
        );
        // A file written before referrers existed reads as pinning none.
        let old = pins_from_text(Path::new("old.lock"), &before).unwrap();
        assert!(old[0].referrers.is_empty());
    }

    #[test]
    fn another_version_is_refused_by_name() {
        let text = "version = 2\n";
        let err = pins_from_text(Path::new("x.lock"), text).unwrap_err();
        assert!(
            matches!(err, LockfileError::UnsupportedVersion { found: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("version 2"), "{err}");
        let err = pins_from_text(Path::new("x.lock"), "[image]\n").unwrap_err();
        assert!(err.to_string().contains("no integer `version`"), "{err}");
    }

    #[test]
    fn a_bad_digest_is_a_malformed_lockfile_naming_the_file() {
        let text = "version = 1\n[[image]]\nreference = \"a:1\"\ndigest = \"sha256:zz\"\n\
                    platform = \"linux/amd64\"\nkind = \"oci\"\n";
        let err = pins_from_text(Path::new("bad.lock"), text).unwrap_err();
        assert!(matches!(err, LockfileError::Malformed { .. }), "{err}");
        assert!(err.to_string().starts_with("bad.lock: "), "{err}");
    }
}
