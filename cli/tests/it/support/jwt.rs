//! The key that signs the test token issuer's JWTs: made under a CA of its own, named
//! in each token's header by `x5c` or `kid` as `docker-registry` 2.8 accepts, with the
//! `rootcertbundle` the registry needs to trust it.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PublicKeyData};
use serde_json::Value;

use super::tls::Ca;

/// How a token names the key that signed it; `docker-registry` 2.8 accepts either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRef {
    /// `x5c`: the signing certificate (issued by a CA in `rootcertbundle`) rides in
    /// the header and is verified against the bundle.
    X5c,
    /// `kid`: the libtrust fingerprint of a key whose certificate is in the bundle.
    Kid,
}

/// A token-signing key and the JWT header that names it.
pub struct Signer {
    key: EncodingKey,
    header: Header,
    /// The PEM the registry's `rootcertbundle` holds to verify these tokens: the CA
    /// for `x5c`, the signing certificate itself for `kid`.
    pub bundle: String,
}

impl Signer {
    /// Makes a CA and a token-signing key; the header names the key as `key_ref` says.
    pub fn new(key_ref: KeyRef) -> Self {
        let ca = Ca::new("stowage test token CA");
        let signing = ca.signing_cert("stowage test token signer");
        let mut header = Header::new(Algorithm::ES256);
        let bundle = match key_ref {
            KeyRef::X5c => {
                header.x5c = Some(vec![BASE64.encode(&signing.cert_der)]);
                ca.cert_pem.clone()
            }
            KeyRef::Kid => {
                header.kid = Some(libtrust_key_id(&signing.key));
                signing.cert_pem.clone()
            }
        };
        Self {
            key: EncodingKey::from_ec_der(&signing.key.serialize_der()),
            header,
            bundle,
        }
    }

    /// `claims` as an ES256 JWT under this key.
    pub fn encode(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&self.header, claims, &self.key).expect("sign a token")
    }
}

/// libtrust's key ID, which `docker-registry` 2.8 matches a token's `kid` against:
/// SHA-256 of the DER SubjectPublicKeyInfo, cut to 240 bits, base32 (RFC 4648, no
/// padding) in twelve colon-separated groups of four.
pub fn libtrust_key_id(key: &KeyPair) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.subject_public_key_info());
    let encoded = base32(&digest[..30]);
    let groups: Vec<&str> = (0..encoded.len())
        .step_by(4)
        .map(|i| &encoded[i..i + 4])
        .collect();
    groups.join(":")
}

/// RFC 4648 base32 without padding.
fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}
