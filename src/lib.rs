//! stowage: a daemonless OCI registry puller and content-addressed layer store.
//!
//! The library holds everything; the `stowage` binary (crate `stowage-cli`) is a thin
//! layer over it. The store itself is the `stowage-store` crate, re-exported here as
//! [`store`]. Data flows one way: the feature modules (lock, pull, factored, mirror,
//! runtime) call the registry client and the store; `oci` holds what they all share.
//! The modules are private: the public API is the list below, grouped by domain.
//! `ARCHITECTURE.md` is the map.
//!
//! An environment tool that pins an image by digest, fetches it once and checks it
//! offline (this is `examples/embed.rs`, which the tests run against a registry):
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use stowage::store::{parse_digest, Store};
//! use stowage::{is_locally_available, pull_verified, Client, ClientConfig, Reference, Silent};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open("/var/cache/stowage")?;
//! let client = Arc::new(Client::new(ClientConfig::default())?);
//! let image: Reference = "registry.example/tools/samtools:1.20".parse()?;
//! let digest = parse_digest(
//!     "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
//! )?;
//! // Fetches what the store lacks, every blob checked before it is stored; a
//! // manifest of another digest is refused.
//! let report = pull_verified(client, &store, &image, &digest, Arc::new(Silent)).await?;
//! // From now on, no network is needed to know the image is whole.
//! assert!(is_locally_available(&store, &report.reference, &digest));
//! # Ok(())
//! # }
//! ```

pub use stowage_store as store;

mod factored;
#[doc(hidden)]
pub mod fuzzing;
mod lock;
mod mirror;
mod oci;
mod policy;
mod pull;
mod registry;
mod runtime;

// What images are: references, platforms, manifests read from the store, layers,
// and images built in the store from stored layers. No network.
pub use crate::oci::annotation::{
    ANNOTATION_BUILD, ANNOTATION_NAME, ANNOTATION_PACKAGES, ANNOTATION_PREFIX, ANNOTATION_PYTHON,
    ANNOTATION_SHA256, ANNOTATION_VERSION,
};
pub use crate::oci::assemble::{
    assemble_image, base_image, AssembleError, AssembleLayer, RunConfig,
};
pub use crate::oci::inspect::{inspect, ImageInfo, InspectError, LayerInfo};
pub use crate::oci::layers::{diff_id, Compression, LayerError};
pub use crate::oci::manifest::{ManifestError, ManifestKind, RawManifest};
pub use crate::oci::platform::{Platform, PlatformError};
pub use crate::oci::reference::{registries, Reference, ReferenceError, DEFAULT_REGISTRY};
pub use crate::oci::referrer::ANNOTATION_REFERRER_SUBJECT;
pub use crate::oci::referrer::{
    artifact_type_of, fallback_tag, referrer_descriptor, CosignTag, ReferrerFilter,
    ANNOTATION_COSIGN_SIGNATURE, ANNOTATION_COSIGN_TAG, ARTIFACT_COSIGN_ATTESTATION,
    ARTIFACT_COSIGN_SBOM, ARTIFACT_COSIGN_SIGNATURE, SIMPLE_SIGNING_MEDIA_TYPE,
};

// The OCI distribution client: pull and push on one configuration.
pub use crate::registry::{
    stored_credentials, BlobOptions, Client, ClientConfig, Credentials, LowSpeed, OnBytes,
    PushError, PushOptions, Pusher, RegistryError, RetryPolicy, Secret, MANIFEST_ACCEPT,
};

// Pulling: resolve, choose the platform, fetch what the store lacks, record; the
// layers of factored images by digest; the seeds' embedding API.
pub use crate::pull::ensure::{ensure_layers, EnsureReport};
pub use crate::pull::expect::{Expectations, ExpectedLayer, Mismatch};
pub use crate::pull::pinned::{
    is_locally_available, pull_verified, pull_verified_v2, verify_layer_digests, LayerCheckError,
};
pub use crate::pull::progress::{ProgressReporter, Silent, TerminalProgress};
// Peers: other nodes asked for blobs before the registry, each blob's owner first.
pub use crate::pull::peers::{
    asked_by_a_peer, peer_blob_size, rendezvous, PeerOptions, PeerSpec, PeerSpecError, Peers,
    DEFAULT_PEER_PORT, PEER_REQUEST_HEADER, PEER_SIZE_HEADER,
};
pub use crate::pull::referrers::{pull_referrers, PulledReferrer, ReferrerError};
pub use crate::pull::{
    pull, pull_many, resolve_digest, PullError, PullOptions, PullReport, ResolvedDigest,
};

// Lockfiles: stowage.lock and bv.lock into pins; lock, sync and verify against them.
pub use crate::lock::lockfile::{
    read_lockfile, read_pins, LockedImage, LockedLayer, LockedReferrer, Lockfile, LockfileError,
    LOCK_VERSION,
};
pub use crate::lock::pin::{ImageKind, LayerPin, Pin, ReferrerPin};
pub use crate::lock::resolve::{lock, lock_with_referrers, Moved};
pub use crate::lock::sync::{sync, SyncReport, SyncStatus, SyncedImage};
pub use crate::lock::verify::{verify_lock, LockReport, Problem};

// Factored images: one deterministic layer per conda package.
pub use crate::factored::artifact::{
    fetch_packages, ArtifactError, ArtifactReport, FetchedPackage, PackageRef, PackageSource,
    CONDA_INFO_ARCHIVE, CONDA_INFO_INDEX, CONDA_PACKAGE_V1, CONDA_PACKAGE_V2,
};
pub use crate::factored::compose::{
    factor, factor_with, FactorError, FactorOptions, FactorReport, DEFAULT_MAX_LAYERS,
};
pub use crate::factored::install::{
    install_package, InstallError, LayerKey, LayerOptions, PackageLayer, Prefix, PrefixError,
    DEFAULT_PREFIX,
};
pub use crate::factored::layer_tar::LayerCompression;
pub use crate::factored::noarch::PythonVersion;
pub use crate::factored::package::{CondaPackage, PackageError};
pub use crate::factored::set::{factor_set, read_factor_set, SetError, SetImage};

// Moving images: export/import archives, copy/mirror to registries, serve the store.
pub use crate::mirror::archive::ExportedReferrer;
pub use crate::mirror::archive::{
    export, import, import_reader, plan_pins, plan_refs, ArchiveError, ArchiveFormat, ExportPlan,
    ExportReport, ExportedImage, ImportReport, ImportedImage,
};
pub use crate::mirror::copy::{copy, CopyError, CopyReport};
pub use crate::mirror::serve::{
    bind, raise_fd_limit, serve, serve_with, ServeError, ServeOptions, Server, Upstreams,
};

// Signature policy: containers-policy.json(5) scopes, checked offline against the
// cosign signatures in the store.
pub use crate::policy::{
    signed_subjects, Policy, PolicyError, Refusal, SignedIndexes, Verdict, SYSTEM_POLICY,
};

// Container runtimes: load stored images into podman or docker, run them, warm them.
pub use crate::runtime::warm::{
    pull_targets, sync_targets, warm_one, WarmError, WarmTarget, Warmed,
};
pub use crate::runtime::{
    by_name, parse_env, run_argv, runtime_name, volume_args, ContainerRuntime, Containerd, Docker,
    GpuRequest, ImageError, LoadArchiveError, LoadedImage, Mount, Podman, RunOutcome, RunSpec,
    RunSpecError, RuntimeError, RuntimeImage, RuntimeInfo, StoredImage,
};

// Unpacking a stored image into a root filesystem, with no runtime at all.
pub use crate::runtime::{unpack, UnpackError, UnpackOptions, UnpackReport, UnpackedLayer};
