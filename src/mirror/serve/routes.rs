//! Which endpoint of the distribution API a request is for, and the answers to the
//! small ones (`/v2/`, tag and repository lists, anything that would write).

use std::convert::Infallible;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::page::page;
use super::response::{json, ApiError, Body, ErrorCode};
use super::{blob, manifest, referrers, State};

/// An endpoint, with the repository name and reference taken from the path.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Base,
    Catalog,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Referrers(&'a str, &'a str),
    Upload,
    Unknown,
}

impl<'a> Route<'a> {
    fn of(path: &'a str) -> Self {
        let Some(rest) = path.strip_prefix("/v2") else {
            return Self::Unknown;
        };
        if rest.is_empty() || rest == "/" {
            return Self::Base;
        }
        let Some(rest) = rest.strip_prefix('/') else {
            return Self::Unknown;
        };
        if rest == "_catalog" {
            return Self::Catalog;
        }
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return Self::Tags(name);
        }
        if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
            if !name.is_empty() && !reference.is_empty() && !reference.contains('/') {
                return Self::Manifest(name, reference);
            }
        }
        if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
            if !name.is_empty() && !digest.is_empty() && !digest.contains('/') {
                return Self::Referrers(name, digest);
            }
        }
        if rest.contains("/blobs/uploads") {
            return Self::Upload;
        }
        if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
            if !name.is_empty() && !digest.is_empty() && !digest.contains('/') {
                return Self::Blob(name, digest);
            }
        }
        Self::Unknown
    }
}

/// Answers one request; every failure becomes a spec error document.
pub(super) async fn handle(
    state: State,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let head = method == Method::HEAD;
    let response = match answer(&state, &request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!("{method} {path}: {error}");
            error.into_response(head)
        }
    };
    tracing::debug!(status = response.status().as_u16(), "{method} {path}");
    Ok(response)
}

async fn answer(state: &State, request: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let route = Route::of(request.uri().path());
    let head = match *request.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ if route == Route::Unknown => return Err(not_found()),
        _ => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::Unsupported,
                format!(
                    "{} is not supported: this registry is a read-only view of a stowage store",
                    request.method()
                ),
            ))
        }
    };
    let query = request.uri().query().unwrap_or("");
    let headers = request.headers();
    match route {
        Route::Base => Ok(json(StatusCode::OK, &json!({}), head)),
        Route::Catalog => {
            let catalog = catalog(state).await?;
            let (page, next) = page(catalog.repositories(), query);
            let mut response = json(StatusCode::OK, &json!({ "repositories": page }), head);
            link_next(&mut response, "/v2/_catalog", next);
            Ok(response)
        }
        Route::Tags(name) => {
            let catalog = catalog(state).await?;
            let located = state.locate(name, query);
            let tags = catalog
                .repository_in(&located.repository, located.registry.as_deref())
                .ok_or_else(|| ApiError::name_unknown(name))?;
            let (page, next) = page(tags, query);
            let document = json!({ "name": name, "tags": page });
            let mut response = json(StatusCode::OK, &document, head);
            link_next(&mut response, &format!("/v2/{name}/tags/list"), next);
            Ok(response)
        }
        Route::Manifest(name, reference) => {
            let located = state.locate(name, query);
            manifest::manifest(state, &located, reference, headers, head).await
        }
        Route::Blob(name, digest) => {
            let located = state.locate(name, query);
            blob::blob(state, &located, digest, headers, head).await
        }
        Route::Referrers(name, digest) => {
            referrers::referrers(state, name, digest, query, head).await
        }
        Route::Upload => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            "uploads are not supported: this registry is read-only",
        )),
        Route::Unknown => Err(not_found()),
    }
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::Unsupported,
        "no such endpoint of the distribution API",
    )
}

async fn catalog(state: &State) -> Result<std::sync::Arc<super::catalog::Catalog>, ApiError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || state.catalog.get())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

fn link_next(response: &mut Response<Body>, path: &str, next: Option<(usize, &str)>) {
    if let Some((n, last)) = next {
        let link = format!("<{path}?n={n}&last={last}>; rel=\"next\"");
        if let Ok(value) = link.parse() {
            response.headers_mut().insert(hyper::header::LINK, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn routes() {
        assert_eq!(Route::of("/v2/"), Route::Base);
        assert_eq!(Route::of("/v2"), Route::Base);
        assert_eq!(Route::of("/v2/_catalog"), Route::Catalog);
        assert_eq!(Route::of("/v2/a/b/tags/list"), Route::Tags("a/b"));
        assert_eq!(
            Route::of("/v2/tools/samtools/manifests/1.20"),
            Route::Manifest("tools/samtools", "1.20")
        );
        assert_eq!(
            Route::of("/v2/x/blobs/sha256:abc"),
            Route::Blob("x", "sha256:abc")
        );
        assert_eq!(
            Route::of("/v2/a/b/referrers/sha256:abc"),
            Route::Referrers("a/b", "sha256:abc")
        );
        assert_eq!(Route::of("/v2/x/blobs/uploads/"), Route::Upload);
        assert_eq!(Route::of("/v2/x/blobs/uploads/1234"), Route::Upload);
        assert_eq!(Route::of("/v3/"), Route::Unknown);
        assert_eq!(Route::of("/v2/x/other"), Route::Unknown);
    }
}
