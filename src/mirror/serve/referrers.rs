//! Referrers from the store's records: `GET`/`HEAD /v2/<name>/referrers/<digest>`
//! (the distribution spec's referrers API, filtered by `artifactType`), and the two
//! tag schemas for clients that look there (cosign's `sha256-<hex>.sig`, `.att` and
//! `.sbom`, and the spec's fallback `sha256-<hex>` index).
//!
//! A referrer manifest itself is served by digest like any stored manifest, under any
//! served repository, so under its subject's too.

use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use super::response::{response, ApiError, Body, ErrorCode};
use super::State;
use crate::oci::referrer::CosignTag;
use crate::store::{parse_digest, sha256_of, Digest, StoreError};

/// The referrers API's media type, and the fallback tag's.
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// Answers a referrers request: 200 with the subject's referrers (an empty index when
/// the store records none, as the spec says), for a repository this store serves.
pub(super) async fn referrers(
    state: &State,
    name: &str,
    digest: &str,
    query: &str,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let subject = parse_digest(digest).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::DigestInvalid,
            e.to_string(),
        )
    })?;
    let artifact_type = artifact_type(query);
    let bytes = {
        let (state, name, filter) = (state.clone(), name.to_string(), artifact_type.clone());
        tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
            let catalog = state.catalog.get().map_err(ApiError::internal)?;
            catalog
                .repository(&name)
                .ok_or_else(|| ApiError::name_unknown(&name))?;
            index_bytes(&state, &subject, filter.as_deref()).map_err(ApiError::internal)
        })
        .await
        .map_err(ApiError::internal)??
    };
    let mut builder = response(StatusCode::OK)
        .header(CONTENT_TYPE, INDEX_MEDIA_TYPE)
        .header(CONTENT_LENGTH, bytes.len());
    if artifact_type.is_some() {
        builder = builder.header("OCI-Filters-Applied", "artifactType");
    }
    let body = if head { Body::Empty } else { Body::full(bytes) };
    builder.body(body).map_err(ApiError::internal)
}

/// The referrers index of `subject` as JSON (blocking).
fn index_bytes(
    state: &State,
    subject: &Digest,
    artifact_type: Option<&str>,
) -> Result<Vec<u8>, StoreError> {
    let index = state.store.referrers_index(subject, artifact_type)?;
    Ok(serde_json::to_vec(&index).expect("an index serialises"))
}

/// What a tag of one of the tag schemas names in the store's records.
pub(super) enum TagSchema {
    /// A cosign tag: the referrer manifest recorded under it.
    Referrer(Digest),
    /// The fallback tag: the subject's referrers index, made now.
    Index {
        bytes: Vec<u8>,
        digest: Digest,
        media_type: &'static str,
    },
}

/// Resolves `tag` through the tag schemas (blocking): `sha256-<hex>.sig` (`.att`,
/// `.sbom`) to the referrer last recorded as found under that cosign tag,
/// `sha256-<hex>` to an index of every referrer of the subject. `None` when the tag is
/// of neither form or the records hold nothing for it.
pub(super) fn tag_schema(state: &State, tag: &str) -> Result<Option<TagSchema>, StoreError> {
    let (stem, kind) = match tag.rsplit_once('.') {
        Some((stem, suffix)) => match CosignTag::from_suffix(suffix) {
            Some(kind) => (stem, Some(kind)),
            None => return Ok(None),
        },
        None => (tag, None),
    };
    let Some(subject) = stem
        .split_once('-')
        .and_then(|(algorithm, hex)| parse_digest(&format!("{algorithm}:{hex}")).ok())
    else {
        return Ok(None);
    };
    let referrers = state.store.referrers(&subject)?;
    if let Some(kind) = kind {
        return Ok(referrers
            .iter()
            .rev()
            .find(|d| CosignTag::of(d) == Some(kind))
            .map(|d| TagSchema::Referrer(d.digest().clone())));
    }
    if referrers.is_empty() {
        return Ok(None);
    }
    let bytes = index_bytes(state, &subject, None)?;
    Ok(Some(TagSchema::Index {
        digest: sha256_of(&bytes),
        bytes,
        media_type: INDEX_MEDIA_TYPE,
    }))
}

/// The `artifactType` query parameter, percent-decoded.
fn artifact_type(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "artifactType")
        .map(|(_, value)| percent_decoded(value))
        .filter(|value| !value.is_empty())
}

/// `%XX` escapes decoded (a `+` stays a `+`: media types hold them, never spaces).
fn percent_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::artifact_type;

    #[test]
    fn the_artifact_type_filter_is_decoded() {
        assert_eq!(
            artifact_type("n=1&artifactType=application%2Fspdx%2Bjson").as_deref(),
            Some("application/spdx+json")
        );
        assert_eq!(
            artifact_type("artifactType=application/spdx+json").as_deref(),
            Some("application/spdx+json")
        );
        assert_eq!(artifact_type("artifactType="), None);
        assert_eq!(artifact_type(""), None);
        assert_eq!(
            artifact_type("artifactType=%zz%2").as_deref(),
            Some("%zz%2")
        );
    }
}
