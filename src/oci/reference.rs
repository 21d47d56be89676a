//! Image references: `[registry/]repository[:tag][@digest]` with docker's defaults
//! (`alpine` is `docker.io/library/alpine:latest`).

use std::fmt;
use std::str::FromStr;

use crate::store::{parse_digest, Digest};

/// The registry a reference without a host names.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The registry host, with a port if one was given (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// The repository path (`library/alpine`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    input: String,
    reason: String,
}

impl Reference {
    /// The host to send API requests to (docker.io's API lives elsewhere).
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn target(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The same reference with the digest replaced (or set).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// Where a mirror of this image lives on `registry`: the same repository and tag
    /// (`latest` when there is none), no digest (a push names the manifest by tag).
    pub fn mirrored_to(&self, registry: &str) -> Self {
        Self {
            registry: registry.to_string(),
            tag: Some(self.tag.clone().unwrap_or_else(|| "latest".to_string())),
            digest: None,
            ..self.clone()
        }
    }
}

/// The registries some references name, each once, sorted; a reference that does
/// not parse names none (it fails on its own where it is used).
pub fn registries<'a>(references: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut hosts: Vec<String> = references
        .into_iter()
        .filter_map(|r| r.parse::<Reference>().ok())
        .map(|r| r.registry)
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    hosts
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| ReferenceError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => (
                rest,
                Some(parse_digest(digest).map_err(|e| fail(&e.to_string()))?),
            ),
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/' (a port comes before).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !valid {
                return Err(fail(
                    "a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), path.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.chars().all(|ch| {
                    ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
                })
        };
        if repository.is_empty() || !repository.split('/').all(component_ok) {
            return Err(fail(
                "a repository is lowercase path components of [a-z0-9._-]",
            ));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn a_mirror_keeps_repository_and_tag_and_drops_the_digest() {
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let pinned = parse(&format!("ghcr.io/x/tool:1.0@{digest}"));
        assert_eq!(
            pinned.mirrored_to("127.0.0.1:5000").to_string(),
            "127.0.0.1:5000/x/tool:1.0"
        );
        assert_eq!(
            parse(&format!("alpine@{digest}"))
                .mirrored_to("m.example")
                .to_string(),
            "m.example/library/alpine:latest"
        );
    }

    #[test]
    fn registries_are_listed_once_and_unparsable_references_name_none() {
        let refs = [
            "b.example/x:1",
            "a.example/y",
            "b.example/z:2",
            "Not A Ref!",
        ];
        assert_eq!(registries(refs), ["a.example", "b.example"]);
    }

    #[test]
    fn docker_hub_defaults() {
        assert_eq!(
            parse("alpine").to_string(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            parse("user/tool:1.2").to_string(),
            "docker.io/user/tool:1.2"
        );
        assert_eq!(parse("alpine").api_host(), "registry-1.docker.io");
    }

    #[test]
    fn hosts_ports_tags_and_digests() {
        let r = parse("127.0.0.1:5000/tools/samtools:1.20");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "tools/samtools");
        assert_eq!(r.tag.as_deref(), Some("1.20"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse(&format!("localhost:5000/x@{d}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.target(), d);
        let r = parse(&format!("localhost/x:t@{d}"));
        assert_eq!(r.to_string(), format!("localhost/x:t@{d}"));
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in ["", "UPPER/case", "x:", "x@sha256:abc", "x:-bad", "a//b"] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }
}
