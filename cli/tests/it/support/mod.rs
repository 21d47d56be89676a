//! Shared integration-test harness: a real registry process and reproducible images.
//! Every test module reaches it as `crate::support`.

pub mod archive_check;
pub mod auth_client;
pub mod base_images;
pub mod containerd;
pub mod cosign;
pub mod fixtures;
pub mod fleet;
pub mod hostile;
pub mod http_head;
pub mod jwt;
pub mod pulling;
pub mod push;
pub mod registry;
pub mod serving;
pub mod tls;
pub mod tmpfs;
pub mod token_issuer;
pub mod workspace;
