//! A small bearer-token issuer for the real registry's `auth: token`: a std::net HTTP
//! server on a loopback port that signs the JWTs `docker-registry` checks, counts the
//! requests it gets and grants only the scope asked for.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::json;
use tempfile::TempDir;

use super::http_head::{read_head, RequestHead};
use super::jwt::{KeyRef, Signer};

/// What the token issuer grants.
#[derive(Debug, Clone)]
pub struct IssuerPolicy {
    /// `service` the registry is configured with; the token's `aud`.
    pub service: String,
    /// `issuer` the registry trusts; the token's `iss`.
    pub issuer: String,
    /// User names and passwords accepted as HTTP basic auth on the token endpoint.
    pub users: Vec<(String, String)>,
    /// Actions granted on any repository to a request without credentials.
    pub anonymous: Vec<String>,
    /// Actions granted on any repository to an authenticated user.
    pub authenticated: Vec<String>,
    /// `expires_in` of each token, seconds.
    pub lifetime: u64,
    pub key_ref: KeyRef,
}

impl Default for IssuerPolicy {
    /// Anonymous pulls; `pusher:push-secret` may also push; x5c-signed tokens.
    fn default() -> Self {
        Self {
            service: "stowage-test-registry".into(),
            issuer: "stowage-test-issuer".into(),
            users: vec![("pusher".into(), "push-secret".into())],
            anonymous: vec!["pull".into()],
            authenticated: vec!["pull".into(), "push".into()],
            lifetime: 300,
            key_ref: KeyRef::X5c,
        }
    }
}

/// One request the token endpoint answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub method: String,
    /// Every `scope` query parameter, decoded, in order.
    pub scopes: Vec<String>,
    pub service: Option<String>,
    /// The basic-auth user, if the request carried an `Authorization: Basic` header.
    pub basic_user: Option<String>,
    /// Whether those credentials matched a configured user.
    pub authenticated: bool,
    pub status: u16,
    /// What the token grants, as `type:name:action,action`.
    pub granted: Vec<String>,
    /// The token sent back (to look for it where it must not appear).
    pub token: Option<String>,
}

struct State {
    policy: IssuerPolicy,
    signer: Signer,
    requests: Mutex<Vec<TokenRequest>>,
    serial: AtomicU64,
}

/// A token issuer on `127.0.0.1:PORT/token`; dropping it stops the server.
pub struct TokenIssuer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    dir: TempDir,
}

impl TokenIssuer {
    /// Makes a CA and a token-signing key and starts serving on a free loopback port.
    pub fn start(policy: IssuerPolicy) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("stowage-token-issuer-")
            .tempdir()
            .expect("tempdir");
        let signer = Signer::new(policy.key_ref);
        fs::write(dir.path().join("rootcertbundle.pem"), &signer.bundle).expect("write bundle");
        let state = Arc::new(State {
            policy,
            signer,
            requests: Mutex::default(),
            serial: AtomicU64::new(0),
        });
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the issuer");
        let addr = listener.local_addr().expect("issuer address");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            thread::spawn(move || serve(listener, state, stop))
        };
        Self {
            addr,
            state,
            stop,
            thread: Some(thread),
            dir,
        }
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn policy(&self) -> &IssuerPolicy {
        &self.state.policy
    }

    /// The top-level `auth: token` section for a registry that trusts this issuer.
    pub fn registry_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            self.realm(),
            self.state.policy.service,
            self.state.policy.issuer,
            self.dir.path().join("rootcertbundle.pem").display()
        )
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        lock(&self.state.requests).clone()
    }

    /// How many requests were answered so far.
    pub fn count(&self) -> usize {
        lock(&self.state.requests).len()
    }

    /// A token the issuer would grant `user` (`None`: anonymous) for `scope`, without
    /// recording a request; for checking the registry from the test itself.
    pub fn mint(&self, user: Option<&str>, scope: &str) -> String {
        let granted = grant(&self.state.policy, user.is_some(), &[scope.to_string()]);
        sign(&self.state, user.unwrap_or(""), &granted)
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn serve(listener: TcpListener, state: Arc<State>, stop: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let state = state.clone();
        thread::spawn(move || {
            let _ = handle(stream, &state);
        });
    }
}

fn handle(mut stream: TcpStream, state: &State) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let Some(head) = read_head(&mut stream)? else {
        return Ok(());
    };
    let (status, body, record) = answer(state, &head);
    lock(&state.requests).push(record);
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 401 {
        response.push_str("WWW-Authenticate: Basic realm=\"stowage-test-issuer\"\r\n");
    }
    response.push_str("\r\n");
    stream.write_all(response.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

/// The status, body and record for one request to the issuer.
fn answer(state: &State, head: &RequestHead) -> (u16, String, TokenRequest) {
    let policy = &state.policy;
    let query = |name: &str| -> Vec<String> {
        head.query
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    // A scope parameter may hold several space-separated scopes.
    let scopes: Vec<String> = query("scope")
        .iter()
        .flat_map(|s| s.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let basic = head
        .headers
        .get("authorization")
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|b64| BASE64.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    let authenticated = basic
        .as_ref()
        .is_some_and(|(u, p)| policy.users.iter().any(|(uu, pp)| uu == u && pp == p));
    let mut record = TokenRequest {
        method: head.method.clone(),
        scopes: scopes.clone(),
        service: query("service").into_iter().next(),
        basic_user: basic.as_ref().map(|(u, _)| u.clone()),
        authenticated,
        status: 200,
        granted: Vec::new(),
        token: None,
    };
    let fail = |status: u16, message: &str, mut record: TokenRequest| {
        record.status = status;
        (status, json!({ "details": message }).to_string(), record)
    };
    if head.path != "/token" {
        return fail(404, "no such endpoint", record);
    }
    if head.method != "GET" {
        return fail(405, "only GET is served", record);
    }
    if record.service.as_deref() != Some(policy.service.as_str()) {
        return fail(401, "unknown service", record);
    }
    if basic.is_some() && !authenticated {
        return fail(401, "wrong user name or password", record);
    }
    let granted = grant(policy, authenticated, &scopes);
    let subject = basic.as_ref().map(|(u, _)| u.as_str()).unwrap_or("");
    let token = sign(state, subject, &granted);
    record.granted = granted
        .iter()
        .map(|(t, n, a)| format!("{t}:{n}:{}", a.join(",")))
        .collect();
    record.token = Some(token.clone());
    let body = json!({
        "token": token,
        "access_token": token,
        "expires_in": policy.lifetime,
    })
    .to_string();
    (200, body, record)
}

/// The access a token gets: each requested `type:name:actions` scope, cut down to
/// the actions the requester may have; nothing that was not asked for.
fn grant(
    policy: &IssuerPolicy,
    authenticated: bool,
    scopes: &[String],
) -> Vec<(String, String, Vec<String>)> {
    let allowed = if authenticated {
        &policy.authenticated
    } else {
        &policy.anonymous
    };
    scopes
        .iter()
        .filter_map(|scope| {
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            if kind != "repository" {
                return None;
            }
            let actions: Vec<String> = actions
                .split(',')
                .filter(|a| allowed.iter().any(|x| x == a))
                .map(str::to_string)
                .collect();
            Some((kind.to_string(), name.to_string(), actions))
        })
        .collect()
}

fn sign(state: &State, subject: &str, granted: &[(String, String, Vec<String>)]) -> String {
    let policy = &state.policy;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let serial = state.serial.fetch_add(1, Ordering::SeqCst);
    let access: Vec<_> = granted
        .iter()
        .map(|(kind, name, actions)| json!({ "type": kind, "name": name, "actions": actions }))
        .collect();
    // `aud` must be a JSON string: distribution 2.8 unmarshals it into a Go string.
    let claims = json!({
        "iss": policy.issuer,
        "sub": subject,
        "aud": policy.service,
        "exp": now + policy.lifetime as i64,
        "nbf": now - 1,
        "iat": now,
        "jti": format!("stowage-test-{}-{serial}", std::process::id()),
        "access": access,
    });
    state.signer.encode(&claims)
}
