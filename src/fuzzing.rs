//! Entry points for the `cargo fuzz` targets in `fuzz/`, and for nothing else: thin
//! wrappers that hand untrusted bytes to the real parsers where those are private or
//! take a file path. No parsing happens here. Not a stable API.
//!
//! Parsers the targets reach through the public API (`Reference::from_str`,
//! `oci::manifest::RawManifest::parse`) have no wrapper.

use std::path::Path;

use crate::factored::metadata::{InfoFiles, PackageMetadata};
use crate::factored::package::PackageError;
use crate::lock::lockfile::{self, Lockfile, LockfileError};
use crate::lock::pin::Pin;
use crate::registry::{self, Challenge};

/// The path errors name: the text did not come from a file.
const FUZZ_PATH: &str = "fuzz.lock";

/// [`lockfile::read_pins`] on `text`: `stowage.lock` or `bv.lock`.
pub fn read_pins(text: &str) -> Result<Vec<Pin>, LockfileError> {
    lockfile::pins_from_text(Path::new(FUZZ_PATH), text)
}

/// [`lockfile::read_lockfile`] on `text`.
pub fn read_lockfile(text: &str) -> Result<Lockfile, LockfileError> {
    lockfile::read(Path::new(FUZZ_PATH), text)
}

/// Reads a 401's `WWW-Authenticate` header as the registry client does and runs a
/// bearer realm through the check made before a token is asked of it (for an HTTPS
/// and a plain-HTTP registry; what it decides is not the point here).
pub fn www_authenticate(header: &str) -> Result<(), String> {
    if let Challenge::Bearer {
        realm: Some(realm), ..
    } = registry::read_challenge(header)?
    {
        for registry_url in ["https://registry.example", "http://127.0.0.1:5000"] {
            registry::foreign_plain_realm(registry_url, &realm);
        }
    }
    Ok(())
}

/// A conda package's metadata from its `info/` files, given as (path in the
/// archive, contents) the way the archive reader gathers them: paths other than the
/// ones it keeps are skipped, a later duplicate replaces an earlier one.
pub fn conda_metadata(files: &[(&str, &[u8])]) -> Result<PackageMetadata, PackageError> {
    let mut info = InfoFiles::default();
    for (path, data) in files {
        if let Some(name) = InfoFiles::wanted(path) {
            info.insert(name, data.to_vec());
        }
    }
    info.parse("fuzz.conda")
}
