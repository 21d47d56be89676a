//! Credentials (a secret never shown by `Debug`) and finding the stored ones for a
//! registry, where podman and docker keep them:
//! podman's auth.json (`REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`), then docker's config.json (`$DOCKER_CONFIG` or
//! `~/.docker`), whose `auths`, `identitytoken`, `credsStore` and `credHelpers`
//! `docker_credential` reads.

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use docker_credential::{CredentialRetrievalError, DockerCredential};

/// A password or token; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What to log in to one registry with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (or a personal access token as the password).
    Basic { username: String, password: Secret },
    /// A refresh token from `docker login` with an identity provider (`identitytoken`).
    IdentityToken(Secret),
}

impl Credentials {
    pub(super) fn basic_header(&self) -> Option<String> {
        match self {
            // `encode_credentials` returns the whole header value, "Basic " included.
            Self::Basic { username, password } => Some(http_auth::basic::encode_credentials(
                username,
                password.expose(),
            )),
            Self::IdentityToken(_) => None,
        }
    }
}

/// The credentials configured for `registry` (`host[:port]`), if any. A broken helper
/// or file is logged and skipped, never fatal: the registry may not need them.
pub fn lookup(registry: &str) -> Option<Credentials> {
    for path in auth_files() {
        let Ok(file) = File::open(&path) else {
            continue;
        };
        match docker_credential::get_credential_from_reader(BufReader::new(file), registry) {
            Ok(credential) => {
                tracing::debug!(registry, file = %path.display(), "using stored credentials");
                return Some(convert(credential));
            }
            Err(CredentialRetrievalError::NoCredentialConfigured) => {}
            Err(e) => tracing::warn!(
                registry,
                file = %path.display(),
                "ignoring stored credentials: {}",
                describe(&e)
            ),
        }
    }
    None
}

fn convert(credential: DockerCredential) -> Credentials {
    match credential {
        DockerCredential::IdentityToken(token) => Credentials::IdentityToken(Secret::new(token)),
        DockerCredential::UsernamePassword(username, password) => Credentials::Basic {
            username,
            password: Secret::new(password),
        },
    }
}

/// The error without the helper's stdout, which may echo a secret.
fn describe(error: &CredentialRetrievalError) -> String {
    match error {
        CredentialRetrievalError::HelperFailure { helper, .. } => {
            format!("credential helper {helper} failed")
        }
        other => other.to_string(),
    }
}

/// The files to look in, podman's first, as skopeo and podman do.
fn auth_files() -> Vec<PathBuf> {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut files = Vec::new();
    if let Some(file) = env("REGISTRY_AUTH_FILE") {
        files.push(file);
    }
    if let Some(runtime) = env("XDG_RUNTIME_DIR") {
        files.push(runtime.join("containers/auth.json"));
    }
    let home = env("HOME");
    if let Some(home) = &home {
        files.push(home.join(".config/containers/auth.json"));
    }
    match env("DOCKER_CONFIG") {
        Some(dir) => files.push(dir.join("config.json")),
        None => {
            if let Some(home) = &home {
                files.push(home.join(".docker/config.json"));
            }
        }
    }
    files
}
