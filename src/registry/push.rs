//! The push side, beside the pull client and on the same [`ClientConfig`]: insecure
//! hosts, extra CA certificates and credentials mean the same for a push as for a pull.
//! Uploads go through `oci-client` (chunked or monolithic, from a stream), which this
//! file alone wraps; what to upload, and in what order, is the caller's
//! (`mirror::copy`). Whether a target answers the referrers API is asked with the pull
//! client ([`Client::answers_referrers_api`]), which oci-client cannot tell apart from
//! its own tag-schema fallback.

use std::sync::Once;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client as OciClient, Reference as OciReference, RegistryOperation};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT};

use super::credentials::{self, Credentials};
use super::{is_loopback, read_ca_cert, Client, ClientConfig, RegistryError};
use crate::oci::manifest::RawManifest;
use crate::oci::reference::Reference;
use crate::oci::referrer::ReferrerFilter;
use crate::store::Digest;

/// What only a push needs to be told.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// One PUT per blob instead of chunked PATCHes.
    pub monolithic: bool,
    /// Which of the referrers the store holds for the image are pushed after it
    /// (default: all of them).
    pub referrers: ReferrerFilter,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            monolithic: false,
            referrers: ReferrerFilter::All,
        }
    }
}

/// Why a push step failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The target (or a reference made from it) is not one oci-client accepts.
    #[error("{0} is not a reference a registry accepts: {1}")]
    BadTarget(String, String),
    /// The registry refused a step, or it could not be sent.
    #[error("{target}: {what}: {source}")]
    Failed {
        target: String,
        what: String,
        #[source]
        source: OciDistributionError,
    },
    /// The configuration is unusable (a CA certificate that cannot be read).
    #[error(transparent)]
    Config(#[from] RegistryError),
}

/// A logged-in push session to one target repository.
pub struct Pusher {
    client: OciClient,
    /// The target as oci-client names it: the repository, and the tag (or digest) the
    /// top manifest is pushed under.
    target: OciReference,
    /// The target as stowage names it, for errors.
    target_name: String,
    registry: String,
    repository: String,
}

/// rustls needs one process-wide crypto provider; the pull path uses ring too.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Pusher {
    /// Logs in to `target`'s registry for pushing to its repository. Plain HTTP for
    /// `config.insecure` and loopback hosts; `config.ca_certs` besides the system roots;
    /// `config.credentials` for the target's registry, else the stored ones (auth.json,
    /// docker's config.json), else anonymous. The rest of `config` (retries,
    /// concurrency, low-speed limit) governs pulls only.
    pub async fn login(
        config: &ClientConfig,
        target: &Reference,
        options: &PushOptions,
    ) -> Result<Self, PushError> {
        let target_name = target.to_string();
        let oci_target: OciReference =
            target_name.parse().map_err(|e: oci_client::ParseError| {
                PushError::BadTarget(target_name.clone(), e.to_string())
            })?;
        let mut plain: Vec<String> = config.insecure.clone();
        if is_loopback(&target.registry) {
            plain.push(target.registry.clone());
        }
        let extra_root_certificates = config
            .ca_certs
            .iter()
            .map(|path| {
                Ok(Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: read_ca_cert(path)?,
                })
            })
            .collect::<Result<Vec<_>, RegistryError>>()?;
        let credentials = match config.credentials.get(&target.registry) {
            Some(explicit) => Some(explicit.clone()),
            None => {
                let registry = target.registry.clone();
                tokio::task::spawn_blocking(move || credentials::lookup(&registry))
                    .await
                    .unwrap_or(None)
            }
        };
        install_crypto_provider();
        let client = OciClient::new(oci_client::client::ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain),
            use_monolithic_push: options.monolithic,
            extra_root_certificates,
            ..oci_client::client::ClientConfig::default()
        });
        let pusher = Self {
            client,
            target: oci_target,
            target_name,
            registry: target.registry.clone(),
            repository: target.repository.clone(),
        };
        pusher
            .client
            .auth(
                &pusher.target,
                &registry_auth(credentials.as_ref()),
                RegistryOperation::Push,
            )
            .await
            .map_err(pusher.failed("logging in".into()))?;
        Ok(pusher)
    }

    /// Whether the target repository holds `digest` (a HEAD).
    pub async fn has_blob(&self, digest: &Digest) -> Result<bool, PushError> {
        let digest = digest.to_string();
        self.client
            .blob_exists(&self.target, &digest)
            .await
            .map_err(self.failed(format!("checking blob {digest}")))
    }

    /// Mounts `digest` from `source`'s repository on the same registry, sending no
    /// bytes. Failing is no harm: the blob is then uploaded.
    pub async fn mount_blob(&self, source: &Reference, digest: &Digest) -> Result<(), PushError> {
        let from = format!("{}/{}:x", source.registry, source.repository);
        let from: OciReference = from
            .parse()
            .map_err(|e: oci_client::ParseError| PushError::BadTarget(from, e.to_string()))?;
        let digest = digest.to_string();
        self.client
            .mount_blob(&self.target, &from, &digest)
            .await
            .map_err(self.failed(format!("mounting blob {digest}")))
    }

    /// Uploads the blob `digest` of `size` bytes from `body`; the registry checks the
    /// digest. A read error in `body` fails the upload with it.
    pub async fn upload_blob(
        &self,
        digest: &Digest,
        size: u64,
        body: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    ) -> Result<(), PushError> {
        let digest = digest.to_string();
        let body = body.map(|chunk| chunk.map_err(OciDistributionError::IoError));
        self.client
            .push_blob_stream(&self.target, body, &digest, Some(size))
            .await
            .map_err(self.failed(format!("uploading blob {digest}")))?;
        Ok(())
    }

    /// Pushes `manifest` to the target repository by its digest (a child of the top
    /// manifest, which names it by digest).
    pub async fn push_manifest_by_digest(&self, manifest: &RawManifest) -> Result<(), PushError> {
        let at: OciReference = format!("{}/{}@{}", self.registry, self.repository, manifest.digest)
            .parse()
            .map_err(|e: oci_client::ParseError| {
                PushError::BadTarget(self.target_name.clone(), e.to_string())
            })?;
        self.push_manifest_at(&at, manifest).await
    }

    /// Pushes `manifest` under the target as it was named (its tag, or its digest).
    pub async fn push_manifest_as_target(&self, manifest: &RawManifest) -> Result<(), PushError> {
        self.push_manifest_at(&self.target, manifest).await
    }

    /// Pushes `manifest` to the target repository under `tag` (a tag schema's tag).
    pub async fn push_manifest_as_tag(
        &self,
        manifest: &RawManifest,
        tag: &str,
    ) -> Result<(), PushError> {
        let at: OciReference = format!("{}/{}:{tag}", self.registry, self.repository)
            .parse()
            .map_err(|e: oci_client::ParseError| {
                PushError::BadTarget(format!("{}:{tag}", self.target_name), e.to_string())
            })?;
        self.push_manifest_at(&at, manifest).await
    }

    async fn push_manifest_at(
        &self,
        at: &OciReference,
        manifest: &RawManifest,
    ) -> Result<(), PushError> {
        let content_type = manifest
            .media_type
            .parse()
            .expect("a media type is a valid header value");
        self.client
            .push_manifest_raw(at, manifest.bytes.clone(), content_type)
            .await
            .map_err(self.failed(format!("uploading manifest {}", manifest.digest)))?;
        Ok(())
    }

    /// Turns oci-client's error for step `what` into ours.
    fn failed(&self, what: String) -> impl FnOnce(OciDistributionError) -> PushError {
        let target = self.target_name.clone();
        move |source| PushError::Failed {
            target,
            what,
            source,
        }
    }
}

impl Client {
    /// Whether `reference`'s registry answers the referrers API
    /// (`GET /v2/<name>/referrers/<subject>`) for its repository: a client error (404
    /// from a registry that predates it) means it does not, and referrers are pushed
    /// under the tag schemas instead.
    pub async fn answers_referrers_api(
        &self,
        reference: &Reference,
        subject: &Digest,
    ) -> Result<bool, RegistryError> {
        let host = reference.api_host();
        let url = format!(
            "{}/v2/{}/referrers/{subject}",
            self.base_url(host).await,
            reference.repository
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
        );
        match self.get(host, &reference.repository, &url, headers).await {
            Ok(_) => Ok(true),
            Err(RegistryError::Status { status, .. }) if (400..500).contains(&status) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn registry_auth(credentials: Option<&Credentials>) -> RegistryAuth {
    match credentials {
        Some(Credentials::Basic { username, password }) => {
            RegistryAuth::Basic(username.clone(), password.expose().to_string())
        }
        Some(Credentials::IdentityToken(token)) => RegistryAuth::Bearer(token.expose().to_string()),
        None => RegistryAuth::Anonymous,
    }
}
