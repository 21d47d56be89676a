//! Registry auth: answering `WWW-Authenticate` challenges with a bearer token (one
//! per registry and scope, cached until it expires, fetched once however many requests
//! wait for it, fetched again when the registry refuses it) or with basic credentials.
//! Secrets never reach a log line or an error message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_auth::ChallengeRef;
use reqwest::header::AUTHORIZATION;
use serde::Deserialize;

use super::body::read_limited;
use super::credentials::Credentials;
use super::error::RegistryError;

#[derive(Clone)]
struct Token {
    header: String,
    expires: Instant,
}

/// The largest token-service answer read: real tokens are a few KiB; a service that
/// sends more is broken or hostile (300 MB once cost 1.15 GB of memory).
const TOKEN_LIMIT: u64 = 256 << 10;

/// How long a basic Authorization header that a registry asked for is sent up front
/// (a process lives shorter than this; a refusal is answered again on its 401).
const BASIC_REMEMBERED: Duration = Duration::from_secs(24 * 3600);

/// Per-(registry, scope) token slots; the async mutex in each makes many waiters
/// share one token fetch.
type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// Credentials and cached tokens for every registry this process talks to.
#[derive(Default)]
pub struct Auth {
    /// Given on the command line or by the caller; these win.
    explicit: HashMap<String, Credentials>,
    /// Looked up in auth.json / config.json the first time a registry asks.
    stored: Mutex<HashMap<String, Option<Credentials>>>,
    slots: Mutex<HashMap<(String, String), Slot>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl Auth {
    pub fn new(explicit: HashMap<String, Credentials>) -> Self {
        Self {
            explicit,
            ..Self::default()
        }
    }

    /// The credentials for `registry`: explicit ones, else stored ones (looked up once).
    async fn credentials(&self, registry: &str) -> Option<Credentials> {
        if let Some(explicit) = self.explicit.get(registry) {
            return Some(explicit.clone());
        }
        if let Some(known) = self
            .stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(registry)
        {
            return known.clone();
        }
        let host = registry.to_string();
        let found = tokio::task::spawn_blocking(move || super::credentials::lookup(&host))
            .await
            .unwrap_or(None);
        self.stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(registry.to_string(), found.clone());
        found
    }

    fn slot(&self, registry: &str, scope: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry((registry.to_string(), scope.to_string()))
            .or_default()
            .clone()
    }

    /// The Authorization header to send up front, if a valid one is known.
    pub async fn header(&self, registry: &str, scope: &str) -> Option<String> {
        let slot = self.slot(registry, scope);
        let token = slot.lock().await;
        token
            .as_ref()
            .filter(|t| t.expires > Instant::now())
            .map(|t| t.header.clone())
    }

    /// Answers a 401: returns the header to retry with. `refused` is the header the
    /// registry just turned down, so a token another task fetched meanwhile is reused
    /// but the refused one is not.
    pub async fn answer(
        &self,
        client: &super::Client,
        registry: &str,
        scope: &str,
        challenge: Option<&str>,
        refused: Option<&str>,
    ) -> Result<String, RegistryError> {
        let fail = |detail: String| RegistryError::Auth {
            registry: registry.to_string(),
            detail,
        };
        let challenge = challenge
            .ok_or_else(|| fail("HTTP 401 without a WWW-Authenticate challenge".into()))?;
        let challenge = read_challenge(challenge).map_err(fail)?;
        let credentials = self.credentials(registry).await;
        let credentials = credentials.as_ref();
        match challenge {
            Challenge::Bearer { realm, service } => {
                let slot = self.slot(registry, scope);
                let mut cached = slot.lock().await;
                if let Some(token) = cached.as_ref() {
                    if token.expires > Instant::now() && Some(token.header.as_str()) != refused {
                        return Ok(token.header.clone());
                    }
                }
                let realm = realm.ok_or_else(|| fail("bearer challenge without a realm".into()))?;
                let token =
                    fetch_token(client, registry, scope, &realm, service, credentials).await?;
                *cached = Some(token.clone());
                Ok(token.header)
            }
            Challenge::Basic => {
                let header = credentials
                .and_then(Credentials::basic_header)
                .ok_or_else(|| fail("the registry asks for a user name and password; none is configured (use --username and --password-stdin, or docker login)".into()))?;
                if Some(header.as_str()) == refused {
                    return Err(fail(
                        "the registry refused the user name and password".into(),
                    ));
                }
                // Remembered like a token, so the next requests (every blob GET and
                // range) send it up front instead of paying a 401 round trip each, as
                // docker does.
                *self.slot(registry, scope).lock().await = Some(Token {
                    header: header.clone(),
                    expires: Instant::now() + BASIC_REMEMBERED,
                });
                Ok(header)
            }
        }
    }
}

/// What a 401's challenge asks for, of the schemes stowage answers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// A token from `realm` (a registry may leave it out: then no token can be had).
    Bearer {
        realm: Option<String>,
        service: Option<String>,
    },
    Basic,
}

/// Reads a `WWW-Authenticate` header (sent by the registry, so anything at all): a
/// bearer challenge wins over a basic one; other schemes alone are refused.
pub(crate) fn read_challenge(header: &str) -> Result<Challenge, String> {
    let challenges = http_auth::parse_challenges(header)
        .map_err(|e| format!("unreadable WWW-Authenticate header: {e}"))?;
    if let Some(bearer) = challenges
        .iter()
        .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
    {
        return Ok(Challenge::Bearer {
            realm: param(bearer, "realm"),
            service: param(bearer, "service"),
        });
    }
    if challenges
        .iter()
        .any(|c| c.scheme.eq_ignore_ascii_case("basic"))
    {
        return Ok(Challenge::Basic);
    }
    Err(format!(
        "unsupported auth scheme(s): {}",
        challenges
            .iter()
            .map(|c| c.scheme)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn param(challenge: &ChallengeRef<'_>, name: &str) -> Option<String> {
    challenge
        .params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.to_unescaped())
}

async fn fetch_token(
    client: &super::Client,
    registry: &str,
    scope: &str,
    realm: &str,
    service: Option<String>,
    credentials: Option<&Credentials>,
) -> Result<Token, RegistryError> {
    let fail = |detail: String| RegistryError::Auth {
        registry: registry.to_string(),
        detail,
    };
    let registry_url = client.base_url(registry).await;
    if let Some(detail) = foreign_plain_realm(&registry_url, realm) {
        return Err(fail(detail));
    }
    let http = client.http_for(realm)?;
    let mut query = vec![("scope", scope.to_string())];
    if let Some(service) = service {
        query.push(("service", service));
    }
    let request = match credentials {
        Some(Credentials::IdentityToken(refresh)) => {
            query.push(("grant_type", "refresh_token".into()));
            query.push(("refresh_token", refresh.expose().to_string()));
            query.push(("client_id", "stowage".into()));
            http.post(realm).form(&query)
        }
        Some(creds @ Credentials::Basic { .. }) => http.get(realm).query(&query).header(
            AUTHORIZATION,
            creds
                .basic_header()
                .expect("basic credentials have a header"),
        ),
        None => http.get(realm).query(&query),
    };
    let started = Instant::now();
    let response = request.send().await.map_err(|e| {
        fail(format!(
            "token request to {realm} failed: {}",
            e.without_url()
        ))
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(fail(format!(
            "the token service {realm} answered HTTP {}",
            status.as_u16()
        )));
    }
    let mut response = response;
    let low_speed = client.low_speed();
    let bytes = read_limited(&mut response, TOKEN_LIMIT, low_speed)
        .await
        .map_err(|e| {
            let what = format!("the answer of the token service {realm}");
            fail(e.describe(&what, TOKEN_LIMIT, low_speed))
        })?;
    let body: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| {
        fail(format!(
            "unreadable answer from the token service {realm}: {e}"
        ))
    })?;
    let token = body
        .token
        .or(body.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| fail(format!("the token service {realm} sent no token")))?;
    // Refresh a little early; registries default to 60 s when they say nothing.
    let lifetime = Duration::from_secs(body.expires_in.unwrap_or(60).max(10));
    Ok(Token {
        header: format!("Bearer {token}"),
        expires: started + lifetime - Duration::from_secs(5),
    })
}

/// Why a token request to `realm` is refused for a registry reached at `registry_url`:
/// a realm on another host over plain HTTP, when the registry itself speaks HTTPS,
/// would carry credentials (and the token) in the clear to a host the registry's own
/// certificate does not vouch for. Docker sends them; we do not. A registry reached
/// over plain HTTP (loopback, `--insecure-registry`) may name a plain-HTTP realm.
pub(crate) fn foreign_plain_realm(registry_url: &str, realm: &str) -> Option<String> {
    let realm_url = reqwest::Url::parse(realm).ok()?;
    let registry_url = reqwest::Url::parse(registry_url).ok()?;
    let plain = realm_url.scheme() != "https";
    let foreign = realm_url.host_str() != registry_url.host_str();
    (plain && foreign && registry_url.scheme() == "https").then(|| {
        format!(
            "the registry speaks HTTPS but sends token requests to {realm}, plain HTTP on \
             another host; refusing to send credentials or ask for a token there"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::{foreign_plain_realm, read_challenge, Challenge, Credentials};
    use crate::registry::Secret;

    #[test]
    fn bearer_wins_over_basic_and_other_schemes_alone_are_refused() {
        let header = r#"Basic realm="x", Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#;
        assert_eq!(
            read_challenge(header),
            Ok(Challenge::Bearer {
                realm: Some("https://auth.example/token".into()),
                service: Some("registry.example".into()),
            })
        );
        assert_eq!(
            read_challenge("bearer service=\"s\""),
            Ok(Challenge::Bearer {
                realm: None,
                service: Some("s".into()),
            })
        );
        assert_eq!(read_challenge(r#"Basic realm="r""#), Ok(Challenge::Basic));
        let refused = read_challenge("Digest realm=\"r\", Negotiate").unwrap_err();
        assert!(refused.contains("Digest, Negotiate"), "{refused}");
        assert!(read_challenge("Bearer realm=\"unterminated").is_err());
    }

    #[test]
    fn a_plain_http_realm_on_another_host_is_refused_only_for_an_https_registry() {
        let refused = foreign_plain_realm("https://registry.example", "http://auth.example/token");
        assert!(refused.is_some_and(|r| r.contains("http://auth.example/token")));
        for (registry, realm) in [
            ("https://registry.example", "https://auth.example/token"),
            (
                "https://registry.example",
                "http://registry.example:5001/token",
            ),
            ("http://127.0.0.1:5000", "http://127.0.0.2:5001/token"),
        ] {
            assert!(
                foreign_plain_realm(registry, realm).is_none(),
                "{registry} {realm}"
            );
        }
    }

    #[test]
    fn basic_header_is_one_scheme_then_base64_of_user_colon_password() {
        let creds = Credentials::Basic {
            username: "Aladdin".into(),
            password: Secret::new("open sesame"),
        };
        assert_eq!(
            creds.basic_header().as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
    }
}
