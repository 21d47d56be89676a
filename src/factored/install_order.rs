//! The order of a factored image's package layers: conda's own install order.
//!
//! Runtimes share layers by chain (podman and docker store a layer under the digest
//! of everything below it), so two images share a package layer only while their
//! layer lists agree from the bottom. conda installs level by level: first every
//! package that depends on none of the others, then every package whose dependencies
//! are all installed, and so on, each level sorted by name (conda's `toposort`).
//! That puts the low-level packages most environments share (libc shims, compression
//! and TLS libraries, python) at the bottom, where chains can agree, and a package's
//! level depends only on what lies below it, not on the image's other packages.
//!
//! Only dependencies on packages of the same image count (`__glibc` and the like are
//! virtual). As conda does: `python` never waits for `pip` (the two name each other in
//! some builds), a `noarch: python` package always comes after `python`, and a cycle
//! is broken by installing the package with the fewest dependencies left first.
//! Within a level, packages more images of a set use come first (a factor set counts
//! them; an image built alone has every count 0), so images that share only some of a
//! level's packages still share the chain up to them. Ties are broken by (name,
//! version, build), so the same package set gives the same order, and the same
//! manifest, in every store.

use std::collections::{BTreeSet, HashMap};

use super::metadata::{Noarch, PackageMetadata};

/// The indexes of `packages` in install order; `users[i]` is how many images of a set
/// use package `i` (more first within a level).
pub(crate) fn install_order(packages: &[&PackageMetadata], users: &[usize]) -> Vec<usize> {
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, package) in packages.iter().enumerate() {
        by_name.entry(package.name.as_str()).or_default().push(i);
    }
    // What each package waits for, by index.
    let mut waits: Vec<BTreeSet<usize>> = packages
        .iter()
        .enumerate()
        .map(|(i, package)| {
            let mut names: Vec<&str> = package.depends.iter().map(String::as_str).collect();
            if package.noarch == Some(Noarch::Python) {
                names.push("python");
            }
            if package.name == "python" {
                names.retain(|name| *name != "pip");
            }
            names
                .into_iter()
                .flat_map(|name| by_name.get(name).into_iter().flatten().copied())
                .filter(|&j| j != i)
                .collect()
        })
        .collect();
    let key = |i: usize| {
        let p = packages[i];
        let users = users.get(i).copied().unwrap_or(0);
        (
            std::cmp::Reverse(users),
            p.name.as_str(),
            p.version.as_str(),
            p.build.as_str(),
            i,
        )
    };
    let mut left: BTreeSet<usize> = (0..packages.len()).collect();
    let mut order = Vec::with_capacity(packages.len());
    while !left.is_empty() {
        let mut level: Vec<usize> = left
            .iter()
            .copied()
            .filter(|&i| waits[i].is_empty())
            .collect();
        if level.is_empty() {
            // A cycle: the package with the fewest dependencies left goes first.
            let first = left
                .iter()
                .copied()
                .min_by_key(|&i| (waits[i].len(), key(i)))
                .expect("left is not empty");
            level.push(first);
        }
        level.sort_by_key(|&i| key(i));
        for &i in &level {
            left.remove(&i);
        }
        for wait in &mut waits {
            for i in &level {
                wait.remove(i);
            }
        }
        order.extend(level);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;
    use std::collections::BTreeMap;

    fn package(name: &str, depends: &[&str]) -> PackageMetadata {
        PackageMetadata {
            name: name.into(),
            version: "1.0".into(),
            build: "0".into(),
            build_number: 0,
            subdir: None,
            depends: depends.iter().map(|d| d.to_string()).collect(),
            noarch: None,
            index: Map::new(),
            placeholders: BTreeMap::new(),
            paths: Vec::new(),
            paths_source: super::super::metadata::PathsSource::None,
            entry_points: Vec::new(),
        }
    }

    fn names(packages: &[PackageMetadata]) -> Vec<&str> {
        let refs: Vec<&PackageMetadata> = packages.iter().collect();
        install_order(&refs, &[])
            .into_iter()
            .map(|i| packages[i].name.as_str())
            .collect()
    }

    #[test]
    fn dependencies_come_first_and_each_level_by_name() {
        let mut packages = vec![
            package("numpy", &["python", "libblas", "__glibc"]),
            package("zlib", &[]),
            package("python", &["openssl", "zlib", "pip"]),
            package("pip", &["python"]),
            package("openssl", &["ca-certificates"]),
            package("libblas", &[]),
            package("ca-certificates", &[]),
        ];
        let mut tool = package("tool", &[]);
        tool.noarch = Some(Noarch::Python);
        packages.push(tool);
        assert_eq!(
            names(&packages),
            [
                "ca-certificates",
                "libblas",
                "zlib",
                "openssl",
                "python",
                "numpy",
                "pip",
                "tool"
            ]
        );
        // The input order changes nothing.
        packages.reverse();
        assert_eq!(
            names(&packages),
            [
                "ca-certificates",
                "libblas",
                "zlib",
                "openssl",
                "python",
                "numpy",
                "pip",
                "tool"
            ]
        );
    }

    #[test]
    fn a_cycle_is_broken_at_the_package_with_the_fewest_dependencies() {
        let packages = [
            package("a", &["b", "x"]),
            package("b", &["a"]),
            package("x", &[]),
            package("c", &["a"]),
        ];
        assert_eq!(names(&packages), ["x", "a", "b", "c"]);
    }

    #[test]
    fn within_a_level_packages_more_images_use_come_first() {
        let packages = [
            package("zlib", &[]),
            package("b1", &["zlib"]),
            package("both", &["zlib"]),
            package("all", &["zlib"]),
        ];
        let refs: Vec<&PackageMetadata> = packages.iter().collect();
        let order: Vec<&str> = install_order(&refs, &[3, 1, 2, 3])
            .into_iter()
            .map(|i| packages[i].name.as_str())
            .collect();
        assert_eq!(order, ["zlib", "all", "both", "b1"]);
    }
}
