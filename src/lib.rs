//! stowage: a daemonless OCI registry puller and content-addressed layer store.
//!
//! The library holds everything; the `stowage` binary is a thin layer over it. The
//! store itself is the `stowage-store` crate, re-exported here as [`store`].

pub use stowage_store as store;

mod bvlock;
pub mod expect;
pub mod factored;
#[doc(hidden)]
pub mod fuzzing;
pub mod inspect;
pub mod layers;
pub mod lockfile;
pub mod lockverify;
pub mod mirror;
pub mod pin;
pub mod platform;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod runtime;
pub mod sync;
pub mod tagcache;
pub mod verified;
