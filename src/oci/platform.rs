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
