//! The OCI distribution client: pulls and pushes side by side, configured by one
//! [`ClientConfig`]. The pull side ([`Client`]) is written on `reqwest` directly:
//! `oci-client` 0.18 returns Range responses unverified, has no retries and loses
//! Retry-After, cannot take our HTTP client, and keeps the first credentials per
//! registry (ARCHITECTURE.md). Auth, manifests, blob GETs with resume and retries. It
//! never writes files itself; blob bodies go into the store's ingest. The push side
//! ([`Pusher`], `push.rs`) wraps `oci-client`, which serves uploads well.

mod auth;
mod blob;
mod body;
mod credentials;
mod error;
mod low_speed;
mod manifest;
mod push;
mod referrers;
mod retry;
mod split;

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reqwest::header::{HeaderMap, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use tokio::sync::Semaphore;

pub use credentials::{Credentials, Secret};
// For `crate::fuzzing`, which drives the challenge reading without a registry.
pub(crate) use auth::{foreign_plain_realm, read_challenge, Challenge};
pub use blob::{BlobOptions, OnBytes};
pub use credentials::lookup as stored_credentials;
pub use error::RegistryError;
pub use low_speed::LowSpeed;
// For the peers' blob fetch (`pull::peers`), judged by the same limit.
pub(crate) use low_speed::SpeedWindow;
// What `Client::manifest` returns, and what parsing it gives; defined below all I/O.
pub use crate::oci::manifest::ManifestKind;
pub use manifest::MANIFEST_ACCEPT;
pub use push::{PushError, PushOptions, Pusher};
pub use retry::RetryPolicy;

/// How to reach registries, for pulls and pushes alike (`retry`, `concurrency` and
/// `low_speed` bound pulls only).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Registries (`host[:port]`) that may be reached over plain HTTP when they do not
    /// speak TLS. Loopback hosts always may.
    pub insecure: Vec<String>,
    /// Extra CA certificates (PEM) to trust besides the system roots.
    pub ca_certs: Vec<PathBuf>,
    /// Credentials per registry host.
    pub credentials: HashMap<String, Credentials>,
    pub retry: RetryPolicy,
    /// Blob downloads in flight at once, across the whole process.
    pub concurrency: usize,
    /// Blob responses slower than this are given up on (and retried).
    pub low_speed: LowSpeed,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            insecure: Vec::new(),
            ca_certs: Vec::new(),
            credentials: HashMap::new(),
            retry: RetryPolicy::default(),
            concurrency: 16,
            low_speed: LowSpeed::default(),
        }
    }
}

/// A registry client; cheap to share (`Arc`) across tasks.
pub struct Client {
    /// Without any CA store: for plain-HTTP registries, and for probing whether a
    /// host speaks TLS at all (an unknown issuer still means TLS).
    plain: reqwest::Client,
    /// With the system roots and `--ca-cert`s, built on the first https request so a
    /// pull from a plain-HTTP registry never pays for loading the CA store.
    tls: OnceLock<Result<reqwest::Client, String>>,
    ca_certs: Vec<reqwest::Certificate>,
    auth: auth::Auth,
    retry: RetryPolicy,
    low_speed: LowSpeed,
    insecure: HashSet<String>,
    /// The scheme each host was found to speak.
    schemes: Mutex<HashMap<String, &'static str>>,
    downloads: Arc<Semaphore>,
    /// The permits of `downloads`.
    concurrency: usize,
    /// State the layers above keep per client, one value of each type, made on first
    /// use: the pull side's blobs in flight and bound on open blobs (`pull::fetch`).
    /// The client only holds it, so that everything sharing the client shares it.
    attached: Mutex<Vec<Arc<dyn Any + Send + Sync>>>,
    /// Blob body bytes received so far by this client, for judging how fast the link
    /// is as a whole (`split.rs`).
    received: std::sync::atomic::AtomicU64,
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("stowage/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        // A stalled connection must not hold a download slot for ever: a read that
        // waits this long is a cut, and the blob resumes from where it stopped.
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(60))
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self, RegistryError> {
        let mut ca_certs = Vec::new();
        for path in &config.ca_certs {
            let pem = read_ca_cert(path)?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| RegistryError::Config {
                what: path.display().to_string(),
                detail: format!("not a PEM certificate: {e}"),
            })?;
            ca_certs.push(cert);
        }
        let plain = client_builder()
            .tls_built_in_root_certs(false)
            .build()
            .map_err(|source| RegistryError::Http {
                url: "(client set-up)".into(),
                source: source.without_url(),
            })?;
        Ok(Self {
            plain,
            tls: OnceLock::new(),
            ca_certs,
            auth: auth::Auth::new(config.credentials),
            retry: config.retry,
            low_speed: config.low_speed,
            insecure: config.insecure.into_iter().collect(),
            schemes: Mutex::default(),
            downloads: Arc::new(Semaphore::new(config.concurrency.max(1))),
            concurrency: config.concurrency.max(1),
            attached: Mutex::default(),
            received: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The HTTP client for `url`: the plain one for http://, the verifying one for
    /// https://.
    pub(crate) fn http_for(&self, url: &str) -> Result<&reqwest::Client, RegistryError> {
        if !url.starts_with("https://") {
            return Ok(&self.plain);
        }
        let tls = self.tls.get_or_init(|| {
            let mut builder = client_builder();
            for cert in &self.ca_certs {
                builder = builder.add_root_certificate(cert.clone());
            }
            builder.build().map_err(|e| e.to_string())
        });
        tls.as_ref().map_err(|detail| RegistryError::Config {
            what: url.to_string(),
            detail: format!("cannot set up TLS: {detail}"),
        })
    }

    /// `https://` for every registry, except loopback and insecure ones that do not
    /// speak TLS (probed once per host, as docker does): those get `http://`.
    pub async fn base_url(&self, host: &str) -> String {
        let known = self
            .schemes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            .copied();
        let scheme = match known {
            Some(scheme) => scheme,
            None => {
                let (scheme, settled) = if self.insecure.contains(host) || is_loopback(host) {
                    self.probe_tls(host).await
                } else {
                    ("https", true)
                };
                if settled {
                    self.schemes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(host.to_string(), scheme);
                }
                scheme
            }
        };
        format!("{scheme}://{host}")
    }

    /// Whether a host answers TLS. A certificate we do not trust still means TLS: the
    /// request then fails with that certificate error rather than falling back.
    ///
    /// Returns the scheme and whether the answer is settled: a host that refused the
    /// connection or did not answer in time said nothing about TLS, so that answer is
    /// not remembered (a registry still starting must not be downgraded for good).
    async fn probe_tls(&self, host: &str) -> (&'static str, bool) {
        let url = format!("https://{host}/v2/");
        match self
            .plain
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(_) => ("https", true),
            Err(e) if is_certificate_error(&e) => ("https", true),
            Err(e) if e.is_timeout() || is_refused(&e) => ("http", false),
            Err(_) => {
                tracing::debug!(host, "no TLS; using plain HTTP");
                ("http", true)
            }
        }
    }

    /// The low-speed limit responses are held to.
    pub(crate) fn low_speed(&self) -> LowSpeed {
        self.low_speed
    }

    /// Counts blob body bytes received.
    pub(crate) fn count_received(&self, bytes: u64) {
        self.received
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Blob body bytes received so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The bound on concurrent blob downloads.
    pub(crate) fn downloads(&self) -> &Arc<Semaphore> {
        &self.downloads
    }

    /// How many downloads run at once (`--concurrency`).
    pub(crate) fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// The `T` attached to this client, made by `init` the first time one is asked for;
    /// every holder of this client gets the same one.
    pub(crate) fn attached<T: Any + Send + Sync>(&self, init: impl FnOnce(&Self) -> T) -> Arc<T> {
        let mut attached = self.attached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = attached
            .iter()
            .find_map(|a| Arc::clone(a).downcast::<T>().ok())
        {
            return found;
        }
        let made = Arc::new(init(self));
        attached.push(made.clone());
        made
    }

    /// GETs `url` on `host` for a pull of `repository`: authenticates on a 401, retries
    /// 429, 5xx and dropped connections, and turns any other failure into an error
    /// that carries the registry's own message.
    pub(crate) async fn get(
        &self,
        host: &str,
        repository: &str,
        url: &str,
        headers: HeaderMap,
    ) -> Result<Response, RegistryError> {
        let scope = format!("repository:{repository}:pull");
        let mut authorization = self.auth.header(host, &scope).await;
        let mut reauthenticated = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self.http_for(url)?.get(url).headers(headers.clone());
            if let Some(value) = &authorization {
                request = request.header(AUTHORIZATION, value);
            }
            let response = match request.send().await {
                Ok(response) => response,
                // A certificate we do not trust will not become trusted by waiting.
                Err(e)
                    if attempt < self.retry.attempts
                        && !e.is_builder()
                        && !is_certificate_error(&e) =>
                {
                    let wait = self.retry.delay(attempt, None);
                    tracing::debug!(url, attempt, ?wait, "request failed, retrying: {e}");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(source) => {
                    return Err(RegistryError::Http {
                        url: url.to_string(),
                        source: source.without_url(),
                    })
                }
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !reauthenticated {
                reauthenticated = true;
                attempt -= 1;
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok());
                authorization = Some(
                    self.auth
                        .answer(self, host, &scope, challenge, authorization.as_deref())
                        .await?,
                );
                continue;
            }
            if RetryPolicy::retryable(status) {
                if attempt < self.retry.attempts {
                    let wait = self.retry.delay(attempt, Some(response.headers()));
                    tracing::debug!(url, attempt, ?wait, status = status.as_u16(), "retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                return Err(RegistryError::GaveUp {
                    url: url.to_string(),
                    attempts: attempt,
                    last: format!("HTTP {}{}", status.as_u16(), error_detail(response).await),
                });
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(RegistryError::Auth {
                    registry: host.to_string(),
                    detail: format!("HTTP {}{}", status.as_u16(), error_detail(response).await),
                });
            }
            if !status.is_success() {
                return Err(RegistryError::Status {
                    url: url.to_string(),
                    status: status.as_u16(),
                    detail: error_detail(response).await,
                });
            }
            return Ok(response);
        }
    }
}

/// The contents of a `--ca-cert` file (pull and push read them alike).
fn read_ca_cert(path: &std::path::Path) -> Result<Vec<u8>, RegistryError> {
    std::fs::read(path).map_err(|e| RegistryError::Config {
        what: path.display().to_string(),
        detail: format!("cannot read the CA certificate: {e}"),
    })
}

/// Whether a request failed because nothing accepted the connection.
fn is_refused(error: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// Whether a request failed on the server's TLS certificate (untrusted, expired, for
/// another name): rustls says "certificate" somewhere in the error's chain.
fn is_certificate_error(error: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(err) = source {
        if err.to_string().to_lowercase().contains("certificate") {
            return true;
        }
        source = err.source();
    }
    false
}

/// Whether a registry host is on this machine (plain HTTP is allowed there).
pub(crate) fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The registry's error text (`: CODE: message`), read from at most 4 KiB of body.
async fn error_detail(mut response: Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > 4096 {
            break;
        }
    }
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Errors>(&body) {
        Ok(parsed) => parsed
            .errors
            .iter()
            .map(|e| format!(": {}: {}", e.code, e.message))
            .collect(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::{is_loopback, Client, ClientConfig, RegistryError};

    #[test]
    fn an_unreadable_ca_file_is_a_configuration_error() {
        // (reqwest takes a file without a PEM block and fails only at TLS set-up.)
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.pem");
        let config = ClientConfig {
            ca_certs: vec![path.clone()],
            ..ClientConfig::default()
        };
        let Err(err) = Client::new(config) else {
            panic!("{path:?} was accepted as a CA certificate");
        };
        assert!(matches!(err, RegistryError::Config { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&path.display().to_string())
                && text.contains("cannot read the CA certificate"),
            "{text}"
        );
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["docker.io", "10.0.0.1:5000", "registry.example:443"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
