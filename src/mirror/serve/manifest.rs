//! `GET`/`HEAD /v2/<name>/manifests/<tag or digest>`: a stored manifest or index, as
//! it was pulled, byte for byte.

use bytes::Bytes;
use hyper::header::{HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use hyper::{Response, StatusCode};
use serde::Deserialize;

use super::naming::Located;
use super::referrers::{tag_schema, TagSchema};
use super::response::{response, ApiError, Body};
use super::State;
use crate::store::{is_graph_type, parse_digest, Digest, StoreError, MANIFEST_LIMIT};

/// A manifest found for a request.
struct Found {
    bytes: Bytes,
    digest: Digest,
    media_type: String,
}

/// Answers a manifest request.
///
/// `Accept` never changes what is served: the store holds one document per digest and
/// converting it would change the digest, so the stored manifest or index goes out
/// with its own media type whatever the client listed (a client that asks by tag for a
/// single-platform type and gets an index picks its platform from it, as clients of
/// any registry do). A mismatch is only logged.
pub(super) async fn manifest(
    state: &State,
    located: &Located,
    reference: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let name = located.repository.as_str();
    let through = match &state.through {
        Some(through) => through.manifest(located, reference).await,
        None => Ok(None),
    };
    let found = match through {
        Ok(Some(raw)) => {
            if let (Some(registry), false) = (&located.registry, reference.contains(':')) {
                // The ref a tag fetched through is (or will be) recorded as.
                let (state, name) = (state.clone(), format!("{registry}/{name}:{reference}"));
                tokio::task::spawn_blocking(move || state.usage.used(&name));
            }
            Found {
                bytes: Bytes::from(raw.bytes),
                digest: raw.digest,
                media_type: raw.media_type,
            }
        }
        // Not for upstream, or upstream failed: the store's refs answer if they can.
        other => {
            let upstream_failed = other.err();
            let state = state.clone();
            let (located_, reference_) = (located.clone(), reference.to_string());
            let local = tokio::task::spawn_blocking(move || find(&state, &located_, &reference_))
                .await
                .map_err(ApiError::internal)?;
            match (local, upstream_failed) {
                (Ok(found), _) => found,
                (Err(_), Some(upstream)) => return Err(upstream),
                (Err(e), None) => return Err(e),
            }
        }
    };
    if let Some(accept) = headers.get(ACCEPT).and_then(|v| v.to_str().ok()) {
        let accepted = accept
            .split(',')
            .map(|t| t.split(';').next().unwrap_or("").trim())
            .any(|t| t == found.media_type || t == "*/*" || t.is_empty());
        if !accepted {
            tracing::debug!(
                "{name}:{reference} is {}, not one of {accept}; serving it anyway",
                found.media_type
            );
        }
    }
    let builder = response(StatusCode::OK)
        .header(CONTENT_TYPE, &found.media_type)
        .header(CONTENT_LENGTH, found.bytes.len())
        .header("Docker-Content-Digest", found.digest.to_string())
        .header(ETAG, format!("\"{}\"", found.digest));
    let body = if head {
        Body::Empty
    } else {
        Body::full(found.bytes)
    };
    builder.body(body).map_err(ApiError::internal)
}

/// Resolves the reference in the catalog and reads the document (blocking).
fn find(state: &State, located: &Located, reference: &str) -> Result<Found, ApiError> {
    let name = located.repository.as_str();
    let catalog = state.catalog.get().map_err(ApiError::internal)?;
    let tags = catalog
        .repository_in(name, located.registry.as_deref())
        .ok_or_else(|| ApiError::name_unknown(name))?;
    let unknown = || ApiError::manifest_unknown(name, reference);
    let (digest, hint) = if reference.contains(':') {
        (parse_digest(reference).map_err(|_| unknown())?, None)
    } else if let Some(tagged) = tags.get(reference) {
        state.usage.used(&tagged.store_ref);
        let hint = tagged.descriptor.media_type().to_string();
        (tagged.descriptor.digest().clone(), Some(hint))
    } else {
        // Not a ref's tag: maybe a tag schema's, answered from the referrers records.
        match tag_schema(state, reference).map_err(ApiError::internal)? {
            Some(TagSchema::Referrer(digest)) => (digest, None),
            Some(TagSchema::Index {
                bytes,
                digest,
                media_type,
            }) => {
                return Ok(Found {
                    bytes: Bytes::from(bytes),
                    digest,
                    media_type: media_type.to_string(),
                })
            }
            None => return Err(unknown()),
        }
    };
    match state.store.stat(&digest).map_err(ApiError::internal)? {
        Some(size) if size <= MANIFEST_LIMIT => {}
        _ => return Err(unknown()),
    }
    let bytes = match state.store.read_blob(&digest, MANIFEST_LIMIT) {
        Ok(bytes) => bytes,
        Err(StoreError::BlobNotFound(_)) => return Err(unknown()),
        Err(e) => return Err(ApiError::internal(e)),
    };
    let media_type = media_type_of(&bytes, hint.as_deref()).ok_or_else(unknown)?;
    Ok(Found {
        bytes: Bytes::from(bytes),
        digest,
        media_type,
    })
}

/// The fields that tell a manifest or an index apart from other JSON blobs.
#[derive(Deserialize)]
struct Shape {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

/// The media type of a stored document, or `None` if it is no manifest or index: the
/// document's own `mediaType`, else the type the ref recorded, else OCI's by shape.
fn media_type_of(bytes: &[u8], hint: Option<&str>) -> Option<String> {
    let shape: Shape = serde_json::from_slice(bytes).ok()?;
    let is_index = shape.manifests.as_ref().is_some_and(|m| m.is_array());
    let is_manifest = shape.config.as_ref().is_some_and(|c| c.is_object());
    if !is_index && !is_manifest {
        return None;
    }
    if let Some(own) = shape.media_type.filter(|t| !t.is_empty()) {
        return Some(own);
    }
    if let Some(hint) = hint.filter(|h| is_graph_type(h)) {
        return Some(hint.to_string());
    }
    Some(
        if is_index {
            "application/vnd.oci.image.index.v1+json"
        } else {
            "application/vnd.oci.image.manifest.v1+json"
        }
        .to_string(),
    )
}
