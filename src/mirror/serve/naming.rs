//! Which registry a request names, so that two registries' repositories of the same
//! path stay apart and a pull-through serve knows where to fetch from.
//!
//! In order:
//! 1. containerd's `?ns=HOST` query parameter (sent when a `hosts.toml` mirror is
//!    used): the registry is `HOST`;
//! 2. a mirror path whose first component is a configured upstream (CRI-O and podman
//!    `registries.conf` mirrors with `location = "127.0.0.1:PORT/HOST"` ask for
//!    `/v2/HOST/x/y/...`): the registry is `HOST`, the repository `x/y`;
//! 3. else the default upstream (the first `--upstream`), or, without upstreams, no
//!    registry: every registry's refs, the first listed winning a shared path.

use crate::oci::reference::Reference;

/// A request's repository and the registry it names, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Located {
    /// `host[:port]` as refs name registries (`docker.io`, `127.0.0.1:5000`).
    pub registry: Option<String>,
    /// The repository path within it (`library/alpine` for docker.io's `alpine`).
    pub repository: String,
}

/// Locates `name` (the path's repository) with `query` (the request's query string)
/// among `upstreams` (normalised with [`registry_of`]; the first is the default).
pub(super) fn locate(name: &str, query: &str, upstreams: &[String]) -> Located {
    let ns = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "ns")
        .map(|(_, value)| percent_decode(value))
        .filter(|value| !value.is_empty());
    let (registry, repository) = if let Some(ns) = ns {
        (Some(registry_of(&ns).unwrap_or(ns)), name)
    } else if let Some((first, rest)) = name
        .split_once('/')
        .filter(|(first, rest)| !rest.is_empty() && upstreams.iter().any(|u| u == first))
    {
        (Some(first.to_string()), rest)
    } else {
        (upstreams.first().cloned(), name)
    };
    let repository = match &registry {
        // docker.io's one-component names are under library/.
        Some(registry) => format!("{registry}/{repository}")
            .parse::<Reference>()
            .ok()
            .filter(|r| r.registry == *registry)
            .map_or_else(|| repository.to_string(), |r| r.repository),
        None => repository.to_string(),
    };
    Located {
        registry,
        repository,
    }
}

/// A registry as refs name it: `host[:port]` of `input`, which may be a URL
/// (`http://127.0.0.1:5000/`) or a host (`registry-1.docker.io` is `docker.io`'s API
/// host and stays as given).
pub(super) fn registry_of(input: &str) -> Option<String> {
    let host = input
        .strip_prefix("http://")
        .or_else(|| input.strip_prefix("https://"))
        .unwrap_or(input)
        .trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return None;
    }
    format!("{host}/x")
        .parse::<Reference>()
        .ok()
        .map(|r| r.registry)
}

/// `%XX` escapes decoded (containerd escapes the `:` of `HOST:PORT`).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{locate, registry_of, Located};

    fn located(registry: Option<&str>, repository: &str) -> Located {
        Located {
            registry: registry.map(str::to_string),
            repository: repository.to_string(),
        }
    }

    #[test]
    fn a_request_names_its_registry_by_ns_then_mirror_path_then_the_default() {
        let upstreams = vec!["127.0.0.1:5000".to_string(), "docker.io".to_string()];
        assert_eq!(
            locate("x/y", "ns=docker.io", &upstreams),
            located(Some("docker.io"), "x/y")
        );
        assert_eq!(
            locate("alpine", "ns=docker.io", &upstreams),
            located(Some("docker.io"), "library/alpine")
        );
        assert_eq!(
            locate("x/y", "n=5&ns=127.0.0.1%3A5000", &upstreams),
            located(Some("127.0.0.1:5000"), "x/y")
        );
        assert_eq!(
            locate("docker.io/library/alpine", "", &upstreams),
            located(Some("docker.io"), "library/alpine")
        );
        assert_eq!(
            locate("x/y", "", &upstreams),
            located(Some("127.0.0.1:5000"), "x/y")
        );
        assert_eq!(locate("x/y", "", &[]), located(None, "x/y"));
        // A first component that is no upstream is part of the repository.
        assert_eq!(
            locate("quay.io/x/y", "", &upstreams),
            located(Some("127.0.0.1:5000"), "quay.io/x/y")
        );
    }

    #[test]
    fn upstreams_are_named_as_refs_name_registries() {
        assert_eq!(
            registry_of("http://127.0.0.1:5000/").as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(
            registry_of("registry.example").as_deref(),
            Some("registry.example")
        );
        assert_eq!(registry_of("https://a.example/path"), None);
    }
}
