//! Digests: parsing, incremental hashing, and hashing files from disk.
//!
//! `sha2` is used for every algorithm; it picks the CPU's SHA instructions at run time.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::Digest as _;

use crate::error::{IoContext, StoreError};

/// Size of the buffer used when hashing from disk.
pub(crate) const READ_CHUNK: usize = 1 << 20;

/// Parses `algorithm:hex`, checking the algorithm is one the store can compute.
pub fn parse_digest(input: &str) -> Result<Digest, StoreError> {
    let digest = Digest::from_str(input).map_err(|e| StoreError::InvalidDigest {
        input: input.to_string(),
        reason: e.to_string(),
    })?;
    Hasher::new(&digest)?;
    Ok(digest)
}

/// An incremental hash of the algorithm a digest names.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A fresh hasher for the algorithm of `digest`.
    pub fn new(digest: &Digest) -> Result<Self, StoreError> {
        Self::for_algorithm(digest.algorithm())
            .ok_or_else(|| StoreError::UnsupportedAlgorithm(digest.to_string()))
    }

    /// A fresh hasher for `algorithm`, or `None` when the store cannot compute it.
    pub fn for_algorithm(algorithm: &DigestAlgorithm) -> Option<Self> {
        match algorithm {
            DigestAlgorithm::Sha256 => Some(Self::Sha256(sha2::Sha256::new())),
            DigestAlgorithm::Sha384 => Some(Self::Sha384(sha2::Sha384::new())),
            DigestAlgorithm::Sha512 => Some(Self::Sha512(sha2::Sha512::new())),
            _ => None,
        }
    }

    /// A sha256 hasher, the default for content stowage writes itself.
    pub fn sha256() -> Self {
        Self::Sha256(sha2::Sha256::new())
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha384(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything hashed so far.
    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Self::Sha256(h) => ("sha256", format!("{:x}", h.finalize())),
            Self::Sha384(h) => ("sha384", format!("{:x}", h.finalize())),
            Self::Sha512(h) => ("sha512", format!("{:x}", h.finalize())),
        };
        Digest::from_str(&format!("{algorithm}:{hex}")).expect("a computed digest is valid")
    }
}

/// The sha256 digest of a byte slice.
pub fn sha256_of(data: &[u8]) -> Digest {
    let mut hasher = Hasher::sha256();
    hasher.update(data);
    hasher.finish()
}

/// Hashes a whole file with the algorithm of `like`, returning the digest and the size.
pub fn hash_file(path: &Path, like: &Digest) -> Result<(Digest, u64), StoreError> {
    let mut hasher = Hasher::new(like)?;
    let mut file = File::open(path).at(path)?;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hasher.finish(), size))
}
