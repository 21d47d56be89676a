//! Helpers shared by the proxy's integration tests: a real registry upstream and a
//! small blocking HTTP client.

pub mod client;
pub mod registry;
