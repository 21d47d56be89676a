//! What `--peers` names: a DNS name whose A/AAAA records are the peers (a Kubernetes
//! headless Service), a comma-separated list of `host:port`, or a file with one peer
//! a line. Parsing only; resolving and re-reading are the peer set's (`set.rs`).

use std::path::PathBuf;
use std::str::FromStr;

/// The port a peer listens on when its address names none: `stowage serve`'s default.
pub const DEFAULT_PEER_PORT: u16 = 5000;

/// Where the peer set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSpec {
    /// `dns:NAME[:PORT]`, or a bare host name: every A/AAAA record of `name` is a
    /// peer on `port`; resolved again every refresh interval.
    Dns { name: String, port: u16 },
    /// `host:port,host:port,...` (or one IP address): these peers, as written.
    List(Vec<String>),
    /// `file:PATH`: one `host[:port]` a line (blank lines and `#` comments skipped),
    /// read again when the file changes.
    File(PathBuf),
}

/// A `--peers` value (or a line of a peers file) that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("peers {spec:?}: {detail}")]
pub struct PeerSpecError {
    pub spec: String,
    pub detail: String,
}

impl FromStr for PeerSpec {
    type Err = PeerSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let error = |detail: String| PeerSpecError {
            spec: spec.to_string(),
            detail,
        };
        let text = spec.trim();
        if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                return Err(error("expected file:PATH, found no path".into()));
            }
            return Ok(PeerSpec::File(PathBuf::from(path)));
        }
        if let Some(name) = text.strip_prefix("dns:") {
            let (host, port) = split_host_port(name).map_err(error)?;
            return Ok(PeerSpec::Dns { name: host, port });
        }
        if text.contains(',') {
            let peers = text
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(peer_address)
                .collect::<Result<Vec<_>, _>>()
                .map_err(error)?;
            if peers.is_empty() {
                return Err(error(
                    "expected host:port,host:port, found no address".into(),
                ));
            }
            return Ok(PeerSpec::List(peers));
        }
        let (host, port) = split_host_port(text).map_err(error)?;
        if is_ip_literal(&host) {
            Ok(PeerSpec::List(vec![join(&host, port)]))
        } else {
            Ok(PeerSpec::Dns { name: host, port })
        }
    }
}

/// `host[:port]` as a peer address, `host:port` with the default port filled in
/// (IPv6 in brackets: `[::1]:5000`).
pub fn peer_address(text: &str) -> Result<String, String> {
    let (host, port) = split_host_port(text.trim())?;
    Ok(join(&host, port))
}

fn join(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn is_ip_literal(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
}

/// `name`, `name:port`, `[v6]`, `[v6]:port` into the host (without brackets) and port.
fn split_host_port(text: &str) -> Result<(String, u16), String> {
    if text.is_empty() {
        return Err("expected host[:port], found nothing".into());
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("expected [IPv6]:port, found {text:?}"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "expected an IPv6 address in brackets, found {host:?}"
            ));
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("expected :port after ], found {after:?}")),
            },
        }
    } else {
        match text.matches(':').count() {
            0 => (text, None),
            1 => {
                let (host, port) = text.split_once(':').expect("one colon");
                (host, Some(port))
            }
            _ => {
                return Err(format!(
                    "expected host[:port], found {text:?} (write an IPv6 address as [ADDR]:PORT)"
                ))
            }
        }
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':');
    if host.is_empty() || !host.chars().all(valid) {
        return Err(format!(
            "expected a host name or IP address, found {host:?}"
        ));
    }
    let port = match port {
        None => DEFAULT_PEER_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("expected a port 1-65535, found {port:?}"))?,
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// The peers a peers file lists, one `host[:port]` a line.
pub fn parse_peers_file(text: &str) -> Result<Vec<String>, String> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i, line.split('#').next().unwrap_or("").trim()))
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| peer_address(line).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> PeerSpec {
        spec.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_three_forms() {
        assert_eq!(
            parse("dns:stowage.kube-system.svc.cluster.local:5001"),
            PeerSpec::Dns {
                name: "stowage.kube-system.svc.cluster.local".into(),
                port: 5001
            }
        );
        assert_eq!(
            parse("stowage-peers"),
            PeerSpec::Dns {
                name: "stowage-peers".into(),
                port: DEFAULT_PEER_PORT
            }
        );
        assert_eq!(
            parse("127.0.0.2:5000, 127.0.0.3:5001,[::1]:7,10.0.0.1"),
            PeerSpec::List(vec![
                "127.0.0.2:5000".into(),
                "127.0.0.3:5001".into(),
                "[::1]:7".into(),
                "10.0.0.1:5000".into()
            ])
        );
        assert_eq!(
            parse("10.1.2.3:80"),
            PeerSpec::List(vec!["10.1.2.3:80".into()])
        );
        assert_eq!(
            parse("file:/etc/peers"),
            PeerSpec::File("/etc/peers".into())
        );
    }

    #[test]
    fn what_is_refused_says_what_was_expected() {
        for (bad, says) in [
            ("", "found nothing"),
            ("file:", "no path"),
            ("dns:", "found nothing"),
            ("a:b:c", "[ADDR]:PORT"),
            ("host:0", "port 1-65535"),
            ("host:99999", "port 1-65535"),
            ("[nope]:1", "IPv6"),
            ("ho st:1", "host name"),
            (",,", "no address"),
        ] {
            let error = bad.parse::<PeerSpec>().unwrap_err().to_string();
            assert!(error.contains(says), "{bad:?}: {error}");
        }
    }

    #[test]
    fn a_peers_file_skips_blanks_and_comments() {
        let peers = parse_peers_file("# the fleet\n127.0.0.2:5000\n\n  127.0.0.3  # b\n").unwrap();
        assert_eq!(peers, vec!["127.0.0.2:5000", "127.0.0.3:5000"]);
        let error = parse_peers_file("ok:1\nbad:port\n").unwrap_err();
        assert!(error.starts_with("line 2:"), "{error}");
    }
}
