//! Reading a `factor` argument: a package file, or a conda package artifact on a
//! registry named by a reference or by rattler's `oci://` package URL.
//!
//! Kept apart from fetching because it is pure text handling: it decides which
//! arguments may cause a pull at all (a bare `name:tag` or a mistyped file name never
//! does) and derives the mirror's repository and escaped tag from a package file
//! name (see the parent module for the two escaping schemes in use).

use std::path::{Path, PathBuf};

use super::ArtifactError;
use crate::factored::package::PackageFormat;
use crate::oci::reference::Reference;

/// One `factor` input: a package file, or a package artifact on a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageSource {
    File(PathBuf),
    Registry(PackageRef),
}

/// A conda package artifact on a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRef {
    /// The argument as given (for messages).
    pub input: String,
    pub reference: Reference,
    /// The format the input names (rattler's `oci://…/NAME-VERSION-BUILD.conda` form);
    /// the artifact must then have a layer of that format.
    pub format: Option<PackageFormat>,
    /// `NAME-VERSION-BUILD` when the input names a package file; the package must be it.
    pub label: Option<String>,
}

impl PackageSource {
    /// Reads one `factor` argument:
    /// - `docker://REF` (skopeo's spelling): a registry reference, docker's defaults;
    /// - `oci://HOST/REPO[:TAG][@DIGEST]`, or rattler's and pixi's
    ///   `oci://HOST/CHANNEL/SUBDIR/NAME-VERSION-BUILD.conda` (or `.tar.bz2`), which
    ///   names `HOST/CHANNEL/SUBDIR/NAME:VERSION-BUILD` with the mirror's escaping;
    /// - an existing file, or any path ending in `.conda` or `.tar.bz2`: a package file;
    /// - `HOST/REPO[:TAG][@DIGEST]` with an explicit registry host (a name with a `.`
    ///   or `:`, or `localhost`), as crane takes it. A bare `name:tag` is refused
    ///   rather than sent to Docker Hub: a mistyped file name must not become a pull.
    pub fn parse(arg: &str) -> Result<Self, ArtifactError> {
        let input_error = |reason: String| ArtifactError::Input {
            input: arg.to_string(),
            reason,
        };
        if let Some(rest) = arg.strip_prefix("docker://") {
            let reference = rest
                .parse::<Reference>()
                .map_err(|e| input_error(e.to_string()))?;
            return Ok(Self::Registry(PackageRef::new(arg, reference)));
        }
        if let Some(rest) = arg.strip_prefix("oci://") {
            return oci_url(arg, rest).map(Self::Registry);
        }
        let path = Path::new(arg);
        let named_like_a_package = [PackageFormat::Conda, PackageFormat::TarBz2]
            .iter()
            .any(|f| arg.ends_with(f.extension()));
        if path.exists() || named_like_a_package {
            return Ok(Self::File(path.to_path_buf()));
        }
        match arg.parse::<Reference>() {
            Ok(reference) if arg.starts_with(&format!("{}/", reference.registry)) => {
                Ok(Self::Registry(PackageRef::new(arg, reference)))
            }
            _ => Err(input_error(
                "no such package file, and not a registry reference with a host \
                 (HOST/REPO:TAG; docker://REF for Docker Hub)"
                    .into(),
            )),
        }
    }
}

impl PackageRef {
    fn new(input: &str, reference: Reference) -> Self {
        Self {
            input: input.to_string(),
            reference,
            format: None,
            label: None,
        }
    }
}

/// `oci://HOST/…`: a reference, or a package file name under a channel and subdir.
fn oci_url(input: &str, rest: &str) -> Result<PackageRef, ArtifactError> {
    let input_error = |reason: String| ArtifactError::Input {
        input: input.to_string(),
        reason,
    };
    let Some((host, path)) = rest.split_once('/') else {
        return Err(input_error("oci:// needs HOST/REPOSITORY".into()));
    };
    let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
    let named = [PackageFormat::Conda, PackageFormat::TarBz2]
        .into_iter()
        .find_map(|f| file.strip_suffix(f.extension()).map(|stem| (f, stem)));
    let (text, format, label) = match named {
        Some((format, stem)) if !file.contains('@') => {
            let mut parts = stem.rsplitn(3, '-');
            let (build, version, name) = match (parts.next(), parts.next(), parts.next()) {
                (Some(b), Some(v), Some(n)) if !b.is_empty() && !v.is_empty() && !n.is_empty() => {
                    (b, v, n)
                }
                _ => {
                    return Err(input_error(format!(
                        "a package file name is NAME-VERSION-BUILD{}",
                        format.extension()
                    )))
                }
            };
            // OCI repository names cannot start with `_`: the mirror writes `zzz_…`.
            let repo_name = if name.starts_with('_') {
                format!("zzz{name}")
            } else {
                name.to_string()
            };
            let repository = if dir.is_empty() {
                repo_name
            } else {
                format!("{dir}/{repo_name}")
            };
            let tag = mirror_tag(&format!("{version}-{build}"));
            (
                format!("{host}/{repository}:{tag}"),
                Some(format),
                Some(stem.to_string()),
            )
        }
        _ => (rest.to_string(), None, None),
    };
    let reference = text
        .parse::<Reference>()
        .map_err(|e| input_error(e.to_string()))?;
    if reference.registry != host {
        return Err(input_error(format!(
            "oci:// needs a registry host first ({host:?} is not one)"
        )));
    }
    Ok(PackageRef {
        input: input.to_string(),
        reference,
        format,
        label,
    })
}

/// A `VERSION-BUILD` tag escaped as the channel-mirrors mirror, rattler and pixi do.
fn mirror_tag(tag: &str) -> String {
    tag.replace('+', "__p__")
        .replace('!', "__e__")
        .replace('=', "__eq__")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(arg: &str) -> PackageRef {
        match PackageSource::parse(arg) {
            Ok(PackageSource::Registry(r)) => r,
            other => panic!("{arg}: {other:?}"),
        }
    }

    #[test]
    fn skopeo_and_crane_spellings_are_registry_references() {
        let r = registry("docker://127.0.0.1:5000/conda-forge/linux-64/xtensor:0.25.0-h2ffa867_0");
        assert_eq!(r.reference.registry, "127.0.0.1:5000");
        assert_eq!(r.reference.repository, "conda-forge/linux-64/xtensor");
        assert_eq!(r.reference.tag.as_deref(), Some("0.25.0-h2ffa867_0"));
        assert_eq!((r.format, r.label), (None, None));
        let hub = registry("docker://alpine:3");
        assert_eq!(hub.reference.registry, "docker.io");
        let bare = registry("ghcr.io/channel-mirrors/conda-forge/noarch/tzdata:2024a-h0c530f3_0");
        assert_eq!(bare.reference.registry, "ghcr.io");
        let pinned = registry(&format!("localhost:5000/pkgs/x@sha256:{}", "a".repeat(64)));
        assert!(pinned.reference.digest.is_some());
        let oci =
            registry("oci://ghcr.io/channel-mirrors/conda-forge/linux-64/zlib:1.3.1-hb9d3cd8_2");
        assert_eq!(oci.reference.tag.as_deref(), Some("1.3.1-hb9d3cd8_2"));
    }

    #[test]
    fn rattler_package_urls_name_the_mirror_tag() {
        let r = registry(
            "oci://ghcr.io/channel-mirrors/conda-forge/osx-arm64/xtensor-0.25.0-h2ffa867_0.conda",
        );
        assert_eq!(r.reference.registry, "ghcr.io");
        assert_eq!(
            r.reference.repository,
            "channel-mirrors/conda-forge/osx-arm64/xtensor"
        );
        assert_eq!(r.reference.tag.as_deref(), Some("0.25.0-h2ffa867_0"));
        assert_eq!(r.format, Some(PackageFormat::Conda));
        assert_eq!(r.label.as_deref(), Some("xtensor-0.25.0-h2ffa867_0"));

        let r = registry("oci://localhost:5000/c/linux-64/_libgcc_mutex-0.1+cuda!1=2-main.tar.bz2");
        assert_eq!(r.reference.repository, "c/linux-64/zzz_libgcc_mutex");
        assert_eq!(
            r.reference.tag.as_deref(),
            Some("0.1__p__cuda__e__1__eq__2-main")
        );
        assert_eq!(r.format, Some(PackageFormat::TarBz2));
    }

    #[test]
    fn files_and_mistakes_are_not_sent_to_a_registry() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pkg");
        std::fs::write(&file, b"x").unwrap();
        let arg = file.display().to_string();
        assert_eq!(
            PackageSource::parse(&arg).unwrap(),
            PackageSource::File(file.clone())
        );
        for arg in ["missing-1.0-0.conda", "dir/missing-1.0-0.tar.bz2"] {
            assert!(matches!(
                PackageSource::parse(arg),
                Ok(PackageSource::File(_))
            ));
        }
        for arg in [
            "numpy:1.26",
            "numpy",
            "oci://ghcr.io",
            "oci://nohost/x:1",
            "oci://ghcr.io/c/linux-64/nodash.conda",
        ] {
            let err = PackageSource::parse(arg).unwrap_err();
            assert!(matches!(err, ArtifactError::Input { .. }), "{arg}: {err:?}");
        }
    }
}
