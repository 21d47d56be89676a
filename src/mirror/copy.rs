//! `copy` and `mirror`: push images from the store to a registry, uploading only the
//! blobs the target lacks (a HEAD first; a cross-repository mount when the source image
//! came from the same registry), blobs before manifests and the top manifest last, so
//! the target never names content it does not hold.
//!
//! Pushes go through `oci-client` (chunked or monolithic uploads from a stream); the
//! pull path has its own client (see `registry`'s module docs). A registry source is
//! pulled into the store first, so nothing is downloaded twice and the store stays a cache.

use std::sync::{Arc, Once};

use futures_util::stream;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client as PushClient, Reference as PushReference, RegistryOperation};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::oci::reference::Reference;
use crate::oci::manifest::RawManifest;
use crate::registry::Credentials;
use crate::store::{
    children, is_graph_type, Descriptor, Digest, Store, StoreError, MANIFEST_LIMIT,
};

/// How to reach the target registry.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Hosts to push to over plain HTTP (loopback hosts always are).
    pub insecure: Vec<String>,
    /// Extra CA certificates (PEM files' contents).
    pub ca_certs: Vec<Vec<u8>>,
    pub credentials: Option<Credentials>,
    /// One PUT per blob instead of chunked PATCHes.
    pub monolithic: bool,
}

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    pub source: String,
    pub target: String,
    pub manifest_digest: String,
    pub blobs_uploaded: usize,
    pub blobs_mounted: usize,
    pub blobs_present: usize,
    pub bytes_uploaded: u64,
}

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("no image named {0} in the store")]
    NotInStore(String),
    #[error("{target}: {what}: {source}")]
    Push {
        target: String,
        what: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("{0} is not a reference a registry accepts: {1}")]
    BadTarget(String, String),
    #[error("the store lacks blob {digest} that {image} needs (pull it again)")]
    Incomplete { image: String, digest: Digest },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading blob {digest} from the store: {source}")]
    Read {
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
}

/// rustls needs one process-wide crypto provider; the pull path uses ring too.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client for pushing to `target`'s registry.
fn push_client(target: &Reference, options: &PushOptions) -> PushClient {
    install_crypto_provider();
    let mut plain: Vec<String> = options.insecure.clone();
    if crate::registry::is_loopback(&target.registry) {
        plain.push(target.registry.clone());
    }
    PushClient::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain),
        use_monolithic_push: options.monolithic,
        extra_root_certificates: options
            .ca_certs
            .iter()
            .map(|pem| Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            })
            .collect(),
        ..ClientConfig::default()
    })
}

fn registry_auth(options: &PushOptions) -> RegistryAuth {
    match &options.credentials {
        Some(Credentials::Basic { username, password }) => {
            RegistryAuth::Basic(username.clone(), password.expose().to_string())
        }
        Some(Credentials::IdentityToken(token)) => RegistryAuth::Bearer(token.expose().to_string()),
        None => RegistryAuth::Anonymous,
    }
}

/// Pushes the stored image `name` to `target`.
pub async fn copy(
    store: &Store,
    name: &str,
    target: &Reference,
    options: &PushOptions,
) -> Result<CopyReport, CopyError> {
    let root = store
        .resolve_ref(name)?
        .ok_or_else(|| CopyError::NotInStore(name.to_string()))?;
    let target_name = target.to_string();
    let push_ref: PushReference = target_name.parse().map_err(|e: oci_client::ParseError| {
        CopyError::BadTarget(target_name.clone(), e.to_string())
    })?;
    let client = Arc::new(push_client(target, options));
    let fail = |what: String| {
        let target = target_name.clone();
        move |source| CopyError::Push {
            target,
            what,
            source,
        }
    };
    client
        .auth(&push_ref, &registry_auth(options), RegistryOperation::Push)
        .await
        .map_err(fail("logging in".into()))?;

    let (blobs, manifests) = plan(store, name, &root)?;
    // Where the image came from: blobs on the same registry are mounted, not sent.
    let source: Option<PushReference> = name
        .parse::<Reference>()
        .ok()
        .filter(|s| s.registry == target.registry && s.repository != target.repository)
        .and_then(|s| format!("{}/{}:x", s.registry, s.repository).parse().ok());
    let mut report = CopyReport {
        source: name.to_string(),
        target: target_name.clone(),
        manifest_digest: root.digest().to_string(),
        ..CopyReport::default()
    };
    for blob in &blobs {
        let digest = blob.digest().to_string();
        if client
            .blob_exists(&push_ref, &digest)
            .await
            .map_err(fail(format!("checking blob {digest}")))?
        {
            report.blobs_present += 1;
            continue;
        }
        if let Some(source) = &source {
            if client.mount_blob(&push_ref, source, &digest).await.is_ok() {
                report.blobs_mounted += 1;
                continue;
            }
        }
        let size = blob.size();
        let body = blob_stream(store, blob.digest()).await?;
        client
            .push_blob_stream(&push_ref, body, &digest, Some(size))
            .await
            .map_err(fail(format!("uploading blob {digest}")))?;
        report.blobs_uploaded += 1;
        report.bytes_uploaded += size;
    }
    // Child manifests by digest, then the top one under the target's tag.
    for (i, manifest) in manifests.iter().enumerate() {
        let last = i + 1 == manifests.len();
        let reference = if last {
            push_ref.clone()
        } else {
            format!(
                "{}/{}@{}",
                target.registry, target.repository, manifest.digest
            )
            .parse()
            .map_err(|e: oci_client::ParseError| {
                CopyError::BadTarget(target_name.clone(), e.to_string())
            })?
        };
        let content_type = manifest
            .media_type
            .parse()
            .expect("a media type is a valid header value");
        client
            .push_manifest_raw(&reference, manifest.bytes.clone(), content_type)
            .await
            .map_err(fail(format!("uploading manifest {}", manifest.digest)))?;
    }
    Ok(report)
}

/// The blobs (configs and layers) and the manifests (children first, the root last)
/// of a stored image; every one of them must be in the store.
fn plan(
    store: &Store,
    name: &str,
    root: &Descriptor,
) -> Result<(Vec<Descriptor>, Vec<RawManifest>), CopyError> {
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut manifests: Vec<RawManifest> = Vec::new();
    let mut stack = vec![(root.clone(), false)];
    while let Some((descriptor, expanded)) = stack.pop() {
        let digest = descriptor.digest().clone();
        if !store.has(&digest) {
            return Err(CopyError::Incomplete {
                image: name.to_string(),
                digest,
            });
        }
        if !is_graph_type(descriptor.media_type().as_ref()) {
            if !blobs.iter().any(|b| b.digest() == &digest) {
                blobs.push(descriptor);
            }
            continue;
        }
        let bytes = store.read_blob(&digest, MANIFEST_LIMIT)?;
        if expanded {
            if !manifests.iter().any(|m| m.digest == digest) {
                manifests.push(RawManifest::from_stored(bytes, digest));
            }
            continue;
        }
        let kids = children(&bytes).map_err(|e| StoreError::Corrupt {
            digest: digest.clone(),
            detail: format!("not a valid manifest: {e}"),
        })?;
        // Revisit this manifest after its children, so it is pushed after them.
        stack.push((descriptor, true));
        stack.extend(kids.into_iter().map(|k| (k, false)));
    }
    Ok((blobs, manifests))
}

/// A stored blob as a stream of 1 MiB chunks: memory stays flat whatever its size.
async fn blob_stream(
    store: &Store,
    digest: &Digest,
) -> Result<
    impl futures_util::Stream<Item = oci_client::errors::Result<bytes::Bytes>> + Send + 'static,
    CopyError,
> {
    let path = store.blob_path(digest);
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|source| CopyError::Read {
            digest: digest.clone(),
            source,
        })?;
    Ok(stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = bytes::BytesMut::with_capacity(1 << 20);
        match file.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(file))),
            // End the stream after an error; the upload fails with it.
            Err(e) => Some((
                Err(oci_client::errors::OciDistributionError::IoError(e)),
                None,
            )),
        }
    }))
}
