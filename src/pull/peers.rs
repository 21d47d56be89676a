//! Peers: other stowage nodes (each a `stowage serve`, usually `--upstream`) a node
//! asks for blobs before the upstream registry, so a fleet fetches each blob from
//! upstream about once. The peer set comes from DNS, a list or a file (`spec`, read
//! by `set`); each blob's owner, and the order to ask the others in, is rendezvous
//! hashing of its digest (`rendezvous`); the fetch verifies every hop (`fetch`), and
//! `sources` puts the peers and the registry in turn.
//! Manifests still come from the upstream registry: only blobs are asked of peers.

pub(crate) mod fetch;
pub mod rendezvous;
mod set;
pub(crate) mod sources;
mod spec;

pub use fetch::{asked_by_a_peer, peer_blob_size, PEER_REQUEST_HEADER, PEER_SIZE_HEADER};
pub use set::{PeerOptions, Peers};
pub use spec::{PeerSpec, PeerSpecError, DEFAULT_PEER_PORT};
