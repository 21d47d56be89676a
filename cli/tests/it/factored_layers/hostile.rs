//! Hostile conda packages: whatever a package says about its paths and its name, no
//! layer entry lands outside the prefix, and the refusal names the package and the
//! path. (A GNU long name, over 100 bytes, once slipped `..` past the tar crate.)

use super::conda_build::{Format, Spec};
use super::harness::{read_layer, Env};
use super::packages::tool;
use stowage::{CondaPackage, LayerCompression};

/// A path of at least 100 bytes that climbs out of the prefix to `/etc/cron.d`.
fn long_escape() -> String {
    let path = format!("{}/../../../../../etc/cron.d/owned", "d".repeat(100));
    assert!(path.len() > 100);
    path
}

/// Opening the package (its metadata) or installing it (its files) must fail.
fn refused(env: &Env, spec: &Spec, format: Format) -> String {
    let path = spec.write(&env.root.join("pkgs"), format);
    let package = match CondaPackage::open(&path) {
        Ok(package) => package,
        Err(e) => return e.to_string(),
    };
    let result = env.install(&package, "/opt/conda", None, LayerCompression::Zstd);
    match result {
        Ok(layer) => {
            let paths: Vec<String> = read_layer(&env.store, &layer)
                .into_iter()
                .map(|e| e.path)
                .collect();
            panic!("{} was accepted; its layer holds {paths:?}", spec.label())
        }
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_paths_json_directory_with_dotdot_is_refused_at_any_length() {
    let env = Env::new();
    for path in [long_escape(), "../../etc/cron.d".to_string()] {
        for format in [Format::Conda, Format::TarBz2] {
            let mut spec = tool();
            spec.directories.push(path.clone());
            let err = refused(&env, &spec, format);
            assert!(
                err.contains("tool-1.2.0-h1234_0")
                    && err.contains("paths.json")
                    && err.contains("`..`"),
                "{path}: {err}"
            );
            assert!(!err.contains("out of order"), "{err}");
        }
    }
}

#[test]
fn an_archive_entry_with_dotdot_or_an_absolute_path_is_refused() {
    let env = Env::new();
    for path in [long_escape(), "../escape".into(), "/etc/passwd".into()] {
        for format in [Format::Conda, Format::TarBz2] {
            let spec = tool().raw(&path, "owned\n");
            let err = refused(&env, &spec, format);
            assert!(
                err.contains("tool-1.2.0-h1234_0")
                    && (err.contains("`..`") || err.contains("absolute")),
                "{path}: {err}"
            );
        }
    }
}

#[test]
fn a_name_version_or_build_conda_would_refuse_is_refused() {
    let env = Env::new();
    let cases = [
        ("tool/../../../etc", "1.0", "0", "name"),
        ("..", "1.0", "0", "name"),
        ("tool", "1.0/../../x", "0", "version"),
        ("tool", "1.0", "h1\n", "build"),
        ("tool", "1 0", "0", "version"),
    ];
    for (name, version, build, field) in cases {
        let mut spec = tool();
        (spec.name, spec.version, spec.build) = (name.into(), version.into(), build.into());
        // The file name is the package's own choice, not its metadata's.
        let safe = env.root.join(format!("pkgs/case-{field}.tar.bz2"));
        spec.write_to(&safe, Format::TarBz2);
        let err = CondaPackage::open(&safe)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("{name} {version} {build} was accepted"));
        assert!(
            err.contains("index.json") && err.contains(field),
            "{name:?} {version:?} {build:?}: {err}"
        );
    }
    // What conda-forge really uses still passes.
    let mut spec = tool();
    (spec.name, spec.version, spec.build) = (
        "_libgcc_mutex".into(),
        "1!2.0.post1+local".into(),
        "conda_forge_h1.2_0".into(),
    );
    let package = env.package(&spec, Format::Conda);
    env.install(&package, "/opt/conda", None, LayerCompression::Zstd)
        .unwrap();
}

#[test]
fn device_files_and_other_entry_types_are_refused() {
    let env = Env::new();
    for kind in [
        tar::EntryType::Char,
        tar::EntryType::Block,
        tar::EntryType::Fifo,
    ] {
        let spec = tool().raw_entry("dev/owned", "", kind);
        let err = refused(&env, &spec, Format::TarBz2);
        assert!(
            err.contains("dev/owned") && err.contains("unsupported entry type"),
            "{kind:?}: {err}"
        );
    }
}

#[test]
fn a_file_larger_than_paths_json_says_is_refused_before_it_is_spooled() {
    let env = Env::new();
    let mut spec = tool().file("share/bomb", vec![0u8; 8 << 20], 0o644);
    spec.stated_sizes.push(("share/bomb".into(), 1024));
    for format in [Format::Conda, Format::TarBz2] {
        let err = refused(&env, &spec, format);
        assert!(
            err.contains("share/bomb")
                && err.contains("8388608 bytes")
                && err.contains("says 1024"),
            "{err}"
        );
    }
}

#[test]
fn a_bzip2_bomb_is_refused_once_it_passes_the_room_the_store_has() {
    let env = Env::new();
    // 64 MiB of zeros, truthfully declared, compress to a few hundred bytes.
    let spec = tool().file("share/zeros", vec![0u8; 64 << 20], 0o644);
    let path = spec.write(&env.root.join("pkgs"), Format::TarBz2);
    assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
    let small = crate::support::tmpfs::Tmpfs::mount(&env.root.join("small"), 16);
    let store = stowage::store::Store::open(env.root.join("small/store")).unwrap();
    let package = CondaPackage::open(&path).unwrap();
    let options = stowage::LayerOptions {
        prefix: stowage::Prefix::new("/opt/conda").unwrap(),
        python: None,
        compression: LayerCompression::Zstd,
    };
    let err = stowage::install_package(&store, &package, &options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("share/zeros") && err.contains("free"), "{err}");
    // Opened for factoring, the archive is decompressed once into the store: the
    // same bomb is refused there, and nothing is left behind.
    let err = CondaPackage::open_in(&store, &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("free where the store is"), "{err}");
    let left: Vec<_> = std::fs::read_dir(store.root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    drop(small);
}
