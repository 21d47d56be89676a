//! Reading a small response body whole (a manifest, a token), never more than a bound:
//! a registry or token service that sends hundreds of megabytes gets an error, not
//! the process's memory.

use reqwest::Response;

/// Why a body could not be read whole.
pub(crate) enum BodyError {
    /// It would pass the limit (by its `Content-Length` or by what arrived).
    TooBig,
    /// The connection failed while reading it.
    Http(reqwest::Error),
}

/// Reads `response`'s body, refusing it as soon as it would pass `limit` bytes.
pub(crate) async fn read_limited(
    response: &mut Response,
    limit: u64,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::TooBig);
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Http)? {
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Err(BodyError::TooBig);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
