//! Platforms (`os/arch[/variant]`) and picking one manifest out of an index.

use std::fmt;
use std::str::FromStr;

/// The platform an index entry must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on, in OCI's names.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7".to_string())),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        Self {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant,
        }
    }

    /// Whether an index entry's platform is this one. No variant asked means any.
    pub fn matches(&self, candidate: &oci_spec::image::Platform) -> bool {
        candidate.os().to_string() == self.os
            && candidate.architecture().to_string() == self.architecture
            && match &self.variant {
                Some(v) => candidate.variant().as_deref() == Some(v.as_str()),
                None => true,
            }
    }

    /// `os/arch[/variant]` of an index entry's platform.
    pub fn describe(candidate: &oci_spec::image::Platform) -> String {
        let mut text = format!("{}/{}", candidate.os(), candidate.architecture());
        if let Some(variant) = candidate.variant() {
            text.push('/');
            text.push_str(variant);
        }
        text
    }
}

/// Why a string is not a platform.
#[derive(Debug, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch or os/arch/variant, e.g. linux/amd64")]
pub struct PlatformError(String);

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) || !(2..=3).contains(&parts.len()) {
            return Err(PlatformError(s.to_string()));
        }
        Ok(Self {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Platform;

    fn entry(json: &str) -> oci_spec::image::Platform {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn platforms_parse_print_and_match_index_entries() {
        let arm: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(arm.to_string(), "linux/arm/v7");
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", ""] {
            assert!(bad.parse::<Platform>().is_err(), "{bad:?}");
        }
        let amd64: Platform = "linux/amd64".parse().unwrap();
        let plain = entry(r#"{"os":"linux","architecture":"amd64"}"#);
        let v3 = entry(r#"{"os":"linux","architecture":"amd64","variant":"v3"}"#);
        // No variant asked: any variant matches; a variant asked must be there.
        assert!(amd64.matches(&plain) && amd64.matches(&v3));
        assert!(!arm.matches(&entry(
            r#"{"os":"linux","architecture":"arm","variant":"v6"}"#
        )));
        assert!(!amd64.matches(&entry(r#"{"os":"windows","architecture":"amd64"}"#)));
        assert_eq!(Platform::describe(&v3), "linux/amd64/v3");
    }
}
