//! `noarch: python` packages: one build for every Python, laid out at install time for
//! the environment's Python as conda does (`conda/common/path.py`,
//! `conda/gateways/disk/create.py`):
//! - `site-packages/…` goes under `lib/pythonX.Y/site-packages/…`,
//! - `python-scripts/…` goes into `bin/…`,
//! - each entry point of `info/link.json` (`name = module:func`) becomes a script
//!   `bin/NAME` that runs `<prefix>/bin/pythonX.Y` and calls `func`.
//!
//! conda also compiles `.pyc` files for such packages at install time; stowage does not
//! (it would need the environment's Python to build a layer, and Python compiles them
//! on first import where the directory is writable).

use std::fmt;
use std::str::FromStr;

use super::placeholder::MAX_SHEBANG_LENGTH;

/// The environment's Python, major and minor (`3.11`): all that decides where a
/// `noarch: python` package's files go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PythonVersion {
    pub major: u32,
    pub minor: u32,
}

impl PythonVersion {
    pub fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// The `X.Y` of a `python` package's version (`3.11.9` → 3.11), or `None` when it
    /// does not start with two numbers.
    pub fn from_package_version(version: &str) -> Option<Self> {
        let mut parts = version.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor: String = parts
            .next()?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Some(Self::new(major, minor.parse().ok()?))
    }

    /// `lib/pythonX.Y/site-packages`, relative to the prefix.
    pub fn site_packages(&self) -> String {
        format!("lib/python{self}/site-packages")
    }

    /// `bin/pythonX.Y`, relative to the prefix: the interpreter entry points run.
    pub fn interpreter(&self) -> String {
        format!("bin/python{self}")
    }
}

impl fmt::Display for PythonVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for PythonVersion {
    type Err = String;

    /// Parses `X.Y` (exactly two numbers).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a Python version like 3.11");
        let (major, minor) = s.split_once('.').ok_or_else(bad)?;
        Ok(Self::new(
            major.parse().map_err(|_| bad())?,
            minor.parse().map_err(|_| bad())?,
        ))
    }
}

/// Where a file of a `noarch: python` package goes, relative to the prefix.
pub fn target_path(source: &str, python: PythonVersion) -> String {
    if let Some(rest) = source.strip_prefix("site-packages/") {
        format!("{}/{rest}", python.site_packages())
    } else if let Some(rest) = source.strip_prefix("python-scripts/") {
        format!("bin/{rest}")
    } else {
        source.to_string()
    }
}

/// One console script of `info/link.json`: `command = module:func`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryPoint {
    pub command: String,
    pub module: String,
    pub func: String,
}

impl EntryPoint {
    /// Parses a definition as conda does (split at the last `:`, then the last `=`),
    /// refusing a command that would leave `bin/` and a module or function that is not
    /// a dotted Python name (the script embeds them as code).
    pub fn parse(definition: &str) -> Result<Self, String> {
        let (command_module, func) = definition
            .rsplit_once(':')
            .ok_or("expected `name = module:function`")?;
        let (command, module) = command_module
            .rsplit_once('=')
            .ok_or("expected `name = module:function`")?;
        let (command, module, func) = (command.trim(), module.trim(), func.trim());
        if command.is_empty() || command == "." || command == ".." || command.contains('/') {
            return Err(format!("command {command:?} is not a file name in bin/"));
        }
        if command.chars().any(char::is_control) {
            return Err(format!("command {command:?} holds control characters"));
        }
        for (what, name) in [("module", module), ("function", func)] {
            let dotted = !name.is_empty()
                && name.split('.').all(|part| {
                    !part.is_empty()
                        && !part.starts_with(|c: char| c.is_ascii_digit())
                        && part.chars().all(|c| c.is_alphanumeric() || c == '_')
                });
            if !dotted {
                return Err(format!("{what} {name:?} is not a dotted Python name"));
            }
        }
        Ok(Self {
            command: command.to_string(),
            module: module.to_string(),
            func: func.to_string(),
        })
    }

    /// Where the script goes, relative to the prefix.
    pub fn target_path(&self) -> String {
        format!("bin/{}", self.command)
    }

    /// The script, as conda writes it: a shebang for the environment's Python, then the
    /// pip-style template that imports the function and exits with what it returns.
    pub fn script(&self, prefix: &str, python: PythonVersion) -> String {
        let interpreter = format!("{prefix}/{}", python.interpreter());
        let import_name = self.func.split('.').next().unwrap_or(&self.func);
        format!(
            "{shebang}# -*- coding: utf-8 -*-\nimport re\nimport sys\n\n\
             from {module} import {import_name}\n\n\
             if __name__ == '__main__':\n    \
             sys.argv[0] = re.sub(r'(-script\\.pyw?|\\.exe)?$', '', sys.argv[0])\n    \
             sys.exit({func}())\n",
            shebang = entry_point_shebang(&interpreter),
            module = self.module,
            func = self.func,
        )
    }
}

/// conda's `generate_shebang_for_entry_point`: `#!INTERPRETER`, or, when that line is
/// too long for the kernel or the path has a space, a `/bin/sh` line that re-executes
/// the script with the interpreter (valid both as sh and as Python).
fn entry_point_shebang(interpreter: &str) -> String {
    let shebang = format!("#!{interpreter}\n");
    if shebang.len() > MAX_SHEBANG_LENGTH || interpreter.contains(' ') {
        format!("#!/bin/sh\n'''exec' \"{interpreter}\" \"$0\" \"$@\" #'''\n")
    } else {
        shebang
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PY: PythonVersion = PythonVersion {
        major: 3,
        minor: 11,
    };

    #[test]
    fn layout_follows_the_python_version() {
        assert_eq!(
            target_path("site-packages/mod/__init__.py", PY),
            "lib/python3.11/site-packages/mod/__init__.py"
        );
        assert_eq!(target_path("python-scripts/tool", PY), "bin/tool");
        assert_eq!(target_path("share/doc/x", PY), "share/doc/x");
        assert_eq!(target_path("site-packagesX/y", PY), "site-packagesX/y");
    }

    #[test]
    fn versions_parse() {
        assert_eq!("3.11".parse::<PythonVersion>(), Ok(PY));
        assert!("3".parse::<PythonVersion>().is_err());
        assert_eq!(PythonVersion::from_package_version("3.11.9"), Some(PY));
        assert_eq!(
            PythonVersion::from_package_version("3.13.0rc1"),
            Some(PythonVersion::new(3, 13))
        );
        assert_eq!(
            PythonVersion::from_package_version("3.12rc1"),
            Some(PythonVersion::new(3, 12))
        );
        assert_eq!(PythonVersion::from_package_version("three"), None);
    }

    #[test]
    fn entry_points_parse_like_conda() {
        let ep = EntryPoint::parse(" my-tool = pkg.cli:main ").unwrap();
        assert_eq!(
            (ep.command.as_str(), ep.module.as_str(), ep.func.as_str()),
            ("my-tool", "pkg.cli", "main")
        );
        assert!(EntryPoint::parse("tool = pkg").is_err());
        assert!(EntryPoint::parse("../x = pkg:main").is_err());
        assert!(EntryPoint::parse("x = pkg;import os:main").is_err());
    }

    #[test]
    fn scripts_use_the_environment_python_or_an_sh_trampoline() {
        let ep = EntryPoint::parse("tool = pkg.cli:App.run").unwrap();
        let script = ep.script("/opt/conda", PY);
        assert!(script.starts_with("#!/opt/conda/bin/python3.11\n# -*- coding: utf-8 -*-\n"));
        assert!(script.contains("\nfrom pkg.cli import App\n"));
        assert!(script.ends_with("    sys.exit(App.run())\n"));
        let long = format!("/{}", "p".repeat(120));
        let script = ep.script(&long, PY);
        assert!(script.starts_with(&format!(
            "#!/bin/sh\n'''exec' \"{long}/bin/python3.11\" \"$0\" \"$@\" #'''\n"
        )));
    }
}
