//! The policy file's parsing: where keys come from, what is refused when read.

use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePublicKey, LineEnding};

use super::*;

fn pem() -> String {
    SigningKey::from_slice(&[7u8; 32])
        .unwrap()
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

fn parse_in(dir: &Path, json: &str) -> Result<PolicyFile, PolicyError> {
    PolicyFile::parse(&dir.join("policy.json"), json.as_bytes())
}

fn parse(json: &str) -> Result<PolicyFile, PolicyError> {
    parse_in(Path::new("/nonexistent"), json)
}

#[test]
fn keys_come_from_a_relative_path_or_from_base64_data() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/cosign.pub"), pem()).unwrap();
    let data = base64::engine::general_purpose::STANDARD.encode(pem());
    let policy = parse_in(
        dir.path(),
        &format!(
            r#"{{"default": [{{"type": "sigstoreSigned", "keyPath": "keys/cosign.pub"}}],
                "transports": {{"docker": {{"r.example/a": [{{"type": "sigstoreSigned",
                    "keyData": "{data}", "signedIdentity": {{"type": "matchRepository"}}}}]}}}}}}"#
        ),
    )
    .unwrap();
    let Requirement::SigstoreSigned { keys, identity } = &policy.default[0] else {
        panic!("{:?}", policy.default);
    };
    assert_eq!(*identity, SignedIdentity::MatchRepoDigestOrExact);
    assert_eq!(
        keys[0].source,
        format!("keyPath {}", dir.path().join("keys/cosign.pub").display())
    );
    let Requirement::SigstoreSigned { keys, identity } = &policy.docker["r.example/a"][0] else {
        panic!("{:?}", policy.docker);
    };
    assert_eq!(*identity, SignedIdentity::MatchRepository);
    assert_eq!(keys[0].source, "keyData");
}

#[test]
fn what_cannot_be_checked_is_refused_when_the_file_is_read() {
    for (requirement, named) in [
        (
            r#"{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}"#,
            "signedBy",
        ),
        (r#"{"type": "sigstoreSigned", "fulcio": {}}"#, "fulcio"),
        (
            r#"{"type": "sigstoreSigned", "keyPath": "/k", "signedIdentity": {"type": "remapIdentity", "prefix": "a", "signedPrefix": "b"}}"#,
            "remapIdentity",
        ),
    ] {
        let json = format!(
            r#"{{"default": [{{"type": "reject"}}], "transports": {{"docker": {{"r.example": [{requirement}]}}}}}}"#
        );
        let e = parse(&json).unwrap_err().to_string();
        assert!(
            e.contains("not supported") && e.contains(named) && e.contains("r.example"),
            "{e}"
        );
    }
}

#[test]
fn malformed_policies_are_refused_with_the_scope_named() {
    let cases = [
        (r#"{"transports": {}}"#, "no \"default\""),
        (r#"{"default": []}"#, "an empty list"),
        (
            r#"{"default": [{"type": "reject"}], "transports": {"docker": {"r.example": []}}}"#,
            "transports.docker.\"r.example\": an empty list",
        ),
        (
            r#"{"default": [{"type": "acceptSome"}]}"#,
            "unknown requirement type",
        ),
        (
            r#"{"default": [{"type": "sigstoreSigned"}]}"#,
            "exactly one of keyPath",
        ),
        (
            r#"{"default": [{"type": "sigstoreSigned", "keyPath": "/no/such/key.pub"}]}"#,
            "/no/such/key.pub",
        ),
        (
            r#"{"default": [{"type": "sigstoreSigned", "keyData": "bm90IGEga2V5"}]}"#,
            "not an ECDSA P-256 public key",
        ),
        (
            r#"{"default": [{"type": "reject", "keyPath": "/k"}]}"#,
            "unknown field",
        ),
        (
            r#"{"default": [{"type": "reject"}], "transports": {"docker": {"*.example.com:5000": [{"type": "reject"}]}}}"#,
            "without a port",
        ),
        (
            r#"{"default": [{"type": "sigstoreSigned", "keyData": "", "signedIdentity": {"type": "exactReference", "dockerReference": "r.example/a"}}]}"#,
            "exactReference r.example/a names neither a tag nor a digest",
        ),
    ];
    for (json, expected) in cases {
        let e = parse(json).unwrap_err().to_string();
        assert!(e.contains(expected), "{json}: {e}");
    }
}

#[test]
fn other_transports_are_ignored_unread() {
    let policy = parse(
        r#"{"default": [{"type": "insecureAcceptAnything"}],
            "transports": {"docker-daemon": {"": [{"type": "insecureAcceptAnything"}]},
                           "atomic": {"r.example": [{"type": "signedBy"}]}}}"#,
    )
    .unwrap();
    assert!(policy.docker.is_empty());
}
