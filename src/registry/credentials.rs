//! Finding stored credentials for a registry, where podman and docker keep them:
//! podman's auth.json (`REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`), then docker's config.json (`$DOCKER_CONFIG` or
//! `~/.docker`), whose `auths`, `identitytoken`, `credsStore` and `credHelpers`
//! `docker_credential` reads.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use docker_credential::{CredentialRetrievalError, DockerCredential};

use super::auth::{Credentials, Secret};

/// The credentials configured for `registry` (host[:port]), if any. A broken helper
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
