//! Discovering a subject's referrers on a registry: the referrers API
//! (`GET /v2/<name>/referrers/<digest>`, an image index, paged by `Link`), or, where a
//! registry lacks it, the distribution spec's fallback tag (`<alg>-<hex>`, an index
//! of referrer descriptors); and always cosign's tags (`<alg>-<hex>.sig`, `.att`,
//! `.sbom`), which cosign writes even where the API exists and which the API does
//! not list. Only descriptors are returned: the manifests are fetched, verified, by
//! digest (`pull::referrers`). Requests go through [`Client::get`] and
//! [`Client::manifest`], with their auth, retries and bounded bodies.

use oci_spec::image::{Descriptor, ImageIndex};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, LINK};

use super::body::{read_limited, BodyError};
use super::{Client, RegistryError};
use crate::oci::manifest::ManifestKind;
use crate::oci::reference::Reference;
use crate::oci::referrer::{fallback_tag, referrer_descriptor, CosignTag, ANNOTATION_COSIGN_TAG};
use crate::store::{Digest, MANIFEST_LIMIT};

/// The media type the referrers API answers with.
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// The header a registry sets when it applied the `artifactType` filter itself.
const FILTERS_APPLIED: &str = "OCI-Filters-Applied";

/// Pages of a referrers answer followed at most (a registry whose `Link`s loop must
/// not keep a pull going for ever).
const MAX_PAGES: usize = 64;

impl Client {
    /// The referrers of `subject` in `reference`'s repository (its tag or digest is
    /// ignored), only those of `artifact_type` when given. Each descriptor carries its
    /// `artifactType`; one found under a cosign tag carries [`ANNOTATION_COSIGN_TAG`]
    /// and, when its manifest names none, the tag's [`CosignTag::artifact_type`].
    /// A registry without the API, and missing tags, just mean fewer referrers.
    pub async fn referrers(
        &self,
        reference: &Reference,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, RegistryError> {
        let mut found = match self
            .referrers_api(reference, subject, artifact_type)
            .await?
        {
            Some(listed) => listed,
            None => self.fallback_index(reference, subject).await?,
        };
        for tag in CosignTag::ALL {
            if let Some(descriptor) = self.cosign_tagged(reference, subject, tag).await? {
                if !found.iter().any(|d| d.digest() == descriptor.digest()) {
                    found.push(descriptor);
                }
            }
        }
        found.retain(|d| {
            artifact_type.is_none_or(|wanted| {
                d.artifact_type()
                    .as_ref()
                    .is_some_and(|t| t.to_string() == wanted)
            })
        });
        Ok(found)
    }

    /// The referrers API's answer, every page of it; `None` when the registry has no
    /// such API (a 404, another client error, or an answer that is not an index).
    async fn referrers_api(
        &self,
        reference: &Reference,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<Descriptor>>, RegistryError> {
        let host = reference.api_host();
        let base = self.base_url(host).await;
        let mut url = format!("{base}/v2/{}/referrers/{subject}", reference.repository);
        if let Some(wanted) = artifact_type {
            url = format!("{url}?artifactType={}", query_escape(wanted));
        }
        let mut found: Vec<Descriptor> = Vec::new();
        for page in 0..MAX_PAGES {
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT, HeaderValue::from_static(INDEX_TYPE));
            let mut response = match self.get(host, &reference.repository, &url, headers).await {
                Ok(response) => response,
                Err(RegistryError::Status { status, .. })
                    if page == 0 && (400..500).contains(&status) =>
                {
                    tracing::debug!(%url, status, "no referrers API; using the tag schemas");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let filtered = response
                .headers()
                .get(FILTERS_APPLIED)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|f| f.trim() == "artifactType"));
            let next = response
                .headers()
                .get(LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link)
                .map(|link| absolute(&base, &link));
            let bytes = read_limited(&mut response, MANIFEST_LIMIT, self.low_speed)
                .await
                .map_err(|e| match e {
                    BodyError::Http(source) => RegistryError::Http {
                        url: url.clone(),
                        source: source.without_url(),
                    },
                    other => RegistryError::BadManifest {
                        reference: format!("{reference} referrers of {subject}"),
                        detail: other.describe(
                            "the referrers index",
                            MANIFEST_LIMIT,
                            self.low_speed,
                        ),
                    },
                })?;
            let index: ImageIndex = match serde_json::from_slice(&bytes) {
                Ok(index) => index,
                Err(e) if page == 0 => {
                    tracing::debug!(%url, "the referrers answer is not an index ({e}); using the tag schemas");
                    return Ok(None);
                }
                Err(e) => {
                    return Err(RegistryError::BadManifest {
                        reference: format!("{reference} referrers of {subject}"),
                        detail: format!("page {} of the referrers index: {e}", page + 1),
                    })
                }
            };
            for descriptor in index.manifests() {
                let wanted = filtered
                    || artifact_type.is_none_or(|w| {
                        descriptor
                            .artifact_type()
                            .as_ref()
                            .is_some_and(|t| t.to_string() == w)
                    });
                if wanted && !found.iter().any(|d| d.digest() == descriptor.digest()) {
                    found.push(descriptor.clone());
                }
            }
            match next {
                Some(link) if link != url => url = link,
                _ => return Ok(Some(found)),
            }
        }
        Err(RegistryError::BadManifest {
            reference: format!("{reference} referrers of {subject}"),
            detail: format!("the referrers index runs past {MAX_PAGES} pages"),
        })
    }

    /// The descriptors of the fallback tag's index (`<alg>-<hex>`); none when the tag
    /// is missing or holds something else than an index.
    async fn fallback_index(
        &self,
        reference: &Reference,
        subject: &Digest,
    ) -> Result<Vec<Descriptor>, RegistryError> {
        let tag = fallback_tag(subject);
        let Some(raw) = absent_is_none(self.manifest(reference, &tag).await)? else {
            return Ok(Vec::new());
        };
        match raw.parse(&format!("{}:{tag}", reference.name())) {
            Ok(ManifestKind::Index(index)) => Ok(index.manifests().clone()),
            Ok(ManifestKind::Image(_)) | Err(_) => {
                tracing::warn!(
                    "{}:{tag} is not a referrers index ({}); ignored",
                    reference.name(),
                    raw.media_type
                );
                Ok(Vec::new())
            }
        }
    }

    /// The referrer cosign keeps under `tag`'s tag, as a referrers descriptor.
    async fn cosign_tagged(
        &self,
        reference: &Reference,
        subject: &Digest,
        tag: CosignTag,
    ) -> Result<Option<Descriptor>, RegistryError> {
        let name = tag.tag(subject);
        let Some(raw) = absent_is_none(self.manifest(reference, &name).await)? else {
            return Ok(None);
        };
        let manifest = match raw.parse(&format!("{}:{name}", reference.name()))? {
            ManifestKind::Image(manifest) => manifest,
            ManifestKind::Index(_) => {
                tracing::warn!(
                    "{}:{name} is an index, not a cosign manifest; ignored",
                    reference.name()
                );
                return Ok(None);
            }
        };
        let mut descriptor =
            referrer_descriptor(&manifest, raw.digest.clone(), raw.bytes.len() as u64);
        descriptor.set_media_type(raw.descriptor().media_type().clone());
        if manifest.artifact_type().is_none() {
            descriptor.set_artifact_type(Some(tag.artifact_type().into()));
        }
        let mut annotations = descriptor.annotations().clone().unwrap_or_default();
        annotations.insert(ANNOTATION_COSIGN_TAG.into(), tag.suffix().into());
        descriptor.set_annotations(Some(annotations));
        Ok(Some(descriptor))
    }
}

/// A missing manifest (HTTP 404) is `None`; other failures stay errors.
fn absent_is_none<T>(result: Result<T, RegistryError>) -> Result<Option<T>, RegistryError> {
    match result {
        Ok(found) => Ok(Some(found)),
        Err(RegistryError::Status { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The `rel="next"` target of a `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_string())
    })
}

/// A `Link` target made absolute against `base` (`scheme://host`).
fn absolute(base: &str, link: &str) -> String {
    if link.starts_with("http://") || link.starts_with("https://") {
        link.to_string()
    } else if link.starts_with('/') {
        format!("{base}{link}")
    } else {
        format!("{base}/{link}")
    }
}

/// An artifact type as a query value: a media type's `+` and the rare reserved
/// characters escaped.
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{absolute, next_link, query_escape};

    #[test]
    fn the_next_link_is_found_among_others() {
        let header =
            r#"</v2/a/referrers/sha256:1?n=1&last=x>; rel="next", </v2/a/tags/list>; rel="first""#;
        assert_eq!(
            next_link(header).as_deref(),
            Some("/v2/a/referrers/sha256:1?n=1&last=x")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
        assert_eq!(absolute("http://h:5000", "/v2/x"), "http://h:5000/v2/x");
        assert_eq!(
            absolute("http://h:5000", "https://o/v2/x"),
            "https://o/v2/x"
        );
    }

    #[test]
    fn artifact_types_are_escaped_for_the_query() {
        assert_eq!(
            query_escape("application/spdx+json"),
            "application/spdx%2Bjson"
        );
    }
}
