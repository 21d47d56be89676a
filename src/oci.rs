//! What images are, read from text or from the store: references (`alpine` is
//! `docker.io/library/alpine:latest`), platforms and picking one out of an index, a
//! stored image's manifest and run configuration, and layer content (diff_ids). No
//! network here.

pub mod annotation;
pub mod assemble;
pub mod inspect;
pub mod layers;
pub mod layout;
pub mod manifest;
pub mod platform;
pub mod reference;
pub mod referrer;
pub mod tar_entry;
