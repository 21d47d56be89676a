//! Conda packages stored on a registry as OCI artifacts, as inputs to `factor`.
//!
//! # What such an artifact looks like
//! conda-forge's and bioconda's mirror on ghcr.io (`ghcr.io/channel-mirrors/…`, pushed
//! by conda-oci-mirror with oras), and the draft CEP "OCI Storage of conda Artifacts"
//! (conda/ceps PRs 70 and 115), lay a package out as one OCI image manifest:
//! - the config is oras' placeholder (`application/vnd.unknown.config.v1+json`, `{}`)
//!   or the OCI empty descriptor; it says nothing about the package and is not fetched;
//! - the package archive is one layer of type [`CONDA_PACKAGE_V1`] (a `.tar.bz2`) or
//!   [`CONDA_PACKAGE_V2`] (a `.conda`), its `org.opencontainers.image.title` the file name;
//! - optional layers: the `info/` folder as a tar.gz ([`CONDA_INFO_ARCHIVE`]) and
//!   `info/index.json` ([`CONDA_INFO_INDEX`]); some mirrored manifests also carry a plain
//!   `application/vnd.oci.image.layer.v1.tar` layer. None of them is needed here: the
//!   metadata is read from the archive itself.
//! - the CEP adds manifest annotations `org.conda.package.{name,version,build}`; when
//!   present they must agree with the package's own `info/index.json`.
//!
//! The repository is `<channel>/<subdir>/<name>` and the tag `<version>-<build>`,
//! escaped because tags cannot hold `+`, `!` or `=`. The live mirror, rattler, pixi and
//! mamba use `+` → `__p__`, `!` → `__e__`, `=` → `__eq__` and prefix names starting
//! with `_` with `zzz`; the CEP draft instead prefixes every name with `c` and maps
//! `_` → `__`, `+` → `_P`, `!` → `_N`. So the layer is found by media type, never by
//! position, and the tag is only ever written by the user (or derived from a package
//! file name in rattler's `oci://` URL form, with the live mirror's escaping).
//! Reading the arguments that name such artifacts is [`PackageSource::parse`], in the
//! `source` submodule; this module fetches them.
//!
//! # How a package is fetched
//! With the pull path's client: the manifest by tag or digest, then the one package
//! blob, verified into the store like any layer (resumable, retried, never fetched
//! when the store holds it, once per run however many inputs name it). The package is
//! then read from the store's blob file in place: [`CondaPackage`] tells the format
//! from the bytes, which must agree with the media type. The package's sha256 is the
//! sha256 of the archive, which is the blob's digest, so a package gives the same
//! layer whether it came from a file or from a registry.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::try_join_all;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use oci_spec::image::{Descriptor, DigestAlgorithm, ImageManifest};
use serde::Serialize;

// The CEP draft's manifest annotations are the ones a factored layer carries.
use super::package::{CondaPackage, PackageError, PackageFormat};
use crate::oci::annotation::{ANNOTATION_BUILD, ANNOTATION_NAME, ANNOTATION_VERSION};
use crate::oci::manifest::ManifestKind;
use crate::pull::progress::ProgressReporter;
use crate::pull::{fetch_all, PullError, PullOptions};
use crate::registry::Client;
use crate::store::{Digest, Store, StoreError};

mod source;
pub use source::{PackageRef, PackageSource};

/// Manifest requests in flight at once while resolving registry packages.
const MANIFESTS_IN_FLIGHT: usize = 8;

/// The media type of a `.tar.bz2` package layer.
pub const CONDA_PACKAGE_V1: &str = "application/vnd.conda.package.v1";
/// The media type of a `.conda` package layer.
pub const CONDA_PACKAGE_V2: &str = "application/vnd.conda.package.v2";
/// The optional layer holding the package's `info/` folder as a tar.gz.
pub const CONDA_INFO_ARCHIVE: &str = "application/vnd.conda.info.v1.tar+gzip";
/// The optional layer holding the package's `info/index.json`.
pub const CONDA_INFO_INDEX: &str = "application/vnd.conda.info.index.v1+json";

/// The layer media type of a package format.
pub fn media_type_of(format: PackageFormat) -> &'static str {
    match format {
        PackageFormat::TarBz2 => CONDA_PACKAGE_V1,
        PackageFormat::Conda => CONDA_PACKAGE_V2,
    }
}

/// Why a registry package could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// An argument that is neither a package file nor a registry reference.
    #[error("{input}: {reason}")]
    Input { input: String, reason: String },
    /// The manifest or the blob could not be fetched.
    #[error("{reference}: {source}")]
    Fetch {
        reference: String,
        #[source]
        source: Box<PullError>,
    },
    /// The reference names an index, not one artifact.
    #[error("{reference} is an image index, not a conda package artifact")]
    Index { reference: String },
    /// No layer has a conda package media type (or the one the input asked for).
    #[error(
        "{reference} holds no conda package: no layer of type {}; it has {}",
        wanted.join(" or "),
        found.join(", ")
    )]
    NoPackageLayer {
        reference: String,
        wanted: Vec<&'static str>,
        /// What the manifest does hold (`layer TYPE`, `config TYPE`).
        found: Vec<String>,
    },
    /// More than one layer of the package media type: which is the package is unclear.
    #[error("{reference} holds {count} layers of type {media_type}: which one is the package is ambiguous")]
    AmbiguousPackage {
        reference: String,
        media_type: &'static str,
        count: usize,
    },
    /// The blob is not the archive format its media type says.
    #[error("{reference}: layer {digest} is typed {media_type} (a {expected} package) but holds a {actual} package")]
    FormatMismatch {
        reference: String,
        digest: String,
        media_type: &'static str,
        expected: &'static str,
        actual: &'static str,
    },
    /// The blob is not a readable conda package.
    #[error("{reference}: layer {digest}: {source}")]
    Package {
        reference: String,
        digest: String,
        #[source]
        source: Box<PackageError>,
    },
    /// The stored blob no longer hashes to its digest.
    #[error("{reference}: the stored blob {digest} hashes to {actual} (run `stowage verify`)")]
    Corrupt {
        reference: String,
        digest: String,
        actual: String,
    },
    /// The artifact says it is one package and the archive is another.
    #[error("{reference}: {what} says {claimed:?}, but the package is {actual:?}")]
    NotThePackage {
        reference: String,
        what: String,
        claimed: String,
        actual: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A package artifact whose package blob is in the store.
#[derive(Debug, Clone)]
pub struct FetchedPackage {
    pub source: PackageRef,
    /// The artifact's manifest digest.
    pub manifest_digest: Digest,
    /// The package layer.
    pub layer: Descriptor,
    pub format: PackageFormat,
    /// The manifest's annotations.
    annotations: HashMap<String, String>,
}

/// What fetching the registry packages did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArtifactReport {
    pub packages: usize,
    pub blobs_fetched: usize,
    pub bytes_fetched: u64,
    pub bytes_present: u64,
}

/// Resolves every reference to its artifact manifest and brings each package blob the
/// store lacks into it, verified; each distinct blob is asked for once. Hold a
/// [`Store::lease`] until the packages are used: the blobs are referenced by no ref.
pub async fn fetch_packages(
    client: Arc<Client>,
    store: &Store,
    packages: &[PackageRef],
    options: &PullOptions,
    progress: Arc<dyn ProgressReporter>,
) -> Result<(Vec<FetchedPackage>, ArtifactReport), ArtifactError> {
    // A few manifests at a time, in order: an environment of hundreds of packages must
    // not open hundreds of requests at once (registries rate-limit that).
    let fetched: Vec<FetchedPackage> = stream::iter(packages.iter().map(|p| resolve(&client, p)))
        .buffered(MANIFESTS_IN_FLIGHT)
        .try_collect()
        .await?;
    let mut report = ArtifactReport {
        packages: fetched.len(),
        ..ArtifactReport::default()
    };
    // The blobs to fetch, each once, from the first repository that names it.
    let mut wanted: Vec<(&FetchedPackage, Descriptor)> = Vec::new();
    for package in &fetched {
        if wanted
            .iter()
            .any(|(_, d)| d.digest() == package.layer.digest())
        {
            continue;
        }
        match store.stat(package.layer.digest())? {
            Some(size) => report.bytes_present += size,
            None => wanted.push((package, package.layer.clone())),
        }
    }
    progress.plan(
        wanted.iter().map(|(_, d)| d.size()).sum(),
        report.bytes_present,
    );
    let results = try_join_all(wanted.into_iter().map(|(package, layer)| {
        let (client, progress) = (client.clone(), progress.clone());
        async move {
            let reference = &package.source.reference;
            fetch_all(&client, store, reference, vec![layer], options, &progress)
                .await
                .map_err(|source| ArtifactError::Fetch {
                    reference: package.source.input.clone(),
                    source: Box::new(source),
                })
        }
    }))
    .await?;
    for (blobs, bytes, present) in results {
        report.blobs_fetched += blobs;
        report.bytes_fetched += bytes;
        report.bytes_present += present;
    }
    if report.blobs_fetched > 0 {
        store.sync_blob_dirs()?;
    }
    Ok((fetched, report))
}

/// Fetches the artifact's manifest and picks its package layer.
async fn resolve(client: &Client, source: &PackageRef) -> Result<FetchedPackage, ArtifactError> {
    let reference = &source.reference;
    let fetch_error = |source: PullError| ArtifactError::Fetch {
        reference: reference.to_string(),
        source: Box::new(source),
    };
    let manifest = client
        .manifest(reference, &reference.target())
        .await
        .map_err(|e| fetch_error(e.into()))?;
    let image = match manifest
        .parse(&reference.to_string())
        .map_err(|e| fetch_error(e.into()))?
    {
        ManifestKind::Image(image) => image,
        ManifestKind::Index(_) => {
            return Err(ArtifactError::Index {
                reference: reference.to_string(),
            })
        }
    };
    let (layer, format) = package_layer(&reference.to_string(), &image, source.format)?;
    Ok(FetchedPackage {
        source: source.clone(),
        manifest_digest: manifest.digest,
        layer,
        format,
        annotations: image.annotations().clone().unwrap_or_default(),
    })
}

/// The layer holding the package: of the format asked for, else the `.conda` one (the
/// CEP's choice when a package exists in both formats), else the `.tar.bz2` one.
fn package_layer(
    reference: &str,
    manifest: &ImageManifest,
    format: Option<PackageFormat>,
) -> Result<(Descriptor, PackageFormat), ArtifactError> {
    let wanted: Vec<PackageFormat> = match format {
        Some(format) => vec![format],
        None => vec![PackageFormat::Conda, PackageFormat::TarBz2],
    };
    for format in &wanted {
        let media_type = media_type_of(*format);
        let layers: Vec<&Descriptor> = manifest
            .layers()
            .iter()
            .filter(|l| l.media_type().to_string() == media_type)
            .collect();
        match layers.as_slice() {
            [] => continue,
            [layer] => return Ok(((*layer).clone(), *format)),
            _ => {
                return Err(ArtifactError::AmbiguousPackage {
                    reference: reference.to_string(),
                    media_type,
                    count: layers.len(),
                })
            }
        }
    }
    let mut found: Vec<String> = manifest
        .layers()
        .iter()
        .map(|l| format!("layer {}", l.media_type()))
        .collect();
    found.push(format!("config {}", manifest.config().media_type()));
    Err(ArtifactError::NoPackageLayer {
        reference: reference.to_string(),
        wanted: wanted.into_iter().map(media_type_of).collect(),
        found,
    })
}

impl FetchedPackage {
    /// Reads the package from its blob in the store, in place, and checks it is what
    /// the artifact says: the format its media type names, the bytes its digest names,
    /// and the name, version and build the manifest's annotations (or the input's file
    /// name) give.
    pub fn open(&self, store: &Store) -> Result<CondaPackage, ArtifactError> {
        let reference = self.source.reference.to_string();
        let digest = self.layer.digest();
        let package = CondaPackage::open(store.blob_path(digest)).map_err(|source| {
            ArtifactError::Package {
                reference: reference.clone(),
                digest: digest.to_string(),
                source: Box::new(source),
            }
        })?;
        if package.format() != self.format {
            return Err(ArtifactError::FormatMismatch {
                reference,
                digest: digest.to_string(),
                media_type: media_type_of(self.format),
                expected: self.format.extension(),
                actual: package.format().extension(),
            });
        }
        if *digest.algorithm() == DigestAlgorithm::Sha256 && package.sha256() != digest {
            return Err(ArtifactError::Corrupt {
                reference,
                digest: digest.to_string(),
                actual: package.sha256().to_string(),
            });
        }
        let meta = package.metadata();
        let claims = [
            (ANNOTATION_NAME, &meta.name),
            (ANNOTATION_VERSION, &meta.version),
            (ANNOTATION_BUILD, &meta.build),
        ];
        for (annotation, actual) in claims {
            if let Some(claimed) = self.annotations.get(annotation) {
                if claimed != actual {
                    return Err(ArtifactError::NotThePackage {
                        reference,
                        what: format!("the manifest's {annotation}"),
                        claimed: claimed.clone(),
                        actual: actual.clone(),
                    });
                }
            }
        }
        if let Some(label) = &self.source.label {
            if *label != package.label() {
                return Err(ArtifactError::NotThePackage {
                    reference,
                    what: self.source.input.clone(),
                    claimed: label.clone(),
                    actual: package.label(),
                });
            }
        }
        Ok(package)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(layers: &[&str]) -> ImageManifest {
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::json!({"mediaType": t, "size": 1,
                    "digest": format!("sha256:{}", format!("{i}").repeat(64))})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.unknown.config.v1+json", "size": 2,
                "digest": format!("sha256:{}", "e".repeat(64))},
            "layers": layers,
        }))
        .unwrap()
    }

    #[test]
    fn the_package_layer_is_found_by_media_type() {
        let m = manifest(&[CONDA_INFO_ARCHIVE, CONDA_PACKAGE_V1, CONDA_INFO_INDEX]);
        let (layer, format) = package_layer("r", &m, None).unwrap();
        assert_eq!(format, PackageFormat::TarBz2);
        assert_eq!(layer.digest().digest(), "1".repeat(64));

        let both = manifest(&[CONDA_PACKAGE_V1, CONDA_PACKAGE_V2]);
        assert_eq!(
            package_layer("r", &both, None).unwrap().1,
            PackageFormat::Conda
        );
        assert_eq!(
            package_layer("r", &both, Some(PackageFormat::TarBz2))
                .unwrap()
                .1,
            PackageFormat::TarBz2
        );

        let none = manifest(&["application/vnd.oci.image.layer.v1.tar", CONDA_INFO_INDEX]);
        let err = package_layer("host/c/x:1", &none, None)
            .unwrap_err()
            .to_string();
        for part in [
            "host/c/x:1",
            CONDA_PACKAGE_V2,
            CONDA_PACKAGE_V1,
            "layer application/vnd.oci.image.layer.v1.tar",
            "config application/vnd.unknown.config.v1+json",
        ] {
            assert!(err.contains(part), "{part} missing from: {err}");
        }
        let only_conda = manifest(&[CONDA_PACKAGE_V2]);
        assert!(matches!(
            package_layer("r", &only_conda, Some(PackageFormat::TarBz2)),
            Err(ArtifactError::NoPackageLayer { .. })
        ));
        let twice = manifest(&[CONDA_PACKAGE_V2, CONDA_PACKAGE_V2]);
        assert!(matches!(
            package_layer("r", &twice, None),
            Err(ArtifactError::AmbiguousPackage { count: 2, .. })
        ));
    }
}
