//! One request through the proxy: log it, wait, maybe refuse it, forward it, and
//! stream the answer back through a [`ProxyBody`] that applies the blob faults.
//!
//! Forwarding is faithful otherwise: method, path, query, headers and bodies (upload
//! PATCH/PUT bodies included) pass through as streams. Only hop-by-hop headers are
//! dropped (each side keeps its own keep-alive), `Host` is set to the registry's, and
//! URLs that point back at the registry (`Location`, the `WWW-Authenticate` realm)
//! are rewritten to the address the client used, so uploads and redirects keep going
//! through the proxy.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::body::{Pacer, Plan, ProxyBody};
use crate::faults::{FaultState, Refusal};
use crate::log::{is_blob_path, Entry, Log};

/// What the [`crate::Proxy`] handle shares with the connection tasks.
#[derive(Debug)]
pub(crate) struct State {
    /// The registry, `host:port`.
    pub(crate) upstream: String,
    /// The proxy's own address, for rewriting when a client sent no `Host`.
    pub(crate) listen: String,
    pub(crate) faults: Mutex<FaultState>,
    pub(crate) log: Log,
}

impl State {
    pub(crate) fn faults(&self) -> MutexGuard<'_, FaultState> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One accepted client connection.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Its id in the log (accept order, from 1).
    pub(crate) id: u64,
    /// Its pacing bucket, shared by the responses sent on it.
    pub(crate) pacer: Pacer,
}

/// The HTTP client used towards the registry (pooled keep-alive connections).
pub(crate) type UpstreamClient = Client<HttpConnector, Incoming>;

/// Handles one request from connection `conn`. Never fails: upstream errors become
/// a 502, and a body that breaks mid-stream aborts the client connection.
pub(crate) async fn handle(
    state: Arc<State>,
    client: UpstreamClient,
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let range = req
        .headers()
        .get(header::RANGE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let authorization = req.headers().contains_key(header::AUTHORIZATION);
    let entry = state
        .log
        .push(req.method().as_str(), &path, range, authorization, conn.id);
    let blob_get = req.method() == Method::GET && is_blob_path(&path);
    let (faults, refusal) = {
        let mut st = state.faults();
        let refusal = if blob_get {
            st.refuse_blob_get()
        } else {
            Refusal::None
        };
        (st.faults().clone(), refusal)
    };
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    let pacing = || {
        let rate = faults.rate.filter(|&r| r > 0)?;
        Some((rate, Arc::clone(&conn.pacer)))
    };
    match refusal {
        Refusal::None => {}
        Refusal::Redirect(base) => {
            let path_and_query = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            return Ok(redirect(&format!("{base}{path_and_query}"), entry));
        }
        Refusal::Unavailable => {
            let (code, msg) = ("UNAVAILABLE", "service unavailable (injected)");
            return Ok(error(
                StatusCode::SERVICE_UNAVAILABLE,
                code,
                msg,
                None,
                entry,
                pacing(),
            ));
        }
        Refusal::TooMany(after) => {
            let (code, msg) = ("TOOMANYREQUESTS", "too many requests (injected)");
            return Ok(error(
                StatusCode::TOO_MANY_REQUESTS,
                code,
                msg,
                after,
                entry,
                pacing(),
            ));
        }
    }

    let client_host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| state.listen.clone(), str::to_owned);
    let upstream_req = match to_upstream(&state.upstream, req, faults.ignore_range) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("faultproxy: bad request: {e}");
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED",
                &msg,
                None,
                entry,
                None,
            ));
        }
    };
    let resp = match client.request(upstream_req).await {
        Ok(resp) => resp,
        Err(e) => {
            let msg = format!("faultproxy: upstream {}: {e}", state.upstream);
            return Ok(error(
                StatusCode::BAD_GATEWAY,
                "UNAVAILABLE",
                &msg,
                None,
                entry,
                None,
            ));
        }
    };

    let (mut parts, body) = resp.into_parts();
    entry.set_status(parts.status.as_u16());
    let mut plan = Plan {
        rate: pacing(),
        ..Plan::default()
    };
    if blob_get && matches!(parts.status, StatusCode::OK | StatusCode::PARTIAL_CONTENT) {
        let len = content_length(&parts.headers);
        let start = match parts.status {
            StatusCode::OK => Some(0),
            _ => content_range_start(&parts.headers),
        };
        let mut st = state.faults();
        plan.cut_after = st.take_cut(len);
        plan.corrupt_at = start.and_then(|start| st.take_corruption(start, len));
    }
    strip_hop_by_hop(&mut parts.headers);
    rewrite_urls(&mut parts.headers, &state.upstream, &client_host);
    Ok(Response::from_parts(
        parts,
        ProxyBody::upstream(body, entry, plan),
    ))
}

/// The request to send the registry for `req`.
fn to_upstream(
    upstream: &str,
    req: Request<Incoming>,
    ignore_range: bool,
) -> Result<Request<Incoming>, hyper::http::Error> {
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    parts.uri = Uri::builder()
        .scheme("http")
        .authority(upstream)
        .path_and_query(path_and_query)
        .build()?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    // hyper's client does not wait for `100 Continue`; the proxy's server side already
    // answered the client's `Expect`, so the registry need not see it.
    parts.headers.remove(header::EXPECT);
    parts
        .headers
        .insert(header::HOST, HeaderValue::from_str(upstream)?);
    if ignore_range {
        parts.headers.remove(header::RANGE);
        parts.headers.remove(header::IF_RANGE);
    }
    Ok(Request::from_parts(parts, body))
}

/// Removes the headers that describe one connection rather than the message: hyper
/// frames bodies and manages keep-alive on each side by itself.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Points URLs at the registry (`http://UPSTREAM...`) at the proxy instead.
fn rewrite_urls(headers: &mut HeaderMap, upstream: &str, client_host: &str) {
    let from = format!("http://{upstream}");
    let to = format!("http://{client_host}");
    for name in [header::LOCATION, header::WWW_AUTHENTICATE] {
        let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        if !values
            .iter()
            .any(|v| contains(v.as_bytes(), from.as_bytes()))
        {
            continue;
        }
        headers.remove(&name);
        for value in values {
            let rewritten = match value.to_str() {
                Ok(s) => HeaderValue::from_str(&s.replace(&from, &to)).unwrap_or(value),
                Err(_) => value,
            };
            headers.append(&name, rewritten);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The `Content-Length` of a response, if it has a valid one.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The first byte offset of a `Content-Range: bytes FIRST-LAST/TOTAL`.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let range = value.trim().strip_prefix("bytes")?.trim_start();
    range.split_once('-')?.0.trim().parse().ok()
}

/// A `307 Temporary Redirect` to `location` with an empty body.
fn redirect(location: &str, entry: Arc<Entry>) -> Response<ProxyBody> {
    entry.set_status(StatusCode::TEMPORARY_REDIRECT.as_u16());
    let mut resp = Response::new(ProxyBody::fixed(Bytes::new(), entry, Plan::default()));
    *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    if let Ok(value) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, value);
    }
    resp
}

/// A response the proxy makes up: a distribution-spec JSON error body.
fn error(
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after: Option<u64>,
    entry: Arc<Entry>,
    rate: Option<(u64, Pacer)>,
) -> Response<ProxyBody> {
    entry.set_status(status.as_u16());
    let json = format!(
        r#"{{"errors":[{{"code":"{code}","message":"{}","detail":null}}]}}"#,
        message.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let plan = Plan {
        rate,
        ..Plan::default()
    };
    let mut resp = Response::new(ProxyBody::fixed(Bytes::from(json), entry, plan));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Some(secs) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 100-199/1000"),
        );
        assert_eq!(content_range_start(&h), Some(100));
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes */1000"),
        );
        assert_eq!(content_range_start(&h), None);
    }

    #[test]
    fn rewrites_registry_urls_only() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("http://127.0.0.1:5000/v2/x/blobs/uploads/u?_state=s"),
        );
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="http://auth.example/token""#),
        );
        rewrite_urls(&mut h, "127.0.0.1:5000", "localhost:7000");
        assert_eq!(
            h[header::LOCATION],
            "http://localhost:7000/v2/x/blobs/uploads/u?_state=s"
        );
        assert_eq!(
            h[header::WWW_AUTHENTICATE],
            r#"Bearer realm="http://auth.example/token""#
        );
    }

    #[test]
    fn strips_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_LENGTH));
    }
}
