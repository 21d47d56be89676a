//! The paths a package may name: plain and relative, so nothing lands outside the
//! prefix. Read by `metadata` (paths.json), `package` (archive entries) and `staging`.

/// A relative path without `.` and empty components; absolute paths and `..` are
/// refused (they would land outside the prefix).
pub(crate) fn normalize(raw: &str) -> Result<String, String> {
    if raw.starts_with('/') {
        return Err("an absolute path".into());
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("a path with `..`".into()),
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// Whether `path` is already what [`normalize`] makes: not empty, not absolute, no
/// empty, `.` or `..` component, no NUL.
pub(crate) fn is_clean(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && path.split('/').all(|c| !matches!(c, "" | "." | ".."))
}

#[cfg(test)]
mod tests {
    use super::{is_clean, normalize};

    #[test]
    fn only_plain_relative_paths_are_clean() {
        assert!(is_clean("bin/tool"));
        assert!(is_clean("lib/python3.11/..hidden"));
        for bad in ["", "/etc", "a//b", "a/./b", "a/../b", "..", "a/", "a\0b"] {
            assert!(!is_clean(bad), "{bad:?}");
        }
        let long = format!("{}/../../../../etc/cron.d/x", "d".repeat(120));
        assert!(!is_clean(&long));
        assert!(normalize(&long).is_err());
    }

    #[test]
    fn paths_are_normalized_and_kept_inside() {
        assert_eq!(normalize("./bin//tool").unwrap(), "bin/tool");
        assert_eq!(normalize("lib/").unwrap(), "lib");
        assert_eq!(normalize("./").unwrap(), "");
        assert!(normalize("/etc/passwd").is_err());
        assert!(normalize("lib/../../etc").is_err());
    }
}
