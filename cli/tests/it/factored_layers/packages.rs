//! The test packages: a compiled tool with a long `_h_env` placeholder (script, config,
//! binary, symlink), a `noarch: python` package with an entry point, and an old package
//! with only `info/has_prefix` and the legacy placeholder.

use super::conda_build::{long_placeholder, Spec, LEGACY};

/// The compiled-looking file: the placeholder inside two NUL-terminated strings.
pub fn binary_with(placeholder: &str) -> Vec<u8> {
    let mut data = b"\x7fELF\x02\x01\x01\0".to_vec();
    data.extend_from_slice(format!("RPATH={placeholder}/lib\0").as_bytes());
    data.extend_from_slice(format!("{placeholder}/share/tool/data\0plain\0").as_bytes());
    data.extend_from_slice(&[1, 2, 3, 255]);
    data
}

/// What `binary_with` must become for `prefix`: same length, NUL padded.
pub fn binary_expected(placeholder: &str, prefix: &str) -> Vec<u8> {
    let pad = vec![0u8; placeholder.len() - prefix.len()];
    let mut data = b"\x7fELF\x02\x01\x01\0".to_vec();
    data.extend_from_slice(format!("RPATH={prefix}/lib").as_bytes());
    data.extend_from_slice(&pad);
    data.extend_from_slice(format!("\0{prefix}/share/tool/data").as_bytes());
    data.extend_from_slice(&pad);
    data.extend_from_slice(b"\0plain\0");
    data.extend_from_slice(&[1, 2, 3, 255]);
    data
}

/// A compiled tool built with a long `_h_env` placeholder.
pub fn tool() -> Spec {
    let p = long_placeholder();
    Spec::new("tool", "1.2.0", "h1234_0")
        .with_prefix(
            "bin/tool",
            format!("#!{p}/bin/bash\necho \"tool from {p}\"\nexec {p}/bin/helper \"$@\"\n"),
            0o775,
            &p,
            "text",
        )
        .with_prefix(
            "etc/tool.conf",
            format!("prefix={p}\ndata={p}/share/tool\n"),
            0o664,
            &p,
            "text",
        )
        .with_prefix("lib/libtool.so.1", binary_with(&p), 0o775, &p, "binary")
        .symlink("lib/libtool.so", "libtool.so.1")
        // Holds the placeholder but paths.json does not list it: left alone.
        .file("share/tool/README", format!("built in {p}\n"), 0o664)
}

/// A `noarch: python` package with a module, a python-script and an entry point.
pub fn pytool() -> Spec {
    let p = long_placeholder();
    let mut spec = Spec::new("pytool", "0.3.1", "pyhd8ed1ab_0")
        .file(
            "site-packages/pytool/__init__.py",
            "def main():\n    print('pytool runs')\n    return 0\n",
            0o664,
        )
        .file(
            "site-packages/pytool-0.3.1.dist-info/METADATA",
            "Name: pytool\n",
            0o664,
        )
        .with_prefix(
            "python-scripts/pytool-helper",
            format!("#!{p}/bin/python\nimport pytool\n"),
            0o775,
            &p,
            "text",
        );
    spec.subdir = "noarch".into();
    spec.noarch = Some("python");
    spec.entry_points = vec!["pytool = pytool:main".into()];
    spec
}

/// An old package: no paths.json, `has_prefix` with the legacy placeholder.
pub fn oldtool() -> Spec {
    let mut spec = Spec::new("oldtool", "0.9", "0")
        .file(
            "bin/oldtool",
            format!("#!{LEGACY}/bin/sh\necho {LEGACY}\n"),
            0o755,
        )
        .file("lib/libold.so", binary_with(LEGACY), 0o755);
    spec.paths_json = false;
    spec.has_prefix = Some(format!("bin/oldtool\n{LEGACY} binary lib/libold.so\n"));
    spec
}
