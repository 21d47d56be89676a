//! Signature policy: a containers-policy.json(5) file, the scope of it that applies to
//! an image, and that scope's requirements checked offline against the cosign
//! signatures in the store. With no policy at all, nothing but digests is checked.

mod cosign;
mod error;
mod file;
mod identity;
mod keys;
mod scope;
mod subjects;

use std::path::{Path, PathBuf};

use oci_spec::image::Digest;

use crate::oci::reference::Reference;
use crate::store::Store;

pub use self::error::{PolicyError, Refusal};
use self::file::{PolicyFile, Requirement};
pub use self::subjects::{signed_subjects, SignedIndexes};

/// Where podman looks for a user's policy, under `$HOME`.
const USER_POLICY: &str = ".config/containers/policy.json";
/// Where podman looks for the system's policy.
pub const SYSTEM_POLICY: &str = "/etc/containers/policy.json";

/// A signature policy read from a containers-policy.json(5) file.
#[derive(Debug, Clone)]
pub struct Policy {
    file: PolicyFile,
}

/// An image the policy accepts: under which scope, and what met each requirement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    pub policy: PathBuf,
    pub scope: String,
    pub accepted_by: Vec<String>,
}

impl Policy {
    /// Reads and checks a policy file; a requirement stowage cannot check (`signedBy`,
    /// keyless `sigstoreSigned`) is an error here, never a silent pass.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// A policy from its bytes; `path` names it in messages, and relative `keyPath`s
    /// are found from its folder.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, PolicyError> {
        Ok(Self {
            file: PolicyFile::parse(path, bytes)?,
        })
    }

    /// Where podman finds the policy when none is given: `$HOME/.config/containers/
    /// policy.json`, else `/etc/containers/policy.json`; `None` when neither exists.
    pub fn find_default() -> Option<PathBuf> {
        let user = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|home| PathBuf::from(home).join(USER_POLICY));
        user.into_iter()
            .chain([PathBuf::from(SYSTEM_POLICY)])
            .find(|p| p.exists())
    }

    /// The policy given, else the one podman would find, else none (digests only).
    pub fn given_or_default(given: Option<&Path>) -> Result<Option<Self>, PolicyError> {
        match given.map(Path::to_path_buf).or_else(Self::find_default) {
            Some(path) => Self::load(&path).map(Some),
            None => Ok(None),
        }
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Whether every scope and the default hold `insecureAcceptAnything` alone (the
    /// policy Debian ships): nothing can be refused, so nothing need be checked.
    pub fn accepts_anything(&self) -> bool {
        let open = |list: &[Requirement]| {
            list.iter()
                .all(|r| matches!(r, Requirement::InsecureAcceptAnything))
        };
        open(&self.file.default) && self.file.docker.values().all(|l| open(l))
    }

    /// The label of the scope that applies to `image` (`transports.docker."<scope>"`
    /// or `default`).
    pub fn scope_of(&self, image: &Reference) -> String {
        scope::lookup(&self.file, image).0
    }

    /// Whether the scope that applies to `image` needs its signatures (so a pull
    /// fetches them before the check).
    pub fn needs_signatures(&self, image: &Reference) -> bool {
        scope::lookup(&self.file, image)
            .1
            .iter()
            .any(Requirement::needs_signatures)
    }

    /// Checks `image` (its name, as the store records it) against its scope, with the
    /// signatures the store holds for `digests` (the image's manifest first, then the
    /// index it was chosen from, if any: see [`signed_subjects`]). Every requirement of
    /// the scope must be met; a refusal names the image, the scope and each reason.
    pub fn check(
        &self,
        store: &Store,
        image: &str,
        digests: &[Digest],
    ) -> Result<Verdict, PolicyError> {
        // A name that is no registry reference (an OCI layout's bare `1.0`) is in no
        // docker scope: the policy's default applies, and no signature can name it.
        let reference = image.parse::<Reference>().ok();
        let (scope, requirements) = match &reference {
            Some(reference) => scope::lookup(&self.file, reference),
            None => ("default".to_string(), self.file.default.as_slice()),
        };
        let mut accepted_by = Vec::new();
        let mut reasons = Vec::new();
        for requirement in requirements {
            match requirement {
                Requirement::InsecureAcceptAnything => {
                    accepted_by.push("insecureAcceptAnything".to_string())
                }
                Requirement::Reject => {
                    reasons.push("the scope rejects every image (\"type\": \"reject\")".into())
                }
                Requirement::SigstoreSigned { .. } if reference.is_none() => reasons.push(
                    "it is not named as a registry reference, so no signature's \
                     docker-reference can name it"
                        .into(),
                ),
                Requirement::SigstoreSigned { keys, identity } => {
                    let reference = reference.as_ref().expect("checked above");
                    let outcome = cosign::verify(store, reference, digests, keys, identity)
                        .map_err(|source| PolicyError::Store {
                            image: image.to_string(),
                            source: Box::new(source),
                        })?;
                    match outcome {
                        Ok(ok) => accepted_by.push(format!(
                            "sigstoreSigned: signature {} of {} verifies with {}",
                            ok.signature, ok.subject, ok.key
                        )),
                        Err(problems) => reasons.extend(problems),
                    }
                }
            }
        }
        if !reasons.is_empty() {
            return Err(PolicyError::Refused(Refusal {
                image: image.to_string(),
                policy: self.file.path.clone(),
                scope,
                reasons,
            }));
        }
        Ok(Verdict {
            policy: self.file.path.clone(),
            scope,
            accepted_by,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_is_no_reference_falls_under_the_default_and_no_signature_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let digest: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let open = Policy::from_bytes(
            Path::new("/p.json"),
            br#"{"default": [{"type": "insecureAcceptAnything"}],
                 "transports": {"docker": {"": [{"type": "reject"}]}}}"#,
        )
        .unwrap();
        let verdict = open
            .check(&store, "Not A Reference", std::slice::from_ref(&digest))
            .unwrap();
        assert_eq!(verdict.scope, "default");
        assert!(!open.accepts_anything());
        let debian = Policy::from_bytes(
            Path::new("/p.json"),
            br#"{"default": [{"type": "insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        assert!(debian.accepts_anything());
        // A reference gets the transport's "" scope, which rejects.
        assert!(open
            .check(&store, "r.example/a:1", std::slice::from_ref(&digest))
            .is_err());

        use base64::Engine;
        use p256::pkcs8::{EncodePublicKey, LineEnding};
        let pem = p256::ecdsa::SigningKey::from_slice(&[7u8; 32])
            .unwrap()
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let data = base64::engine::general_purpose::STANDARD.encode(pem);
        let signed = Policy::from_bytes(
            Path::new("/p.json"),
            format!(r#"{{"default": [{{"type": "sigstoreSigned", "keyData": "{data}"}}]}}"#)
                .as_bytes(),
        )
        .unwrap();
        let refused = signed
            .check(&store, "Not A Reference", &[digest])
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("Not A Reference") && refused.contains("(scope default)"),
            "{refused}"
        );
        assert!(
            refused.contains("not named as a registry reference"),
            "{refused}"
        );
    }
}
