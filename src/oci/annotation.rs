//! The annotations a factored image's layers carry: which conda package a layer holds
//! and what it was laid out for. Written by `factored`, read by `lock` when pinning a
//! factored image, so they sit here, below both.

/// Annotation naming the package a layer holds.
pub const ANNOTATION_NAME: &str = "org.conda.package.name";
pub const ANNOTATION_VERSION: &str = "org.conda.package.version";
pub const ANNOTATION_BUILD: &str = "org.conda.package.build";
/// The source archive's sha256, bare hex as in conda's repodata.
pub const ANNOTATION_SHA256: &str = "org.conda.package.sha256";
/// The prefix the layer was installed for.
pub const ANNOTATION_PREFIX: &str = "org.conda.layer.prefix";
/// The Python `X.Y` a `noarch: python` layer was laid out for (absent otherwise).
pub const ANNOTATION_PYTHON: &str = "org.conda.layer.python";
/// The packages (`name-version-build`, comma-separated) a grouped layer holds.
pub const ANNOTATION_PACKAGES: &str = "org.conda.layer.packages";
