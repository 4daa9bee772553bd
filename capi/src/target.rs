//! What a C mapping is underneath: a mapping of the Rust client, read and
//! written through the client, or (Linux) a memory mapping, read and
//! written by copying through its memory (`MemoryMapping::read`/`write`,
//! which fail with an error where a load would raise SIGBUS). Both C APIs
//! use it.

use std::ops::Range;

use rmmap_tokio::{Access, AtomicOp, ClusterClient as Client, MapOptions, Mapping, OpError};

use crate::error::Failure;

/// A mapped range, either kind.
pub(crate) struct Target {
    kind: Kind,
    writable: bool,
}

enum Kind {
    Bytes(Mapping),
    #[cfg(target_os = "linux")]
    Memory(rmmap_tokio::MemoryMapping),
}

impl Target {
    /// Maps `range` of `path`: into memory with `memory`, else as a
    /// mapping read and written through the client.
    pub(crate) async fn map(
        client: &Client,
        path: &str,
        range: Range<u64>,
        opts: MapOptions,
        memory: bool,
    ) -> Result<Target, Failure> {
        let writable = opts.access == Access::ReadWrite;
        let kind = if memory {
            #[cfg(target_os = "linux")]
            {
                // C programs of mapped files expect SIGBUS from an access
                // that cannot be served (fmmap.h says so).
                let m = client.map_memory_with(path, range, opts).await?;
                m.set_fault_mode(rmmap_tokio::FaultMode::Signal);
                Kind::Memory(m)
            }
            #[cfg(not(target_os = "linux"))]
            {
                return Err(Failure::new(
                    crate::error::rmmap_error::RMMAP_NO_MEMORY_MAPPINGS,
                    "memory mappings need Linux (userfaultfd)",
                ));
            }
        } else {
            Kind::Bytes(client.map_with(path, range, opts).await?)
        };
        Ok(Target { kind, writable })
    }

    /// The mapping's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        match &self.kind {
            Kind::Bytes(m) => m.len(),
            #[cfg(target_os = "linux")]
            Kind::Memory(m) => m.len() as u64,
        }
    }

    /// The file's length when it was mapped.
    pub(crate) fn file_len(&self) -> u64 {
        match &self.kind {
            Kind::Bytes(m) => m.file_len(),
            #[cfg(target_os = "linux")]
            Kind::Memory(m) => m.file_len(),
        }
    }

    /// Whether writes are allowed.
    pub(crate) fn writable(&self) -> bool {
        self.writable
    }

    /// The first byte of a memory mapping; `None` for the other kind.
    pub(crate) fn memory(&self) -> Option<*mut u8> {
        match &self.kind {
            Kind::Bytes(_) => None,
            #[cfg(target_os = "linux")]
            Kind::Memory(m) => Some(m.as_ptr().cast_mut()),
        }
    }

    /// Fills `buf` with the bytes at `offset`.
    pub(crate) async fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), OpError> {
        match &self.kind {
            Kind::Bytes(m) => m.read(offset, buf).await,
            #[cfg(target_os = "linux")]
            Kind::Memory(m) => m.read(offset, buf).await,
        }
    }

    /// Writes `data` at `offset`.
    pub(crate) async fn write(&self, offset: u64, data: &[u8]) -> Result<(), OpError> {
        match &self.kind {
            Kind::Bytes(m) => m.write(offset, data).await,
            #[cfg(target_os = "linux")]
            Kind::Memory(m) => m.write(offset, data).await,
        }
    }

    /// Makes every completed write durable on the server.
    pub(crate) async fn sync(&self) -> Result<(), OpError> {
        match &self.kind {
            Kind::Bytes(m) => m.sync().await,
            #[cfg(target_os = "linux")]
            Kind::Memory(m) => m.sync().await,
        }
    }

    /// An atomic operation at the server: the previous value, and whether
    /// it applied.
    pub(crate) async fn atomic(&self, offset: u64, op: AtomicOp) -> Result<(u64, bool), OpError> {
        match &self.kind {
            Kind::Bytes(m) => m.atomic(offset, op).await,
            #[cfg(target_os = "linux")]
            Kind::Memory(m) => m.atomic(offset, op).await,
        }
    }

    /// Writes back what is dirty and ends the mapping.
    pub(crate) async fn unmap(self) -> Result<(), OpError> {
        match self.kind {
            Kind::Bytes(m) => m.unmap().await,
            #[cfg(target_os = "linux")]
            Kind::Memory(m) => m.unmap().await,
        }
    }
}
