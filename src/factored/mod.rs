//! Factored images: one layer per conda package, so images that share packages share
//! layers (DESIGN.md, "Factored images").

pub mod assemble;
pub mod ensure;
