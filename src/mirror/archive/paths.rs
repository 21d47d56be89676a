//! Paths inside a layout: which files an archive entry is, and the refusal of paths
//! that would leave the layout's root.

use crate::oci::layout::{INDEX_JSON, OCI_LAYOUT};
use crate::store::{parse_digest, Digest};

use super::ArchiveError;

/// What a path inside a layout is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutPath {
    OciLayout,
    Index,
    Blob(Digest),
    /// Directories, and files a layout reader ignores.
    Other,
}

/// Normalises an archive entry's raw path (`./` and empty components dropped) and
/// refuses one that is absolute or has a `..` component.
pub fn normalise(raw: &[u8]) -> Result<String, ArchiveError> {
    let shown = || String::from_utf8_lossy(raw).into_owned();
    if raw.starts_with(b"/") {
        return Err(ArchiveError::UnsafePath {
            path: shown(),
            why: "it is absolute",
        });
    }
    let mut parts = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(ArchiveError::UnsafePath {
                    path: shown(),
                    why: "it has a `..` component",
                })
            }
            part => parts.push(String::from_utf8_lossy(part).into_owned()),
        }
    }
    Ok(parts.join("/"))
}

/// Which layout file a normalised path names.
pub fn classify(path: &str) -> LayoutPath {
    match path {
        OCI_LAYOUT => return LayoutPath::OciLayout,
        INDEX_JSON => return LayoutPath::Index,
        _ => {}
    }
    let parts: Vec<&str> = path.split('/').collect();
    match parts[..] {
        ["blobs", algorithm, hex] => match parse_digest(&format!("{algorithm}:{hex}")) {
            Ok(digest) => LayoutPath::Blob(digest),
            Err(e) => {
                tracing::warn!(path, "ignoring a file under blobs/ that is not a blob: {e}");
                LayoutPath::Other
            }
        },
        _ => LayoutPath::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_paths_are_refused_and_others_normalised() {
        for bad in [&b"../evil"[..], b"/etc/passwd", b"blobs/../../x", b"./.."] {
            assert!(normalise(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(normalise(b"./blobs//sha256/ab").unwrap(), "blobs/sha256/ab");
        assert_eq!(normalise(b"./").unwrap(), "");
        let hex = "a".repeat(64);
        assert_eq!(
            classify(&format!("blobs/sha256/{hex}")),
            LayoutPath::Blob(parse_digest(&format!("sha256:{hex}")).unwrap())
        );
        assert_eq!(classify("blobs/sha256/nothex"), LayoutPath::Other);
        assert_eq!(classify("index.json"), LayoutPath::Index);
    }
}
