//! Base images the factored-image tests build on, made from this machine's own files
//! (no registry outside the machine has one): busybox alone, or busybox plus Debian's
//! Python with its minimal standard library.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use stowage_store::{Descriptor, MediaType, Store};

use super::fixtures::{put_blob, put_layer, set_ref, Compression, Entry};

/// The Python that [`python_base`] holds (Debian 12's).
pub const PYTHON: &str = "3.11";

/// A busybox image named `name` in the store at `dir`.
pub fn busybox_base(dir: &Path, name: &str) {
    image_of(dir, name, busybox_entries());
}

/// busybox plus `/usr/bin/python3.11`, the shared libraries it links and the files of
/// Debian's `libpython3.11-minimal` (the interpreter's standard library core), named
/// `name` in the store at `dir`: a base whose Python a conda environment can use.
pub fn python_base(dir: &Path, name: &str) {
    let interpreter = format!("/usr/bin/python{PYTHON}");
    let mut files: Vec<String> = vec![interpreter.clone()];
    files.extend(shared_libraries(&interpreter));
    let stdlib = format!("/usr/lib/python{PYTHON}/");
    files.extend(
        package_files(&format!("libpython{PYTHON}-minimal"))
            .into_iter()
            .filter(|f| f.starts_with(&stdlib) && !f.contains("__pycache__"))
            .filter(|f| std::fs::symlink_metadata(f).is_ok_and(|m| m.is_file())),
    );
    let mut dirs = BTreeSet::new();
    let mut entries = busybox_entries();
    for file in &files {
        let path = file.trim_start_matches('/');
        let mut parent = Path::new(path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
        // Shared libraries are reached through symlinks on the host: store their
        // contents under the name the loader asks for.
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("read {file}: {e}"));
        entries.push(Entry::file(path, data, 0o755));
    }
    entries.extend(dirs.iter().filter(|d| *d != "bin").map(|d| Entry::dir(d)));
    entries.push(Entry::symlink(
        "usr/bin/python3",
        &format!("python{PYTHON}"),
    ));
    image_of(dir, name, entries);
}

fn busybox_entries() -> Vec<Entry> {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut entries = vec![
        Entry::dir("bin"),
        Entry::file("bin/busybox", busybox, 0o755),
    ];
    for applet in ["sh", "ls", "wc", "head", "cat"] {
        entries.push(Entry::symlink(&format!("bin/{applet}"), "busybox"));
    }
    entries
}

/// The absolute paths `ldd` lists for `program`, the dynamic loader included.
fn shared_libraries(program: &str) -> Vec<String> {
    let output = Command::new("ldd").arg(program).output().expect("run ldd");
    assert!(output.status.success(), "ldd {program} failed");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(str::to_string)
        .collect()
}

/// The files a Debian package installed (`dpkg -L`).
fn package_files(package: &str) -> Vec<String> {
    let output = Command::new("dpkg")
        .args(["-L", package])
        .output()
        .expect("run dpkg");
    assert!(
        output.status.success(),
        "dpkg -L {package}: is it installed? (make setup installs it)"
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// One gzip layer of `entries`, a config that runs `/bin/sh`, and a manifest named
/// `name`.
fn image_of(dir: &Path, name: &str, entries: Vec<Entry>) {
    let store = Store::open(dir).unwrap();
    let layer = put_layer(&store, &entries, Compression::Gzip);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]},
    }))
    .unwrap();
    let config_digest = put_blob(&store, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": [layer.descriptor],
    }))
    .unwrap();
    let digest = put_blob(&store, &manifest);
    let descriptor = Descriptor::new(MediaType::ImageManifest, manifest.len() as u64, digest);
    set_ref(&store, name, &descriptor);
}
