//! The hostile-registry table: one lie per case, each with the words the error must
//! hold. The same small image underlies every case; each case bends one answer.

use serde_json::{json, Value};

use crate::support::fixtures::sha256_digest;
use crate::support::hostile::{Body, Reply};

pub const LAYER: &[u8] = b"a layer of bytes, not even a tar: a pull checks digests, not content";

/// The honest image: its manifest, config and layer, with their digests.
pub struct Image {
    pub manifest: Value,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layer_digest: String,
}

impl Image {
    pub fn new() -> Self {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let config_digest = sha256_digest(&config).to_string();
        let layer_digest = sha256_digest(LAYER).to_string();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest, "size": LAYER.len()}],
        });
        Self {
            manifest,
            config,
            config_digest,
            layer_digest,
        }
    }
}

fn bytes(status: u16, body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        status,
        headers: vec![],
        body: Body::Bytes(body.into()),
    }
}

fn manifest_reply(body: impl Into<Vec<u8>>, media_type: &str) -> Reply {
    bytes(200, body).with_header("Content-Type", media_type)
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

type ManifestLie = Box<dyn Fn(&Image) -> Reply + Send + Sync>;
type LayerLie = Box<dyn Fn(&Image, &str) -> Reply + Send + Sync>;

/// What a case changes: the manifest answer, the layer answer (given the request
/// path), or the answer to everything (an auth challenge).
pub enum Lie {
    Manifest(ManifestLie),
    Layer(LayerLie),
    Challenge(&'static str),
}

pub struct Case {
    pub name: &'static str,
    pub lie: Lie,
    /// Every one of these must be in the error.
    pub says: &'static [&'static str],
}

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "a manifest shorter than its Content-Length",
            lie: Lie::Manifest(Box::new(|image| {
                let body = serde_json::to_vec(&image.manifest).unwrap();
                let declared = body.len() + 100;
                manifest_reply(body, OCI_MANIFEST)
                    .with_header("Content-Length", &declared.to_string())
            })),
            says: &["the manifest arrived slower than the low-speed limit"],
        },
        Case {
            name: "a manifest over 4 MiB",
            lie: Lie::Manifest(Box::new(|_| {
                let mut big = br#"{"schemaVersion":2,"pad":""#.to_vec();
                big.resize(5 << 20, b'x');
                big.extend_from_slice(br#""}"#);
                manifest_reply(big, OCI_MANIFEST)
            })),
            says: &["the manifest is larger than the 4194304-byte limit"],
        },
        Case {
            name: "a manifest that is not JSON",
            lie: Lie::Manifest(Box::new(|_| {
                manifest_reply("{\"schemaVersion\": 2, ", OCI_MANIFEST)
            })),
            says: &["malformed manifest"],
        },
        Case {
            // (A Content-Type alone does not decide: the body's mediaType is read when
            // the header names no manifest type, as registries serving text/plain need.)
            name: "a manifest of an unknown media type",
            lie: Lie::Manifest(Box::new(|image| {
                let mut manifest = image.manifest.clone();
                manifest["mediaType"] = json!("application/x-whatever");
                manifest_reply(
                    serde_json::to_vec(&manifest).unwrap(),
                    "application/x-whatever",
                )
            })),
            says: &["unsupported media type", "application/x-whatever"],
        },
        Case {
            name: "a 404 with an endless error body",
            lie: Lie::Manifest(Box::new(|_| Reply {
                status: 404,
                headers: vec![],
                body: Body::Endless {
                    prefix: br#"{"errors":[{"code":""#.to_vec(),
                    filler: b'x',
                },
            })),
            says: &["HTTP 404"],
        },
        Case {
            name: "a layer longer than its descriptor",
            lie: Lie::Layer(Box::new(|_, _| bytes(200, [LAYER, b"and more"].concat()))),
            says: &["sent more"],
        },
        Case {
            name: "a layer shorter than its descriptor, every time",
            lie: Lie::Layer(Box::new(|_, _| bytes(200, &LAYER[..20]))),
            says: &["without progress"],
        },
        Case {
            name: "a layer whose bytes are not its digest",
            lie: Lie::Layer(Box::new(|_, _| {
                let mut wrong = LAYER.to_vec();
                wrong[3] ^= 1;
                bytes(200, wrong)
            })),
            says: &["expected", "got sha256:"],
        },
        Case {
            name: "a redirect loop",
            lie: Lie::Layer(Box::new(|_, path| {
                bytes(307, "").with_header("Location", path)
            })),
            says: &["redirect"],
        },
        Case {
            name: "a malformed WWW-Authenticate",
            lie: Lie::Challenge("Bearer realm=\"unterminated"),
            says: &["WWW-Authenticate"],
        },
        Case {
            name: "a bearer challenge without a realm",
            lie: Lie::Challenge("Bearer service=\"x\""),
            says: &["without a realm"],
        },
        Case {
            name: "an unknown auth scheme",
            lie: Lie::Challenge("Negotiate"),
            says: &["unsupported auth scheme", "Negotiate"],
        },
    ]
}
