//! The peer set as it is now: the list as given, the DNS name's records (resolved
//! again every refresh interval with the system resolver), or the file's lines (read
//! again when its modification time or size changes, checked on each use). There is
//! no membership protocol: whatever DNS or the file says is the set. A node leaves
//! itself out, and skips for a while a peer that just failed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Mutex;

use super::rendezvous;
use super::spec::{parse_peers_file, peer_address, PeerSpec, PeerSpecError};
use crate::store::Digest;

/// How long a resolution of the peers' DNS name may take before the last answer
/// stands (every blob's fetch waits for it).
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// How a node uses its peers.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// How often a DNS name is resolved again.
    pub refresh: Duration,
    /// This node's own address as the peer set lists it (`host:port`), never asked.
    /// Besides it, a peer whose IP address is one of this machine's (other than
    /// loopback) is taken to be this node.
    pub self_addr: Option<String>,
    /// How long a peer that could not be reached, was too slow or served wrong bytes
    /// is skipped before it is asked again.
    pub cooldown: Duration,
    /// How long connecting to a peer may take (a peer that is gone often does not
    /// refuse: it does not answer).
    pub connect_timeout: Duration,
}

impl Default for PeerOptions {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(10),
            self_addr: None,
            cooldown: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// A node's peers: where blobs are asked for before the upstream registry. Shared by
/// every pull of a process (`PullOptions::peers`).
pub struct Peers {
    spec: PeerSpec,
    options: PeerOptions,
    self_addr: Option<String>,
    pub(super) http: reqwest::Client,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The peers as the spec lists them, sorted, this node among them if listed.
    peers: Arc<Vec<String>>,
    /// The entry of `peers` that is this node, if any.
    me: Option<String>,
    /// When a DNS name was last resolved.
    resolved_at: Option<Instant>,
    /// The peers file's modification time and size when last read.
    file_stamp: Option<(SystemTime, u64)>,
    /// Peers skipped until then.
    cooling: HashMap<String, Instant>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("spec", &self.spec)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Peers {
    /// The peer set `spec` names. Nothing is resolved or read until first use.
    pub fn new(spec: PeerSpec, options: PeerOptions) -> Result<Self, PeerSpecError> {
        let self_addr = options
            .self_addr
            .as_deref()
            .map(|a| {
                peer_address(a).map_err(|detail| PeerSpecError {
                    spec: format!("--self {a}"),
                    detail,
                })
            })
            .transpose()?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("stowage/", env!("CARGO_PKG_VERSION"), " (peer)"))
            .connect_timeout(options.connect_timeout)
            // With the low-speed limit off, a peer that stops sending must still end.
            .read_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| PeerSpecError {
                spec: format!("{spec:?}"),
                detail: format!("cannot set up the HTTP client: {e}"),
            })?;
        Ok(Self {
            spec,
            options,
            self_addr,
            http,
            state: Mutex::default(),
        })
    }

    /// The peers as the spec says now, this node left out (re-resolved or re-read
    /// first when due).
    pub async fn current(&self) -> Arc<Vec<String>> {
        let mut state = self.state.lock().await;
        match &self.spec {
            PeerSpec::List(list) => {
                if state.resolved_at.is_none() {
                    self.set(&mut state, list.clone());
                    state.resolved_at = Some(Instant::now());
                }
            }
            PeerSpec::Dns { name, port } => {
                let due = state
                    .resolved_at
                    .is_none_or(|at| at.elapsed() >= self.options.refresh);
                if due {
                    state.resolved_at = Some(Instant::now());
                    let lookup = tokio::net::lookup_host((name.as_str(), *port));
                    let answer = tokio::time::timeout(DNS_TIMEOUT, lookup)
                        .await
                        .unwrap_or_else(|_| {
                            Err(std::io::Error::other(format!(
                                "no answer within {} s",
                                DNS_TIMEOUT.as_secs()
                            )))
                        });
                    match answer {
                        Ok(found) => {
                            let found: Vec<String> = found.map(|a| a.to_string()).collect();
                            if self.set(&mut state, found) {
                                tracing::info!(name, peers = ?state.peers, "peers resolved");
                            }
                        }
                        // The last answer stands until the resolver answers again.
                        Err(e) => tracing::warn!(
                            name,
                            kept = state.peers.len(),
                            "resolving the peers' DNS name: {e}"
                        ),
                    }
                }
            }
            PeerSpec::File(path) => self.reread(&mut state, path),
        }
        match &state.me {
            None => state.peers.clone(),
            Some(me) => Arc::new(state.peers.iter().filter(|p| *p != me).cloned().collect()),
        }
    }

    /// Reads the peers file again if it changed since it was last read.
    fn reread(&self, state: &mut State, path: &Path) {
        let stamp = std::fs::metadata(path).and_then(|m| Ok((m.modified()?, m.len())));
        let stamp = match stamp {
            Ok(stamp) => stamp,
            Err(e) => {
                if state.file_stamp.take().is_some() || state.resolved_at.is_none() {
                    tracing::warn!(path = %path.display(), "reading the peers file: {e}; no peers");
                }
                state.resolved_at = Some(Instant::now());
                self.set(state, Vec::new());
                return;
            }
        };
        if state.file_stamp == Some(stamp) {
            return;
        }
        state.file_stamp = Some(stamp);
        state.resolved_at = Some(Instant::now());
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| parse_peers_file(&text));
        match parsed {
            Ok(peers) => {
                self.set(state, peers);
                tracing::info!(path = %path.display(), peers = ?state.peers, "peers read");
            }
            // A file being rewritten in place may be read half written: the last good
            // list stands, and the next change is read again.
            Err(e) => tracing::warn!(
                path = %path.display(),
                kept = state.peers.len(),
                "the peers file: {e}"
            ),
        }
    }

    /// Takes `peers` as the set, finding this node among them; whether it changed.
    fn set(&self, state: &mut State, mut peers: Vec<String>) -> bool {
        peers.sort_unstable();
        peers.dedup();
        let changed = peers != *state.peers;
        if changed {
            state.me = peers
                .iter()
                .find(|p| Some(*p) == self.self_addr.as_ref() || is_this_machine(p))
                .cloned();
            state.peers = Arc::new(peers);
        }
        changed
    }

    /// The peers to ask for `digest`: in rendezvous order, those ranked above this
    /// node (all of them when it is not in the set), leaving out those cooling down
    /// after a failure. A node ranked first owns the blob: it fetches it from upstream
    /// itself, and the peers that ask it meanwhile wait for that one fetch.
    pub async fn order(&self, digest: &Digest) -> Vec<String> {
        self.current().await;
        let state = self.state.lock().await;
        let now = Instant::now();
        rendezvous::rank(&state.peers, digest)
            .into_iter()
            .take_while(|p| Some(*p) != state.me.as_deref())
            .filter(|p| state.cooling.get(*p).is_none_or(|until| *until <= now))
            .map(str::to_string)
            .collect()
    }

    /// The peers ranked below this node for `digest` (none when it is not in the
    /// set), asked only when the registry failed.
    pub async fn order_below_self(&self, digest: &Digest) -> Vec<String> {
        self.current().await;
        let state = self.state.lock().await;
        let Some(me) = state.me.as_deref() else {
            return Vec::new();
        };
        let now = Instant::now();
        rendezvous::rank(&state.peers, digest)
            .into_iter()
            .skip_while(|p| *p != me)
            .skip(1)
            .filter(|p| state.cooling.get(*p).is_none_or(|until| *until <= now))
            .map(str::to_string)
            .collect()
    }

    /// Skips `peer` for the cooldown.
    pub(super) async fn cool(&self, peer: &str) {
        let until = Instant::now() + self.options.cooldown;
        self.state
            .lock()
            .await
            .cooling
            .insert(peer.to_string(), until);
    }
}

/// Whether `peer`'s IP address is one of this machine's, other than loopback (every
/// loopback address is this machine's, yet several nodes may listen on them: tests, a
/// fleet on one host). Binding a socket to an address works only for a local one.
fn is_this_machine(peer: &str) -> bool {
    let Ok(addr) = peer.parse::<std::net::SocketAddr>() else {
        return false;
    };
    let ip = addr.ip();
    !ip.is_loopback() && !ip.is_unspecified() && std::net::UdpSocket::bind((ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_list_leaves_this_node_out() {
        let peers = Peers::new(
            "127.0.0.3:5000,127.0.0.2:5000,127.0.0.4".parse().unwrap(),
            PeerOptions {
                self_addr: Some("127.0.0.4".into()),
                ..PeerOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            *peers.current().await,
            vec!["127.0.0.2:5000".to_string(), "127.0.0.3:5000".to_string()]
        );
    }

    #[tokio::test]
    async fn a_node_in_the_set_asks_only_the_peers_ranked_above_it() {
        let all: Vec<String> = (2..12).map(|i| format!("127.0.0.{i}:5000")).collect();
        let me = all[4].clone();
        let peers = Peers::new(
            PeerSpec::List(all.clone()),
            PeerOptions {
                self_addr: Some(me.clone()),
                ..PeerOptions::default()
            },
        )
        .unwrap();
        let (mut owned, mut asked_all) = (0, 0);
        for i in 0..200 {
            let digest = crate::store::sha256_of(format!("{i}").as_bytes());
            let ranked = rendezvous::rank(&all, &digest);
            let mine = ranked.iter().position(|p| *p == me).unwrap();
            let order = peers.order(&digest).await;
            assert_eq!(order, ranked[..mine], "{digest}");
            owned += usize::from(mine == 0);
            asked_all += usize::from(mine == all.len() - 1);
        }
        assert!(
            owned > 0 && asked_all > 0,
            "{owned} owned, {asked_all} last"
        );
    }

    #[tokio::test]
    async fn a_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers");
        std::fs::write(&path, "127.0.0.2:5000\n").unwrap();
        let peers = Peers::new(PeerSpec::File(path.clone()), PeerOptions::default()).unwrap();
        assert_eq!(*peers.current().await, vec!["127.0.0.2:5000".to_string()]);
        // Another size, so the change is seen within the same mtime tick too.
        std::fs::write(&path, "127.0.0.2:5000\n127.0.0.3:5000\n").unwrap();
        assert_eq!(peers.current().await.len(), 2);
        std::fs::remove_file(&path).unwrap();
        assert!(
            peers.current().await.is_empty(),
            "a removed file lists no peer"
        );
    }

    #[tokio::test]
    async fn a_cooling_peer_is_skipped() {
        let peers = Peers::new(
            "127.0.0.2:1,127.0.0.3:1".parse().unwrap(),
            PeerOptions::default(),
        )
        .unwrap();
        let digest = crate::store::sha256_of(b"x");
        let order = peers.order(&digest).await;
        peers.cool(&order[0]).await;
        assert_eq!(peers.order(&digest).await, vec![order[1].clone()]);
    }
}
