//! rmmap-core: the sans-IO heart of rmmap.
#![forbid(unsafe_code)]

pub mod protocol;
pub mod time;

pub use time::Instant;
