//! Mirrors and caches: carrying images between stores and registries (export and
//! import archives, copy to another registry) and serving a store as a registry.

pub mod archive;
pub mod copy;
pub mod serve;
