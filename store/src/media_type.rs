//! The manifest and index media types stowage understands: the one list the store's
//! graph walk and the registry client both read.

/// Index types: documents whose `manifests` point at other manifests.
pub const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Image manifest types: documents pointing at a config and layers.
pub const IMAGE_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// The OCI index type, the one a document with `manifests` but no `mediaType` is.
pub const OCI_INDEX: &str = INDEX_TYPES[0];
/// The OCI image manifest type, the default for a document that names none.
pub const OCI_MANIFEST: &str = IMAGE_TYPES[0];

/// Every manifest type stowage can pull, for the Accept header.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Whether this is an index type.
pub fn is_index_type(media_type: &str) -> bool {
    INDEX_TYPES.contains(&media_type)
}

/// Whether this is an image manifest type.
pub fn is_image_type(media_type: &str) -> bool {
    IMAGE_TYPES.contains(&media_type)
}

/// Whether blobs of this media type point at other blobs.
pub fn is_graph_type(media_type: &str) -> bool {
    is_index_type(media_type) || is_image_type(media_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_lists_every_graph_type() {
        let accepted: Vec<&str> = MANIFEST_ACCEPT.split(", ").collect();
        for t in INDEX_TYPES.iter().chain(&IMAGE_TYPES) {
            assert!(accepted.contains(t), "{t} missing from MANIFEST_ACCEPT");
            assert!(is_graph_type(t));
        }
        assert_eq!(accepted.len(), INDEX_TYPES.len() + IMAGE_TYPES.len());
    }
}
