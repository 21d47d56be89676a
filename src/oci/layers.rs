//! Layer content: decompressing a stored layer (gzip, zstd or plain tar) to compute
//! its diff_id, the sha256 of the uncompressed tar that an image config lists.

use std::io::{self, Read};

use crate::store::{Descriptor, Digest, Hasher, Store, StoreError};

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a layer media type names, or `None` for a type that is not a
    /// tar layer stowage can read.
    pub fn of(media_type: &str) -> Option<Self> {
        if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
            Some(Self::Gzip)
        } else if media_type.ends_with("+zstd") || media_type.ends_with(".tar.zstd") {
            Some(Self::Zstd)
        } else if media_type.ends_with(".tar") || media_type.ends_with("diff.tar") {
            Some(Self::None)
        } else {
            None
        }
    }

    /// Wraps `compressed` in the matching decoder.
    pub fn decoder<'a>(self, compressed: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Self::None => Box::new(compressed),
            Self::Gzip => Box::new(flate2::read::MultiGzDecoder::new(compressed)),
            Self::Zstd => Box::new(zstd::stream::read::Decoder::new(compressed)?),
        })
    }
}

/// Why a diff_id could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer {digest}: media type {media_type} is not a tar layer stowage can decompress")]
    Unsupported { digest: Digest, media_type: String },
    #[error("layer {digest}: {source}")]
    Read {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The sha256 of a stored layer's uncompressed content. The compressed bytes are
/// checked against the layer's digest on the way (a corrupt blob is an error).
/// Memory stays flat: the layer is streamed through a 1 MiB buffer.
pub fn diff_id(store: &Store, layer: &Descriptor) -> Result<Digest, LayerError> {
    let media_type = layer.media_type().to_string();
    let compression = Compression::of(&media_type).ok_or_else(|| LayerError::Unsupported {
        digest: layer.digest().clone(),
        media_type: media_type.clone(),
    })?;
    let read_error = |source| LayerError::Read {
        digest: layer.digest().clone(),
        source,
    };
    let blob = store.open_blob(layer.digest())?;
    let mut decoder = compression.decoder(blob).map_err(read_error)?;
    let mut hasher = Hasher::sha256();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = decoder.read(&mut buf).map_err(read_error)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    // Every decoder reads its input to the end (gzip and zstd take further members
    // and frames), so the blob reader has checked the compressed digest by now.
    Ok(hasher.finish())
}
