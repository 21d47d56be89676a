//! Auth for the real registry in tests: a certificate authority and certificates made
//! with `rcgen`, an htpasswd file, and a small bearer-token issuer (a std::net HTTP
//! server on a loopback port) that signs the JWTs `docker-registry`'s `auth: token`
//! checks, counts the requests it gets and grants only the scope asked for.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, PKCS_ECDSA_P256_SHA256,
};
use serde_json::json;
use tempfile::TempDir;

use super::fixtures::{oci_ref, run_or_explain};
use super::registry::Registry;

/// A certificate authority made for one test: its certificate and signing key.
pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate issued by a [`Ca`], with its key.
pub struct Issued {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key: KeyPair,
}

impl Ca {
    /// A fresh self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A TLS server certificate for `sans` (IP addresses become IP SANs).
    pub fn server_cert(&self, sans: &[&str]) -> Issued {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("server cert params");
        params.distinguished_name.push(
            DnType::CommonName,
            sans.first().copied().unwrap_or("server"),
        );
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A certificate for a key that signs tokens (no SAN; CN `name`).
    pub fn signing_cert(&self, name: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("signer params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign a leaf");
        Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key,
        }
    }
}

/// libtrust's key ID, which `docker-registry` 2.8 matches a token's `kid` against:
/// SHA-256 of the DER SubjectPublicKeyInfo, cut to 240 bits, base32 (RFC 4648, no
/// padding) in twelve colon-separated groups of four.
pub fn libtrust_key_id(key: &KeyPair) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.subject_public_key_info());
    let encoded = base32(&digest[..30]);
    let groups: Vec<&str> = (0..encoded.len())
        .step_by(4)
        .map(|i| &encoded[i..i + 4])
        .collect();
    groups.join(":")
}

/// RFC 4648 base32 without padding.
fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// TLS material for a registry: a CA, a server certificate and key, and a directory
/// in skopeo's `--dest-cert-dir` layout (`ca.crt`).
pub struct TlsFiles {
    dir: TempDir,
    pub ca: Ca,
}

impl TlsFiles {
    /// A new CA and a server certificate for `sans`, written to a tempdir.
    pub fn new(sans: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("stowage-tls-")
            .tempdir()
            .expect("tempdir");
        let ca = Ca::new("stowage test registry CA");
        let server = ca.server_cert(sans);
        fs::write(dir.path().join("ca.pem"), &ca.cert_pem).expect("write ca.pem");
        fs::write(dir.path().join("server.pem"), &server.cert_pem).expect("write server.pem");
        fs::write(dir.path().join("server.key"), server.key.serialize_pem())
            .expect("write server.key");
        let certs = dir.path().join("certs.d");
        fs::create_dir(&certs).expect("mkdir certs.d");
        fs::write(certs.join("ca.crt"), &ca.cert_pem).expect("write ca.crt");
        Self { dir, ca }
    }

    /// The CA certificate (PEM), for `--ca-cert`.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A directory holding `ca.crt`, for skopeo's `--dest-cert-dir`.
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    /// The `tls:` block for the registry's `http:` section.
    pub fn http_yaml(&self) -> String {
        format!(
            "tls:\n  certificate: {}\n  key: {}\n",
            self.dir.path().join("server.pem").display(),
            self.dir.path().join("server.key").display()
        )
    }
}

/// An htpasswd file with one bcrypt entry, made by apache2-utils' `htpasswd -Bbn`
/// (the only hash `docker-registry` accepts), and the `auth: htpasswd` block using it.
pub struct Htpasswd {
    dir: TempDir,
}

impl Htpasswd {
    pub fn new(user: &str, password: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("stowage-htpasswd-")
            .tempdir()
            .expect("tempdir");
        let line = run_or_explain("htpasswd", &["-Bbn", user, password], String::new);
        fs::write(dir.path().join("htpasswd"), line.trim_end()).expect("write htpasswd");
        Self { dir }
    }

    /// The top-level `auth:` section.
    pub fn auth_yaml(&self) -> String {
        format!(
            "auth:\n  htpasswd:\n    realm: stowage-test\n    path: {}\n",
            self.dir.path().join("htpasswd").display()
        )
    }
}

/// How a token names the key that signed it; `docker-registry` 2.8 accepts either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRef {
    /// `x5c`: the signing certificate (issued by a CA in `rootcertbundle`) rides in
    /// the header and is verified against the bundle.
    X5c,
    /// `kid`: the libtrust fingerprint of a key whose certificate is in the bundle.
    Kid,
}

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
    pub path: String,
    /// Every `scope` query parameter, decoded, in order.
    pub scopes: Vec<String>,
    pub service: Option<String>,
    /// `account` query parameter, if sent.
    pub account: Option<String>,
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

struct Signer {
    key: EncodingKey,
    header: Header,
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
        let ca = Ca::new("stowage test token CA");
        let signing = ca.signing_cert("stowage test token signer");
        let mut header = Header::new(Algorithm::ES256);
        let bundle = match policy.key_ref {
            KeyRef::X5c => {
                header.x5c = Some(vec![BASE64.encode(&signing.cert_der)]);
                ca.cert_pem.clone()
            }
            KeyRef::Kid => {
                header.kid = Some(libtrust_key_id(&signing.key));
                signing.cert_pem.clone()
            }
        };
        fs::write(dir.path().join("rootcertbundle.pem"), bundle).expect("write bundle");
        let signer = Signer {
            key: EncodingKey::from_ec_der(&signing.key.serialize_der()),
            header,
        };
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

/// A parsed request head: method, path, query pairs, headers (lower-case names).
struct RequestHead {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: HashMap<String, String>,
}

fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<RequestHead>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 64 * 1024 {
            return Ok(None);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let target = request_line.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Some(RequestHead {
        method,
        path: path.to_string(),
        query,
        headers,
    }))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        path: head.path.clone(),
        scopes: scopes.clone(),
        service: query("service").into_iter().next(),
        account: query("account").into_iter().next(),
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
    jsonwebtoken::encode(&state.signer.header, &claims, &state.signer.key).expect("sign a token")
}

/// Copies ref `ref_name` of the store at `store_dir` to `docker://<registry>/<dest>`
/// as `user:password`; over TLS trusting `cert_dir`'s `ca.crt` when given, else with
/// TLS verification off (skopeo then falls back to plain HTTP).
pub fn push_as(
    store_dir: &Path,
    ref_name: &str,
    registry: &Registry,
    dest: &str,
    creds: &str,
    cert_dir: Option<&Path>,
) {
    let source = oci_ref(store_dir, ref_name);
    let target = format!("docker://{}/{dest}", registry.addr());
    let mut args = vec![
        "copy".to_string(),
        "--all".into(),
        "--quiet".into(),
        "--dest-creds".into(),
        creds.into(),
    ];
    match cert_dir {
        Some(dir) => args.push(format!("--dest-cert-dir={}", dir.display())),
        None => args.push("--dest-tls-verify=false".into()),
    }
    args.push(source);
    args.push(target);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_or_explain("skopeo", &args, || {
        format!("registry log:\n{}", registry.log_tail(30))
    });
}

/// The manifest types a registry GET accepts.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// The status of a plain-HTTP `GET path` on the registry with `Authorization:
/// Bearer token` (or none), and the `WWW-Authenticate` header it sent back.
pub fn get_with_token(addr: &str, path: &str, token: Option<&str>) -> (u16, Option<String>) {
    let mut stream = TcpStream::connect(addr).expect("connect to the registry");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // Without an Accept naming OCI, distribution 2.8 answers 404 for OCI manifests.
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: {MANIFEST_TYPES}\r\n"
    );
    if let Some(token) = token {
        let _ = write!(request, "Authorization: Bearer {token}\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let challenge = text
        .split("\r\n")
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("www-authenticate"))
                .map(|(_, v)| v.trim().to_string())
        });
    (status, challenge)
}

/// The base64 of `user:password`, as a basic `Authorization` header carries it.
pub fn basic_credentials_b64(user: &str, password: &str) -> String {
    BASE64.encode(format!("{user}:{password}"))
}
