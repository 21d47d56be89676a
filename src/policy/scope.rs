//! Which scope of a policy applies to an image, as containers/image picks it for the
//! docker transport: the most specific of the image itself (`host/ns/repo:tag` or
//! `host/ns/repo@digest`), its repository (`host/ns/repo`), each parent namespace
//! (`host/ns`), the host, the wildcard hosts above it without the port
//! (`*.example.com`, then `*.com`), the transport's own default (`""`), and last the
//! policy's `default`.

use crate::oci::reference::Reference;

use super::file::{scope_label, PolicyFile, Requirement};

/// The scope names that may apply to `reference`, most specific first (without the
/// policy's `default`).
pub fn candidates(reference: &Reference) -> Vec<String> {
    let name = reference.name();
    let identity = match (&reference.tag, &reference.digest) {
        (Some(tag), _) => format!("{name}:{tag}"),
        (None, Some(digest)) => format!("{name}@{digest}"),
        // Named without either: `latest`, as a pull resolves it.
        (None, None) => format!("{name}:latest"),
    };
    let mut scopes = vec![identity];
    let mut namespace = name.as_str();
    loop {
        scopes.push(namespace.to_string());
        match namespace.rfind('/') {
            Some(i) => namespace = &namespace[..i],
            None => break,
        }
    }
    // containers/image drops the port before the wildcards: `host.example.com:5000`
    // falls under `*.example.com`, never `*.example.com:5000`.
    let mut host = reference.registry.as_str();
    if let Some(colon) = host.find(':') {
        host = &host[..colon];
    }
    while let Some(dot) = host.find('.') {
        host = &host[dot + 1..];
        scopes.push(format!("*.{host}"));
    }
    scopes.push(String::new());
    scopes
}

/// The scope of `policy` that applies to `reference`: its label for messages
/// (`transports.docker."<scope>"` or `default`) and its requirements.
pub fn lookup<'p>(policy: &'p PolicyFile, reference: &Reference) -> (String, &'p [Requirement]) {
    for scope in candidates(reference) {
        if let Some(requirements) = policy.docker.get(&scope) {
            return (scope_label(&scope), requirements);
        }
    }
    ("default".to_string(), &policy.default)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn policy(json: &str) -> PolicyFile {
        PolicyFile::parse(Path::new("/etc/containers/policy.json"), json.as_bytes()).unwrap()
    }

    fn scope_of(policy: &PolicyFile, image: &str) -> String {
        lookup(policy, &image.parse().unwrap()).0
    }

    const LAYERED: &str = r#"{
        "default": [{"type": "reject"}],
        "transports": {"docker": {
            "registry.example.com": [{"type": "insecureAcceptAnything"}],
            "registry.example.com/tools": [{"type": "reject"}],
            "registry.example.com/tools/samtools": [{"type": "insecureAcceptAnything"}],
            "registry.example.com/tools/samtools:1.20": [{"type": "reject"}],
            "*.example.com": [{"type": "reject"}],
            "*.org": [{"type": "insecureAcceptAnything"}]
        }}
    }"#;

    #[test]
    fn candidates_run_from_the_image_to_the_wildcard_hosts() {
        let image: Reference = "a.b.example.com:5000/ns/sub/repo:1".parse().unwrap();
        assert_eq!(
            candidates(&image),
            [
                "a.b.example.com:5000/ns/sub/repo:1",
                "a.b.example.com:5000/ns/sub/repo",
                "a.b.example.com:5000/ns/sub",
                "a.b.example.com:5000/ns",
                "a.b.example.com:5000",
                "*.b.example.com",
                "*.example.com",
                "*.com",
                "",
            ]
        );
        let digest = format!("sha256:{}", "ab".repeat(32));
        let pinned: Reference = format!("busybox@{digest}").parse().unwrap();
        assert_eq!(
            candidates(&pinned)[..3],
            [
                format!("docker.io/library/busybox@{digest}"),
                "docker.io/library/busybox".to_string(),
                "docker.io/library".to_string(),
            ]
        );
    }

    #[test]
    fn the_tag_beats_the_repository_beats_the_namespace_beats_the_host() {
        let p = policy(LAYERED);
        let label = |s: &str| scope_label(s);
        assert_eq!(
            scope_of(&p, "registry.example.com/tools/samtools:1.20"),
            label("registry.example.com/tools/samtools:1.20")
        );
        assert_eq!(
            scope_of(&p, "registry.example.com/tools/samtools:1.21"),
            label("registry.example.com/tools/samtools")
        );
        assert_eq!(
            scope_of(&p, "registry.example.com/tools/bwa:1"),
            label("registry.example.com/tools")
        );
        assert_eq!(
            scope_of(&p, "registry.example.com/other/bwa:1"),
            label("registry.example.com")
        );
    }

    #[test]
    fn a_wildcard_host_comes_after_the_host_and_before_the_default() {
        let p = policy(LAYERED);
        assert_eq!(
            scope_of(&p, "mirror.example.com/tools/bwa:1"),
            scope_label("*.example.com")
        );
        assert_eq!(
            scope_of(&p, "deep.mirror.example.com/x:1"),
            scope_label("*.example.com")
        );
        assert_eq!(scope_of(&p, "quay.example.org/x:1"), scope_label("*.org"));
        // With a port: the host scope names none, the wildcard drops it.
        assert_eq!(
            scope_of(&p, "registry.example.com:5000/tools/bwa:1"),
            scope_label("*.example.com")
        );
        // A wildcard never matches the bare domain: example.com is not *.example.com.
        assert_eq!(scope_of(&p, "example.com/x:1"), "default");
        assert_eq!(scope_of(&p, "ghcr.io/x/y:1"), "default");
    }

    #[test]
    fn the_transport_default_comes_before_the_policy_default() {
        let p = policy(
            r#"{"default": [{"type": "reject"}],
                "transports": {"docker": {"": [{"type": "insecureAcceptAnything"}]},
                               "atomic": {"x": [{"type": "signedBy"}]}}}"#,
        );
        assert_eq!(scope_of(&p, "ghcr.io/x/y:1"), scope_label(""));
    }
}
