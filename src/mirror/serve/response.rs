//! Response bodies and the distribution spec's error documents.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

/// The header every response carries, as registries do.
pub(super) const API_VERSION: (&str, &str) = ("Docker-Distribution-API-Version", "registry/2.0");

/// A response body: nothing, a small document, or a blob streamed from disk.
pub(super) enum Body {
    Empty,
    Full(Option<Bytes>),
    Stream(BlobStream),
}

impl Body {
    pub(super) fn full(data: impl Into<Bytes>) -> Self {
        Self::Full(Some(data.into()))
    }
}

/// Chunks read from disk by a pump task, handed over through a bounded channel; an
/// error (a short or corrupt file) aborts the response, so the client never sees a
/// complete body that is wrong.
pub(super) struct BlobStream {
    pub(super) chunks: mpsc::Receiver<io::Result<Bytes>>,
    pub(super) remaining: u64,
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Self::Stream(stream) => match stream.chunks.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    stream.remaining = stream.remaining.saturating_sub(chunk.len() as u64);
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) if stream.remaining > 0 => Poll::Ready(Some(Err(
                    io::Error::new(io::ErrorKind::UnexpectedEof, "the blob stream ended early"),
                ))),
                Poll::Ready(None) => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(data) => data.is_none(),
            Self::Stream(stream) => stream.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Self::Stream(stream) => SizeHint::with_exact(stream.remaining),
        }
    }
}

/// The error codes of the distribution spec that a read-only registry answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ErrorCode {
    BlobUnknown,
    DigestInvalid,
    ManifestUnknown,
    NameUnknown,
    Unsupported,
    /// Not a spec code: what distribution answers when the registry itself failed.
    Unknown,
}

impl ErrorCode {
    fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::Unsupported => "UNSUPPORTED",
            Self::Unknown => "UNKNOWN",
        }
    }
}

/// A request the registry answers with an error document.
#[derive(Debug, thiserror::Error)]
#[error("{status} {}: {message}", code.as_str())]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: ErrorCode,
    pub(super) message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn name_unknown(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NameUnknown,
            format!("repository {name} is not served by this store"),
        )
    }

    pub(super) fn manifest_unknown(name: &str, reference: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ManifestUnknown,
            format!("manifest {name}:{reference} is not in this store"),
        )
    }

    /// The registry's own failure (an unreadable store); logged, and a 500 for the client.
    pub(super) fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!("serve: {error}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unknown,
            error.to_string(),
        )
    }

    /// `{"errors":[{"code":...,"message":...}]}`, the spec's error document.
    pub(super) fn into_response(self, head: bool) -> Response<Body> {
        let document = serde_json::json!({
            "errors": [{"code": self.code.as_str(), "message": self.message}],
        });
        let bytes = serde_json::to_vec(&document).expect("an error document serialises");
        let mut builder = response(self.status)
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LENGTH, bytes.len());
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            builder = builder.header(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        let body = if head { Body::Empty } else { Body::full(bytes) };
        builder.body(body).expect("a valid error response")
    }
}

/// A response builder with the headers every response carries.
pub(super) fn response(status: StatusCode) -> hyper::http::response::Builder {
    Response::builder()
        .status(status)
        .header(API_VERSION.0, API_VERSION.1)
}

/// A small JSON document (`/v2/`, tag lists).
pub(super) fn json(status: StatusCode, value: &serde_json::Value, head: bool) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("JSON serialises");
    response(status)
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, bytes.len())
        .body(if head { Body::Empty } else { Body::full(bytes) })
        .expect("a valid JSON response")
}
