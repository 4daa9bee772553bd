//! The settings of a server that exports a directory.

use std::path::PathBuf;
use std::time::Duration;

use crate::fs::{FsStore, RootError};

/// A server exporting the directory `root`: where the files are, plus the
/// core's settings (page size, lease, read-only, limits, access list).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The export root. Every path a client names is resolved beneath it.
    pub root: PathBuf,
    /// Everything the core decides with. `core.read_only` also makes the
    /// store refuse every write.
    pub core: rmmap_core::server::ServerConfig,
}

impl ServerConfig {
    /// Exports `root` with the core's default settings.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ServerConfig {
            root: root.into(),
            core: rmmap_core::server::ServerConfig::default(),
        }
    }

    /// Refuses every write and every read-write mapping.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.core.read_only = read_only;
        self
    }

    /// Sets the page size (a power of two from 512 to 1 MiB), and lowers
    /// the pages per request if a full request would no longer fit in a
    /// frame.
    pub fn page_size(mut self, page_size: u32) -> Self {
        self.core.page_size = page_size;
        let room = (self.core.max_frame as u64).saturating_sub(4096) / (page_size as u64 + 16);
        let fit = u32::try_from(room).unwrap_or(u32::MAX).max(1);
        self.core.max_pages_per_request = self.core.max_pages_per_request.min(fit);
        self
    }

    /// Sets the lease length.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.core.lease = lease;
        self
    }

    /// Sets how long after starting the server grants no write ownership.
    /// `None` (the default): what the export's run state asks for (nothing
    /// for a directory no server exported, or after a clean shutdown whose
    /// clients all confirmed; the longest lease an earlier run could have
    /// granted after a crash). Anything else overrides it: zero is only safe
    /// when no earlier server can have clients that still trust their
    /// leases.
    pub fn restart_grace(mut self, grace: Option<Duration>) -> Self {
        self.core.restart_grace = grace;
        self
    }

    /// Opens the store this configuration describes.
    pub fn open_store(&self) -> Result<FsStore, RootError> {
        FsStore::open(&self.root, self.core.read_only)
    }
}
