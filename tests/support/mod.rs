//! Shared integration-test harness: a real registry process and reproducible images.
//! Each test file includes it with `mod support;`.
#![allow(dead_code)]

pub mod auth;
pub mod fixtures;
pub mod push;
pub mod registry;
