//! The public keys a `sigstoreSigned` requirement names: one ECDSA P-256 key in PEM
//! per `keyPath` or `keyData`, as `cosign generate-key-pair` writes `cosign.pub`.

use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey;

/// The PEM line that opens each block.
const PEM_BEGIN: &str = "-----BEGIN ";

/// A public key from the policy, with where it came from (for messages).
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// `keyPath /etc/pki/cosign.pub`, or `keyData`.
    pub source: String,
    pub key: VerifyingKey,
}

impl PublicKey {
    /// The one key in `pem`; `source` names it in messages. Several blocks are refused
    /// rather than one picked: containers/image would trust the first alone, and a
    /// site that wrote two keys in a file means both.
    pub fn from_pem(source: String, pem: &[u8]) -> Result<Self, String> {
        let text =
            std::str::from_utf8(pem).map_err(|_| format!("{source}: not a PEM public key"))?;
        let blocks = text.matches(PEM_BEGIN).count();
        if blocks > 1 {
            return Err(format!(
                "{source}: holds {blocks} PEM blocks, and a key file holds one key (list \
                 several keys with keyPaths or keyDatas)"
            ));
        }
        let key = VerifyingKey::from_public_key_pem(text.trim()).map_err(|e| {
            format!(
                "{source}: not an ECDSA P-256 public key in PEM (a \"PUBLIC KEY\" block, as \
                 `cosign generate-key-pair` writes cosign.pub; other key types are not \
                 supported): {e}"
            )
        })?;
        Ok(Self { source, key })
    }
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    use super::*;

    fn pem(seed: u8) -> String {
        SigningKey::from_slice(&[seed; 32])
            .unwrap()
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    #[test]
    fn one_key_is_read_and_a_file_of_several_is_refused_naming_them() {
        let one = PublicKey::from_pem("keyPath k.pub".into(), pem(7).as_bytes()).unwrap();
        assert_eq!(one.source, "keyPath k.pub");
        let two = format!("{}{}", pem(7), pem(8));
        let e = PublicKey::from_pem("keyPath k.pub".into(), two.as_bytes()).unwrap_err();
        assert!(e.contains("keyPath k.pub: holds 2 PEM blocks"), "{e}");
        let e = PublicKey::from_pem("keyData".into(), b"not a key").unwrap_err();
        assert!(e.contains("not an ECDSA P-256 public key"), "{e}");
    }
}
