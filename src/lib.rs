//! stowage: a daemonless OCI registry puller and content-addressed layer store.
//!
//! The library holds everything; the `stowage` binary (crate `stowage-cli`) is a thin
//! layer over it. The store itself is the `stowage-store` crate, re-exported here as
//! [`store`]. Data flows one way: [`lock`], [`pull`] (with the embedding API, `pull::pinned`),
//! [`factored`], [`mirror`] and [`runtime`] call [`registry`] and [`store`]; [`oci`]
//! holds what they all share. `ARCHITECTURE.md` is the map.

pub use stowage_store as store;

pub mod factored;
#[doc(hidden)]
pub mod fuzzing;
pub mod lock;
pub mod mirror;
pub mod oci;
pub mod pull;
pub mod registry;
pub mod runtime;
