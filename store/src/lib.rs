//! The real file store for rmmap servers, and the settings of a server that
//! exports a directory.
//!
//! [`FsStore`] implements the core's [`Store`](rmmap_core::store::Store)
//! over the files beneath an export root: positioned IO (never whole files
//! in memory), `fsync` for `sync`, and every path resolved beneath the root
//! with cap-std so that nothing outside it can be read or written.
//! [`ServerConfig`] is what both the Tokio and the mio adapters need to start
//! a server over it, and [`DiskPool`] the threads both use to run the
//! server's store requests off their event loops.

mod buffers;
mod config;
mod fs;
mod pool;
mod positioned;

pub use config::ServerConfig;
pub use fs::{FsStore, RootError};
pub use pool::{CACHED_READ_MAX, DiskPool, StoreResult};

#[cfg(test)]
mod tests;
