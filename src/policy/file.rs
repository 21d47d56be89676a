//! The containers-policy.json(5) format, as far as stowage checks it: the `default`
//! requirements and the `docker` transport's scopes. Other transports (`atomic`,
//! `docker-daemon`, `oci`, ...) name images stowage never reads, so they are ignored,
//! unchecked. Requirements stowage cannot check are refused when the file is read,
//! never passed silently: `signedBy` (GPG), `signedBaseLayer`, and the keyless forms
//! of `sigstoreSigned` (Fulcio, Rekor, PKI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Map, Value};

use super::error::PolicyError;
use super::identity::{self, SignedIdentity};
use super::keys::PublicKey;

/// The one transport whose scopes apply to registry images.
const DOCKER: &str = "docker";

/// A parsed policy: the requirements for images no scope names, and the docker
/// transport's scopes (`""` is the transport's own default).
#[derive(Debug, Clone)]
pub struct PolicyFile {
    pub path: PathBuf,
    pub default: Vec<Requirement>,
    pub docker: BTreeMap<String, Vec<Requirement>>,
}

/// One requirement of a scope; an image must meet every requirement of its scope.
#[derive(Debug, Clone)]
pub enum Requirement {
    /// Anything is accepted.
    InsecureAcceptAnything,
    /// Nothing is accepted.
    Reject,
    /// A cosign signature made with one of these keys, for this identity.
    SigstoreSigned {
        keys: Vec<PublicKey>,
        identity: SignedIdentity,
    },
}

impl Requirement {
    /// Whether meeting it needs the image's signatures (so a pull fetches them).
    pub fn needs_signatures(&self) -> bool {
        matches!(self, Requirement::SigstoreSigned { .. })
    }
}

impl PolicyFile {
    /// Parses a policy's bytes; `path` names it in messages and its folder is where
    /// relative `keyPath`s are found.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, PolicyError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|source| PolicyError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let reader = Reader {
            path,
            base: path.parent().unwrap_or(Path::new(".")),
        };
        let top = value
            .as_object()
            .ok_or_else(|| reader.invalid("(top level)", "the policy is not a JSON object"))?;
        for key in top.keys() {
            if key != "default" && key != "transports" {
                return Err(reader.invalid("(top level)", format!("unknown field {key:?}")));
            }
        }
        let default = match top.get("default") {
            Some(list) => reader.requirements("default", list)?,
            None => {
                return Err(reader.invalid(
                    "default",
                    "no \"default\" requirements (containers/image refuses such a policy too)",
                ))
            }
        };
        let mut docker = BTreeMap::new();
        if let Some(transports) = top.get("transports") {
            let transports = transports
                .as_object()
                .ok_or_else(|| reader.invalid("transports", "not an object"))?;
            if let Some(scopes) = transports.get(DOCKER) {
                let scopes = scopes
                    .as_object()
                    .ok_or_else(|| reader.invalid("transports.docker", "not an object"))?;
                for (scope, list) in scopes {
                    let label = scope_label(scope);
                    check_scope(scope).map_err(|detail| reader.invalid(&label, detail))?;
                    docker.insert(scope.clone(), reader.requirements(&label, list)?);
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            default,
            docker,
        })
    }
}

/// How a scope is named in messages: `default`, or `transports.docker."<scope>"`.
pub fn scope_label(scope: &str) -> String {
    format!("transports.docker.{scope:?}")
}

/// A docker scope is `""`, a wildcard host (`*.example.com`), or a reference or
/// namespace written in full (`registry.example/ns/repo[:tag|@digest]`).
fn check_scope(scope: &str) -> Result<(), String> {
    if scope.is_empty() {
        return Ok(());
    }
    if let Some(rest) = scope.strip_prefix("*.") {
        // A port could never match: wildcards are compared without one.
        if rest.is_empty() || rest.contains(['/', '*', ':']) {
            return Err("a wildcard scope names a host only, without a port: *.example.com".into());
        }
        return Ok(());
    }
    if scope.contains('*') {
        return Err("a wildcard may only begin a host scope: *.example.com".into());
    }
    if scope.starts_with('/') || scope.ends_with('/') || scope.contains("//") {
        return Err("not a registry, namespace or image reference".into());
    }
    Ok(())
}

struct Reader<'a> {
    path: &'a Path,
    base: &'a Path,
}

impl Reader<'_> {
    fn invalid(&self, scope: &str, detail: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            path: self.path.to_path_buf(),
            scope: scope.to_string(),
            detail: detail.into(),
        }
    }

    fn unsupported(&self, scope: &str, what: impl Into<String>) -> PolicyError {
        PolicyError::Unsupported {
            path: self.path.to_path_buf(),
            scope: scope.to_string(),
            what: what.into(),
        }
    }

    fn requirements(&self, scope: &str, list: &Value) -> Result<Vec<Requirement>, PolicyError> {
        let list = list
            .as_array()
            .ok_or_else(|| self.invalid(scope, "the requirements are not a list"))?;
        if list.is_empty() {
            return Err(self.invalid(
                scope,
                "an empty list of requirements (write [{\"type\": \"insecureAcceptAnything\"}] \
                 to accept anything)",
            ));
        }
        list.iter().map(|r| self.requirement(scope, r)).collect()
    }

    fn requirement(&self, scope: &str, value: &Value) -> Result<Requirement, PolicyError> {
        let object = value
            .as_object()
            .ok_or_else(|| self.invalid(scope, "a requirement is not an object"))?;
        let kind = object
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| self.invalid(scope, "a requirement has no \"type\""))?;
        match kind {
            "insecureAcceptAnything" | "reject" => {
                self.only_fields(scope, kind, object, &[])?;
                Ok(if kind == "reject" {
                    Requirement::Reject
                } else {
                    Requirement::InsecureAcceptAnything
                })
            }
            "sigstoreSigned" => self.sigstore(scope, object),
            "signedBy" => Err(self.unsupported(scope, "signedBy (GPG signatures)")),
            "signedBaseLayer" => Err(self.unsupported(scope, "signedBaseLayer")),
            other => Err(self.invalid(scope, format!("unknown requirement type {other:?}"))),
        }
    }

    fn only_fields(
        &self,
        scope: &str,
        kind: &str,
        object: &Map<String, Value>,
        allowed: &[&str],
    ) -> Result<(), PolicyError> {
        match object
            .keys()
            .find(|k| *k != "type" && !allowed.contains(&k.as_str()))
        {
            Some(k) => Err(self.invalid(scope, format!("{kind}: unknown field {k:?}"))),
            None => Ok(()),
        }
    }

    fn sigstore(
        &self,
        scope: &str,
        object: &Map<String, Value>,
    ) -> Result<Requirement, PolicyError> {
        for keyless in [
            "fulcio",
            "pki",
            "rekorPublicKeyPath",
            "rekorPublicKeyPaths",
            "rekorPublicKeyData",
            "rekorPublicKeyDatas",
        ] {
            if object.contains_key(keyless) {
                return Err(self.unsupported(scope, format!("sigstoreSigned with {keyless}")));
            }
        }
        self.only_fields(
            scope,
            "sigstoreSigned",
            object,
            &[
                "keyPath",
                "keyPaths",
                "keyData",
                "keyDatas",
                "signedIdentity",
            ],
        )?;
        // The identity first: an unsupported one is named before any key is read.
        let identity = match object.get("signedIdentity") {
            None => SignedIdentity::MatchRepoDigestOrExact,
            Some(identity) => self.identity(scope, identity)?,
        };
        let mut keys = Vec::new();
        let mut given = 0;
        if let Some(path) = object.get("keyPath") {
            given += 1;
            keys.push(self.key_file(scope, path)?);
        }
        if let Some(paths) = object.get("keyPaths") {
            given += 1;
            for path in self.list(scope, "keyPaths", paths)? {
                keys.push(self.key_file(scope, path)?);
            }
        }
        if let Some(data) = object.get("keyData") {
            given += 1;
            keys.push(self.key_data(scope, "keyData", data)?);
        }
        if let Some(datas) = object.get("keyDatas") {
            given += 1;
            for data in self.list(scope, "keyDatas", datas)? {
                keys.push(self.key_data(scope, "keyDatas", data)?);
            }
        }
        if given != 1 {
            return Err(self.invalid(
                scope,
                "sigstoreSigned needs exactly one of keyPath, keyPaths, keyData, keyDatas",
            ));
        }
        Ok(Requirement::SigstoreSigned { keys, identity })
    }

    fn list<'v>(
        &self,
        scope: &str,
        field: &str,
        value: &'v Value,
    ) -> Result<&'v Vec<Value>, PolicyError> {
        match value.as_array() {
            Some(list) if !list.is_empty() => Ok(list),
            _ => Err(self.invalid(scope, format!("{field} is not a non-empty list"))),
        }
    }

    fn key_file(&self, scope: &str, path: &Value) -> Result<PublicKey, PolicyError> {
        let given = path
            .as_str()
            .ok_or_else(|| self.invalid(scope, "a keyPath is not a string"))?;
        let path = self.base.join(given);
        let pem = std::fs::read(&path)
            .map_err(|e| self.invalid(scope, format!("reading the key {}: {e}", path.display())))?;
        self.key(scope, format!("keyPath {}", path.display()), &pem)
    }

    fn key_data(&self, scope: &str, field: &str, data: &Value) -> Result<PublicKey, PolicyError> {
        let pem = data
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .ok_or_else(|| self.invalid(scope, format!("{field} is not base64 of a PEM key")))?;
        self.key(scope, field.to_string(), &pem)
    }

    fn key(&self, scope: &str, source: String, pem: &[u8]) -> Result<PublicKey, PolicyError> {
        PublicKey::from_pem(source, pem).map_err(|detail| self.invalid(scope, detail))
    }

    fn identity(&self, scope: &str, value: &Value) -> Result<SignedIdentity, PolicyError> {
        let object = value
            .as_object()
            .ok_or_else(|| self.invalid(scope, "signedIdentity is not an object"))?;
        let kind = object
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| self.invalid(scope, "signedIdentity has no \"type\""))?;
        let field = |name: &str| -> Result<String, PolicyError> {
            self.only_fields(scope, kind, object, &[name])?;
            object
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| self.invalid(scope, format!("{kind} needs {name:?}")))
        };
        let identity = match kind {
            "matchRepoDigestOrExact" => SignedIdentity::MatchRepoDigestOrExact,
            "matchRepository" => SignedIdentity::MatchRepository,
            "matchExact" => SignedIdentity::MatchExact,
            "exactReference" | "exactRepository" => {
                let exact = match kind {
                    "exactReference" => SignedIdentity::ExactReference(field("dockerReference")?),
                    _ => SignedIdentity::ExactRepository(field("dockerRepository")?),
                };
                return identity::check_named(&exact)
                    .map(|()| exact)
                    .map_err(|detail| self.invalid(scope, detail));
            }
            "remapIdentity" => return Err(self.unsupported(scope, "signedIdentity remapIdentity")),
            other => {
                return Err(self.invalid(scope, format!("unknown signedIdentity type {other:?}")))
            }
        };
        self.only_fields(scope, kind, object, &[])?;
        Ok(identity)
    }
}

#[cfg(test)]
mod tests;
