//! Factored images: one layer per conda package, so images that share packages share
//! layers (ARCHITECTURE.md, `factored`).

pub mod artifact;
pub mod compose;
pub mod install;
mod layer_cache;
pub mod layer_tar;
pub mod metadata;
pub mod noarch;
pub mod package;
pub mod placeholder;
mod record;
mod staging;
