//! One conda package → one deterministic OCI layer, installed as conda installs it:
//! prefix placeholders rewritten (text, binary with NUL padding, long shebangs),
//! `noarch: python` laid out for the environment's Python with entry points, the
//! layer's digest a function of (package sha256, prefix, Python for noarch,
//! compression) only. Packages are real `.conda` and `.tar.bz2` files built here.

pub mod conda_build;
mod harness;
mod hostile;
pub mod packages;

use conda_build::{long_placeholder, Format, LEGACY};
use harness::{get, read_layer, text, Env};
use packages::{binary_expected, binary_with, oldtool, pytool, tool};
use stowage::store::sha256_of;
use stowage::{CondaPackage, InstallError, LayerCompression, PythonVersion};

const PY311: Option<PythonVersion> = Some(PythonVersion {
    major: 3,
    minor: 11,
});

#[test]
fn both_formats_install_under_the_prefix_with_placeholders_rewritten() {
    let env = Env::new();
    let p = long_placeholder();
    for format in [Format::Conda, Format::TarBz2] {
        let package = env.package(&tool(), format);
        let layer = env
            .install(&package, "/opt/conda", None, LayerCompression::Zstd)
            .unwrap();
        let entries = read_layer(&env.store, &layer);
        for dir in [
            "opt",
            "opt/conda",
            "opt/conda/bin",
            "opt/conda/lib",
            "opt/conda/share/tool",
        ] {
            let entry = get(&entries, dir);
            assert_eq!(
                (entry.kind, entry.mode),
                (tar::EntryType::Directory, 0o755),
                "{dir}"
            );
        }
        let script = get(&entries, "opt/conda/bin/tool");
        assert_eq!(script.mode, 0o755);
        assert_eq!(text(script), "#!/opt/conda/bin/bash\necho \"tool from /opt/conda\"\nexec /opt/conda/bin/helper \"$@\"\n");
        let conf = get(&entries, "opt/conda/etc/tool.conf");
        assert_eq!(
            (conf.mode, text(conf)),
            (
                0o644,
                "prefix=/opt/conda\ndata=/opt/conda/share/tool\n".to_string()
            )
        );
        let lib = get(&entries, "opt/conda/lib/libtool.so.1");
        assert_eq!(lib.data.len(), binary_with(&p).len());
        assert_eq!(lib.data, binary_expected(&p, "/opt/conda"));
        assert_eq!(lib.mode, 0o755);
        let link = get(&entries, "opt/conda/lib/libtool.so");
        assert_eq!(
            (link.kind, link.link.as_deref()),
            (tar::EntryType::Symlink, Some("libtool.so.1"))
        );
        assert_eq!(
            text(get(&entries, "opt/conda/share/tool/README")),
            format!("built in {p}\n")
        );
        // A .conda installs its pkg-* part only, a .tar.bz2 its whole archive.
        let has_info = entries.iter().any(|e| e.path.starts_with("opt/conda/info"));
        assert_eq!(has_info, format == Format::TarBz2, "{format:?}");
        if format == Format::TarBz2 {
            assert!(get(&entries, "opt/conda/info/index.json")
                .data
                .starts_with(b"{"));
        }
        assert!(entries
            .iter()
            .all(|e| e.path == "opt" || e.path.starts_with("opt/conda")));

        let a = &layer.annotations;
        assert_eq!(a["org.conda.package.name"], "tool");
        assert_eq!(a["org.conda.package.version"], "1.2.0");
        assert_eq!(a["org.conda.package.build"], "h1234_0");
        assert_eq!(a["org.conda.package.sha256"], package.sha256().digest());
        assert_eq!(a["org.conda.layer.prefix"], "/opt/conda");
        assert!(!a.contains_key("org.conda.layer.python"));
        let descriptor = layer.descriptor();
        assert_eq!(descriptor.digest(), &layer.digest);
        assert_eq!(
            descriptor.annotations().as_ref().unwrap()["org.conda.package.name"],
            "tool"
        );
        assert_eq!(
            layer.media_type.to_string(),
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );

        assert_eq!(layer.record_path(), "conda-meta/tool-1.2.0-h1234_0.json");
        let record = &layer.record;
        assert_eq!(
            (record["name"].as_str(), record["build"].as_str()),
            (Some("tool"), Some("h1234_0"))
        );
        let extension = if format == Format::Conda {
            ".conda"
        } else {
            ".tar.bz2"
        };
        assert_eq!(record["fn"], format!("tool-1.2.0-h1234_0{extension}"));
        assert_eq!(record["sha256"], package.sha256().digest());
        let files: Vec<&str> = record["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert_eq!(
            files,
            [
                "bin/tool",
                "etc/tool.conf",
                "lib/libtool.so",
                "lib/libtool.so.1",
                "share/tool/README"
            ]
        );
        let conf_data = &record["paths_data"]["paths"][1];
        assert_eq!(conf_data["prefix_placeholder"], p.as_str());
        assert_eq!(
            conf_data["sha256_in_prefix"],
            sha256_of(&conf.data).digest()
        );
        let json: serde_json::Value = serde_json::from_slice(&layer.record_json()).unwrap();
        assert_eq!(&json, &serde_json::Value::Object(record.clone()));
    }
}

#[test]
fn a_shebang_longer_than_127_becomes_usr_bin_env() {
    let env = Env::new();
    let prefix = format!("/{}", "long-env-prefix/".repeat(9).trim_end_matches('/'));
    assert!(prefix.len() > 127 && prefix.len() < long_placeholder().len());
    let layer = env
        .install(
            &env.package(&tool(), Format::Conda),
            &prefix,
            None,
            LayerCompression::Zstd,
        )
        .unwrap();
    let entries = read_layer(&env.store, &layer);
    let root = &prefix[1..];
    let script = text(get(&entries, &format!("{root}/bin/tool")));
    assert_eq!(
        script,
        format!(
            "#!/usr/bin/env bash\necho \"tool from {prefix}\"\nexec {prefix}/bin/helper \"$@\"\n"
        )
    );
    // Short enough prefixes keep the full interpreter path (checked in the test above);
    // the binary still keeps its length with the longer prefix.
    let lib = get(&entries, &format!("{root}/lib/libtool.so.1"));
    assert_eq!(lib.data, binary_expected(&long_placeholder(), &prefix));
}

#[test]
fn noarch_python_is_laid_out_for_the_environment_python() {
    let env = Env::new();
    for format in [Format::Conda, Format::TarBz2] {
        let package = env.package(&pytool(), format);
        let layer = env
            .install(&package, "/opt/conda", PY311, LayerCompression::Zstd)
            .unwrap();
        let entries = read_layer(&env.store, &layer);
        let module = get(
            &entries,
            "opt/conda/lib/python3.11/site-packages/pytool/__init__.py",
        );
        assert_eq!(
            (module.mode, text(module).starts_with("def main():")),
            (0o644, true)
        );
        get(
            &entries,
            "opt/conda/lib/python3.11/site-packages/pytool-0.3.1.dist-info/METADATA",
        );
        assert!(!entries
            .iter()
            .any(|e| e.path.contains("site-packages")
                && !e.path.starts_with("opt/conda/lib/python3.11")));
        assert!(!entries.iter().any(|e| e.path.contains("python-scripts")));
        let helper = get(&entries, "opt/conda/bin/pytool-helper");
        assert_eq!(
            (helper.mode, text(helper)),
            (
                0o755,
                "#!/opt/conda/bin/python\nimport pytool\n".to_string()
            )
        );
        let entry_point = get(&entries, "opt/conda/bin/pytool");
        assert_eq!(entry_point.mode, 0o755);
        assert_eq!(
            text(entry_point),
            "#!/opt/conda/bin/python3.11\n# -*- coding: utf-8 -*-\nimport re\nimport sys\n\nfrom pytool import main\n\n\
             if __name__ == '__main__':\n    sys.argv[0] = re.sub(r'(-script\\.pyw?|\\.exe)?$', '', sys.argv[0])\n    \
             sys.exit(main())\n"
        );
        assert_eq!(layer.annotations["org.conda.layer.python"], "3.11");
        let files = layer.record["files"].as_array().unwrap();
        assert!(files.iter().any(|f| f == "bin/pytool"), "{files:?}");
        assert!(files
            .iter()
            .any(|f| f == "lib/python3.11/site-packages/pytool/__init__.py"));
    }
    let package = env.package(&pytool(), Format::Conda);
    let err = env
        .install(&package, "/opt/conda", None, LayerCompression::Zstd)
        .unwrap_err();
    assert!(matches!(err, InstallError::PythonRequired { .. }), "{err}");
    assert!(
        err.to_string().contains("pytool-0.3.1-pyhd8ed1ab_0"),
        "{err}"
    );
}

#[test]
fn the_digest_is_a_function_of_sha256_prefix_python_and_compression() {
    let (one, two) = (Env::new(), Env::new());
    let zstd = LayerCompression::Zstd;
    let tool_a = one.package(&tool(), Format::Conda);
    let first = one.install(&tool_a, "/opt/conda", None, zstd).unwrap();
    assert!(!first.already_stored);
    // The same file under another name, another time stamp, another store.
    let copy = two.root.join("pkgs/renamed.conda");
    std::fs::copy(tool_a.path(), &copy).unwrap();
    let old = std::fs::File::options().write(true).open(&copy).unwrap();
    old.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(86_400))
        .unwrap();
    let tool_b = CondaPackage::open(&copy).unwrap();
    let second = two.install(&tool_b, "/opt/conda", None, zstd).unwrap();
    assert_eq!(
        (&second.digest, &second.diff_id),
        (&first.digest, &first.diff_id)
    );
    assert!(
        one.install(&tool_a, "/opt/conda", None, zstd)
            .unwrap()
            .already_stored
    );
    // Python does not matter to a package that is not noarch: python.
    let py312 = Some(PythonVersion::new(3, 12));
    assert_eq!(
        one.install(&tool_a, "/opt/conda", py312, zstd)
            .unwrap()
            .digest,
        first.digest
    );
    assert_eq!(
        one.install(&tool_a, "/opt/conda", PY311, zstd).unwrap().key,
        first.key
    );
    // Each input changes it.
    assert_ne!(
        one.install(&tool_a, "/opt/env", None, zstd).unwrap().digest,
        first.digest
    );
    let gzip = one
        .install(&tool_a, "/opt/conda", None, LayerCompression::Gzip)
        .unwrap();
    assert_ne!(gzip.digest, first.digest);
    assert_eq!(
        gzip.diff_id, first.diff_id,
        "the same tar, compressed differently"
    );
    assert_eq!(
        gzip.media_type.to_string(),
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    read_layer(&one.store, &gzip);
    let gzip_again = two.install(&tool_b, "/opt/conda", None, LayerCompression::Gzip);
    assert_eq!(gzip_again.unwrap().digest, gzip.digest);
    // The tar itself is pinned: a change here changes every package layer's digest,
    // so layers no longer match those built by earlier stowage versions.
    assert_eq!(
        first.diff_id.to_string(),
        "sha256:a86b3b8f4643d12f516e221cafaa95b17128d07b664ff61ceba5a31fc9edff0d"
    );
    // Another package: a changed file changes the layer. A rebuild whose files are the
    // same (only info/ differs, which a .conda layer leaves out) shares the blob.
    let mut changed = tool();
    changed.version = "1.2.1".into();
    changed = changed.file("share/tool/NEWS", "1.2.1\n", 0o644);
    assert_ne!(
        one.install(
            &one.package(&changed, Format::Conda),
            "/opt/conda",
            None,
            zstd
        )
        .unwrap()
        .digest,
        first.digest
    );
    let mut rebuilt = tool();
    rebuilt.build = "h1234_1".into();
    let rebuilt = one.package(&rebuilt, Format::Conda);
    assert_ne!(rebuilt.sha256(), tool_a.sha256());
    assert_eq!(
        one.install(&rebuilt, "/opt/conda", None, zstd)
            .unwrap()
            .digest,
        first.digest
    );

    let py = one.package(&pytool(), Format::Conda);
    let py11 = one.install(&py, "/opt/conda", PY311, zstd).unwrap();
    assert_eq!(
        two.install(
            &two.package(&pytool(), Format::Conda),
            "/opt/conda",
            PY311,
            zstd
        )
        .unwrap()
        .digest,
        py11.digest
    );
    assert_ne!(
        one.install(&py, "/opt/conda", py312, zstd).unwrap().digest,
        py11.digest
    );
}

#[test]
fn a_prefix_longer_than_a_binary_placeholder_is_an_error_naming_the_file() {
    let env = Env::new();
    let prefix = format!("/{}", "x".repeat(299));
    let err = env
        .install(
            &env.package(&tool(), Format::TarBz2),
            &prefix,
            None,
            LayerCompression::Zstd,
        )
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, InstallError::PrefixTooLong { .. }),
        "{message}"
    );
    for part in [
        "tool-1.2.0-h1234_0",
        "lib/libtool.so.1",
        "(300 bytes)",
        "(255 bytes)",
    ] {
        assert!(message.contains(part), "{part} in {message}");
    }
    // Text files take any length; an old binary's 32-byte placeholder takes 32 at most.
    let old = env.package(&oldtool(), Format::Conda);
    let fits = format!("/{}", "y".repeat(31));
    env.install(&old, &fits, None, LayerCompression::Zstd)
        .unwrap();
    let err = env
        .install(&old, &format!("{fits}z"), None, LayerCompression::Zstd)
        .unwrap_err();
    assert!(
        err.to_string().contains("lib/libold.so") && err.to_string().contains("(32 bytes)"),
        "{err}"
    );
}

#[test]
fn has_prefix_is_read_only_when_paths_json_is_absent() {
    let env = Env::new();
    for format in [Format::Conda, Format::TarBz2] {
        let layer = env
            .install(
                &env.package(&oldtool(), format),
                "/opt/conda",
                None,
                LayerCompression::Zstd,
            )
            .unwrap();
        let entries = read_layer(&env.store, &layer);
        assert_eq!(
            text(get(&entries, "opt/conda/bin/oldtool")),
            "#!/opt/conda/bin/sh\necho /opt/conda\n"
        );
        assert_eq!(
            get(&entries, "opt/conda/lib/libold.so").data,
            binary_expected(LEGACY, "/opt/conda")
        );
    }
    // A stale has_prefix beside paths.json is ignored: paths.json marks nothing here.
    let mut both = oldtool();
    both.name = "both".into();
    both.paths_json = true;
    let layer = env
        .install(
            &env.package(&both, Format::Conda),
            "/opt/conda",
            None,
            LayerCompression::Zstd,
        )
        .unwrap();
    let entries = read_layer(&env.store, &layer);
    assert_eq!(
        text(get(&entries, "opt/conda/bin/oldtool")),
        format!("#!{LEGACY}/bin/sh\necho {LEGACY}\n")
    );
    assert_eq!(
        get(&entries, "opt/conda/lib/libold.so").data,
        binary_with(LEGACY)
    );
}

#[test]
fn a_package_missing_a_listed_file_or_not_a_package_is_refused() {
    let env = Env::new();
    let junk = env.root.join("pkgs/junk.conda");
    std::fs::write(&junk, b"not a package").unwrap();
    let err = CondaPackage::open(&junk).unwrap_err();
    assert!(
        err.to_string().contains("junk.conda") && err.to_string().contains("not a conda package"),
        "{err}"
    );

    let mut broken = tool();
    broken.missing = vec!["etc/tool.conf".into()];
    let package = env.package(&broken, Format::TarBz2);
    let err = env
        .install(&package, "/opt/conda", None, LayerCompression::Zstd)
        .unwrap_err();
    assert!(
        matches!(err, InstallError::MissingFile { ref file, .. } if file == "etc/tool.conf"),
        "{err}"
    );
    assert!(err.to_string().contains("tool-1.2.0-h1234_0"), "{err}");
}

#[test]
fn a_built_layer_is_remembered_until_its_blob_is_gone() {
    let env = Env::new();
    let zstd = LayerCompression::Zstd;
    let package = env.package(&tool(), Format::Conda);
    let first = env.install(&package, "/opt/conda", None, zstd).unwrap();
    // With the package file gone only the cache can answer: nothing is read again.
    let saved = std::fs::read(package.path()).unwrap();
    std::fs::remove_file(package.path()).unwrap();
    let cached = env.install(&package, "/opt/conda", None, zstd).unwrap();
    assert!(cached.already_stored);
    assert_eq!(
        (&cached.digest, &cached.diff_id, cached.size, &cached.label),
        (&first.digest, &first.diff_id, first.size, &first.label)
    );
    assert_eq!(cached.annotations, first.annotations);
    assert_eq!(cached.record_json(), first.record_json());
    // Another prefix or compression is another layer: not in the cache, so the
    // missing file is named.
    for (prefix, compression) in [("/opt/other", zstd), ("/opt/conda", LayerCompression::Gzip)] {
        let err = env
            .install(&package, prefix, None, compression)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&package.path().display().to_string()), "{err}");
    }
    // And so is another Python, for a noarch: python package.
    let py = env.package(&pytool(), Format::Conda);
    env.install(&py, "/opt/conda", PY311, zstd).unwrap();
    std::fs::remove_file(py.path()).unwrap();
    assert!(env.install(&py, "/opt/conda", PY311, zstd).is_ok());
    let py312 = Some(PythonVersion::new(3, 12));
    assert!(env.install(&py, "/opt/conda", py312, zstd).is_err());

    // A blob gc removed is built again, the same.
    std::fs::write(package.path(), &saved).unwrap();
    std::fs::remove_file(env.store.blob_path(&first.digest)).unwrap();
    let rebuilt = env.install(&package, "/opt/conda", None, zstd).unwrap();
    assert!(!rebuilt.already_stored);
    assert_eq!(rebuilt.digest, first.digest);
    // A damaged cache entry is only a miss.
    let cache = env.root.join("store/stowage/layers");
    for entry in std::fs::read_dir(&cache).unwrap() {
        std::fs::write(entry.unwrap().path(), b"{not json").unwrap();
    }
    let again = env.install(&package, "/opt/conda", None, zstd).unwrap();
    assert_eq!(again.digest, first.digest);
    read_layer(&env.store, &again);
}
