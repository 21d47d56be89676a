//! A test's own ways into a registry that asks for credentials, not through stowage:
//! a skopeo push as a user (over TLS or not), a raw GET with a bearer token, and the
//! base64 form a basic `Authorization` header carries.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::fixtures::{oci_ref, run_or_explain};
use super::registry::Registry;

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
