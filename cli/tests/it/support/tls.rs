//! Certificates and basic auth for the real registry in tests: a certificate authority
//! and the certificates it issues (made with `rcgen`), the TLS files and `tls:` block
//! of an HTTPS registry, and an htpasswd file with its `auth: htpasswd` block.

use std::fs;
use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use tempfile::TempDir;

use super::fixtures::run_or_explain;

/// A certificate authority made for one test: its certificate and signing key.
pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate issued by a [`Ca`], with its key.
pub struct Issued {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key: KeyPair,
}

impl Ca {
    /// A fresh self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A TLS server certificate for `sans` (IP addresses become IP SANs).
    pub fn server_cert(&self, sans: &[&str]) -> Issued {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("server cert params");
        params.distinguished_name.push(
            DnType::CommonName,
            sans.first().copied().unwrap_or("server"),
        );
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A certificate for a key that signs tokens (no SAN; CN `name`).
    pub fn signing_cert(&self, name: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("signer params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign a leaf");
        Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key,
        }
    }
}

/// TLS material for a registry: a CA, a server certificate and key, and a directory
/// in skopeo's `--dest-cert-dir` layout (`ca.crt`).
pub struct TlsFiles {
    dir: TempDir,
}

impl TlsFiles {
    /// A new CA and a server certificate for `sans`, written to a tempdir.
    pub fn new(sans: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("stowage-tls-")
            .tempdir()
            .expect("tempdir");
        let ca = Ca::new("stowage test registry CA");
        let server = ca.server_cert(sans);
        fs::write(dir.path().join("ca.pem"), &ca.cert_pem).expect("write ca.pem");
        fs::write(dir.path().join("server.pem"), &server.cert_pem).expect("write server.pem");
        fs::write(dir.path().join("server.key"), server.key.serialize_pem())
            .expect("write server.key");
        let certs = dir.path().join("certs.d");
        fs::create_dir(&certs).expect("mkdir certs.d");
        fs::write(certs.join("ca.crt"), &ca.cert_pem).expect("write ca.crt");
        Self { dir }
    }

    /// The CA certificate (PEM), for `--ca-cert`.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A directory holding `ca.crt`, for skopeo's `--dest-cert-dir`.
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    /// The `tls:` block for the registry's `http:` section.
    pub fn http_yaml(&self) -> String {
        format!(
            "tls:\n  certificate: {}\n  key: {}\n",
            self.dir.path().join("server.pem").display(),
            self.dir.path().join("server.key").display()
        )
    }
}

/// An htpasswd file with one bcrypt entry, made by apache2-utils' `htpasswd -Bbn`
/// (the only hash `docker-registry` accepts), and the `auth: htpasswd` block using it.
pub struct Htpasswd {
    dir: TempDir,
}

impl Htpasswd {
    pub fn new(user: &str, password: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("stowage-htpasswd-")
            .tempdir()
            .expect("tempdir");
        let line = run_or_explain("htpasswd", &["-Bbn", user, password], String::new);
        fs::write(dir.path().join("htpasswd"), line.trim_end()).expect("write htpasswd");
        Self { dir }
    }

    /// The top-level `auth:` section.
    pub fn auth_yaml(&self) -> String {
        format!(
            "auth:\n  htpasswd:\n    realm: stowage-test\n    path: {}\n",
            self.dir.path().join("htpasswd").display()
        )
    }
}
