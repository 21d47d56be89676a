//! Lockfiles and what is done with them: `stowage.lock` and `bv.lock` read into pins
//! (`lockfile`, `bvlock`), references resolved and pinned (`resolve`, the `lock`
//! command), the store made to hold every pin (`sync`), and the store checked against
//! the pins with no network (`verify`, `verify --lock`).

mod bvlock;
pub mod lockfile;
pub mod pin;
pub mod resolve;
pub mod sync;
pub mod verify;
