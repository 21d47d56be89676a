//! A small blocking HTTP/1.1 client for the tests, on hyper's connection API so the
//! tests see exactly what came over the wire: a body cut short is returned as the
//! bytes received plus the error, not retried or hidden.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// What came back for one request.
#[derive(Debug, Default)]
pub struct Reply {
    /// The status, or 0 when no response head arrived.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body bytes received, up to an error if there was one.
    pub body: Vec<u8>,
    /// Why the exchange ended early, if it did.
    pub error: Option<String>,
}

impl Reply {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One keep-alive client connection.
pub struct Session {
    runtime: Runtime,
    sender: SendRequest<Full<Bytes>>,
    addr: String,
}

impl Session {
    /// Connects to `addr` (`host:port`).
    pub fn connect(addr: &str) -> std::io::Result<Session> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let sender = runtime.block_on(async {
            let stream = TcpStream::connect(addr).await?;
            let (sender, conn) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, std::io::Error>(sender)
        })?;
        Ok(Session {
            runtime,
            sender,
            addr: addr.to_owned(),
        })
    }

    /// Sends one request and reads the whole reply (30 s at most).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.addr);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let req = builder.body(Full::new(Bytes::from(body))).expect("request");
        let sender = &mut self.sender;
        let exchange = async move {
            let mut reply = Reply::default();
            if let Err(e) = sender.ready().await {
                reply.error = Some(format!("connection: {e}"));
                return reply;
            }
            let resp = match sender.send_request(req).await {
                Ok(resp) => resp,
                Err(e) => {
                    reply.error = Some(format!("request: {e}"));
                    return reply;
                }
            };
            reply.status = resp.status().as_u16();
            for (name, value) in resp.headers() {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                reply.headers.push((name.as_str().to_owned(), value));
            }
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            reply.body.extend_from_slice(data);
                        }
                    }
                    Err(e) => {
                        reply.error = Some(format!("body: {e}"));
                        break;
                    }
                }
            }
            reply
        };
        self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), exchange)
                .await
                .unwrap_or_else(|_| Reply {
                    error: Some("timed out".into()),
                    ..Reply::default()
                })
        })
    }
}

/// Sends one request on a new connection to `addr`.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    match Session::connect(addr) {
        Ok(mut session) => session.request(method, path, headers, body),
        Err(e) => Reply {
            error: Some(format!("connect: {e}")),
            ..Reply::default()
        },
    }
}

/// `GET path` on a new connection, with `range` as the Range header if given.
pub fn get(addr: &str, path: &str, range: Option<&str>) -> Reply {
    match range {
        Some(range) => request(addr, "GET", path, &[("range", range)], Vec::new()),
        None => request(addr, "GET", path, &[], Vec::new()),
    }
}
