//! Whether a signature's `critical.identity.docker-reference` is accepted for an image
//! under a `signedIdentity`, with containers/image's rules: both sides normalized
//! (`busybox` is `docker.io/library/busybox`), and a signature naming a repository
//! alone (cosign's default) accepted only by `matchRepository` or `exactRepository`.

use crate::oci::reference::Reference;

/// Which `docker-reference` in a signature's payload is accepted for an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIdentity {
    /// A tagged image: the same repository and tag; an image named by digest: the same
    /// repository (the default).
    MatchRepoDigestOrExact,
    /// The same repository, any tag.
    MatchRepository,
    /// The same repository and tag (never an image named by digest alone).
    MatchExact,
    /// Exactly this reference, whatever the image is called.
    ExactReference(String),
    /// This repository, whatever the image is called.
    ExactRepository(String),
}

impl SignedIdentity {
    /// The `type` as the policy spells it.
    pub fn name(&self) -> &'static str {
        match self {
            SignedIdentity::MatchRepoDigestOrExact => "matchRepoDigestOrExact",
            SignedIdentity::MatchRepository => "matchRepository",
            SignedIdentity::MatchExact => "matchExact",
            SignedIdentity::ExactReference(_) => "exactReference",
            SignedIdentity::ExactRepository(_) => "exactRepository",
        }
    }
}

/// `Ok` when `signed` (the payload's docker-reference) is accepted for `image`; else
/// why not.
pub fn accepts(identity: &SignedIdentity, image: &Reference, signed: &str) -> Result<(), String> {
    let signature: Reference = signed
        .parse()
        .map_err(|e| format!("the payload's docker-reference is not a reference: {e}"))?;
    let signed_name_only = name_only(signed);
    let same_repository = signature.name() == image.name();
    let accepted = match identity {
        SignedIdentity::MatchRepoDigestOrExact => {
            if signed_name_only {
                false
            } else if image.tag.is_some() {
                signature.to_string() == image.to_string()
            } else {
                image.digest.is_some() && same_repository
            }
        }
        SignedIdentity::MatchExact => {
            !signed_name_only && signature.to_string() == image.to_string()
        }
        SignedIdentity::MatchRepository => same_repository,
        SignedIdentity::ExactReference(wanted) => match wanted.parse::<Reference>() {
            Ok(parsed) => {
                !signed_name_only
                    && !name_only(wanted)
                    && signature.to_string() == parsed.to_string()
            }
            Err(_) => false,
        },
        SignedIdentity::ExactRepository(wanted) => match wanted.parse::<Reference>() {
            Ok(wanted) => signature.name() == wanted.name(),
            Err(_) => false,
        },
    };
    if accepted {
        return Ok(());
    }
    let wanted = match identity {
        SignedIdentity::ExactReference(r) | SignedIdentity::ExactRepository(r) => r.clone(),
        _ => image.to_string(),
    };
    let hint = if signed_name_only && *identity == SignedIdentity::MatchRepoDigestOrExact {
        " (it names a repository alone, as cosign does by default: a scope that accepts \
         that says \"signedIdentity\": {\"type\": \"matchRepository\"})"
    } else {
        ""
    };
    Err(format!(
        "the payload names docker-reference {signed}, which {} does not accept for {wanted}{hint}",
        identity.name()
    ))
}

/// Whether the reference an `exactReference` or `exactRepository` names can be used,
/// as containers/image checks it when the policy is read: a reference, and for
/// `exactReference` one with a tag or a digest.
pub fn check_named(identity: &SignedIdentity) -> Result<(), String> {
    let (SignedIdentity::ExactReference(named) | SignedIdentity::ExactRepository(named)) = identity
    else {
        return Ok(());
    };
    named
        .parse::<Reference>()
        .map_err(|e| format!("{} {named:?} is not a reference: {e}", identity.name()))?;
    if matches!(identity, SignedIdentity::ExactReference(_)) && name_only(named) {
        return Err(format!(
            "exactReference {named} names neither a tag nor a digest"
        ));
    }
    Ok(())
}

/// Whether a reference as written names a repository alone: no tag, no digest (the
/// parser gives such a one `latest`, which a signature must not be taken to say).
fn name_only(written: &str) -> bool {
    let last = written.rsplit('/').next().unwrap_or(written);
    !written.contains('@') && !last.contains(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_wants_the_tag_for_a_tagged_image_and_the_repository_for_a_digest() {
        let default = SignedIdentity::MatchRepoDigestOrExact;
        let tagged = image("registry.example/tools/samtools:1.20");
        assert!(accepts(&default, &tagged, "registry.example/tools/samtools:1.20").is_ok());
        assert!(accepts(&default, &tagged, "registry.example/tools/samtools:1.21").is_err());
        let repo_only = accepts(&default, &tagged, "registry.example/tools/samtools").unwrap_err();
        assert!(repo_only.contains("matchRepository"), "{repo_only}");
        // Named as the payload wrote it, without the `latest` a parser would add.
        assert!(
            repo_only.contains("docker-reference registry.example/tools/samtools,"),
            "{repo_only}"
        );
        let digest = format!("sha256:{}", "ab".repeat(32));
        let pinned = image(&format!("registry.example/tools/samtools@{digest}"));
        assert!(accepts(&default, &pinned, "registry.example/tools/samtools:any").is_ok());
        assert!(accepts(&default, &pinned, "registry.example/tools/bwa:any").is_err());
    }

    #[test]
    fn match_repository_ignores_tags_and_normalizes_names() {
        let id = SignedIdentity::MatchRepository;
        assert!(accepts(&id, &image("busybox:1"), "docker.io/library/busybox").is_ok());
        assert!(accepts(&id, &image("busybox:1"), "busybox:2").is_ok());
        assert!(accepts(&id, &image("busybox:1"), "quay.io/busybox").is_err());
        assert!(accepts(&id, &image("busybox:1"), "Not A Reference").is_err());
    }

    #[test]
    fn exact_forms_compare_with_what_the_policy_names() {
        let exact = SignedIdentity::MatchExact;
        assert!(accepts(&exact, &image("r.example/a:1"), "r.example/a:1").is_ok());
        assert!(accepts(&exact, &image("r.example/a:1"), "r.example/a").is_err());
        let reference = SignedIdentity::ExactReference("r.example/signed:1".into());
        assert!(accepts(
            &reference,
            &image("mirror.example/a:1"),
            "r.example/signed:1"
        )
        .is_ok());
        assert!(accepts(
            &reference,
            &image("mirror.example/a:1"),
            "mirror.example/a:1"
        )
        .is_err());
        let repository = SignedIdentity::ExactRepository("r.example/signed".into());
        assert!(accepts(&repository, &image("m.example/a:1"), "r.example/signed:9").is_ok());
    }
}
