//! A mapped byte range of a remote file.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rmmap_core::client::{Mapped, MappingId, OpError};
use rmmap_core::protocol::AtomicOp;

use super::{Client, Shared};

struct MappingInner {
    client: Client,
    mapped: Mapped,
}

impl Drop for MappingInner {
    fn drop(&mut self) {
        // Best effort: the unmap runs in the driver; nobody waits for it. A
        // mapping already unmapped refuses it, which is as good.
        let shared = self.client.shared();
        let _ = shared.with(|c, now| c.unmap(now, self.mapped.mapping));
        shared.wake_driver();
    }
}

/// A byte range of a remote file, mapped coherently: every read sees the
/// latest completed write to each page, by any client.
///
/// Offsets are relative to the start of the mapping; reads and writes may
/// span any number of pages. Every range is checked before anything is
/// allocated for it. Cheap to clone; the range is unmapped when the last
/// clone is dropped (or by [`Mapping::unmap`]).
#[derive(Clone)]
pub struct Mapping {
    inner: Arc<MappingInner>,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("id", &self.id())
            .field("len", &self.len())
            .finish()
    }
}

impl Mapping {
    pub(crate) fn new(client: Client, mapped: Mapped) -> Self {
        Mapping {
            inner: Arc::new(MappingInner { client, mapped }),
        }
    }

    fn shared(&self) -> &Shared {
        self.inner.client.shared()
    }

    /// The mapping's id, as named in [`ClientEvent::SessionLost`](super::ClientEvent::SessionLost).
    pub fn id(&self) -> MappingId {
        self.inner.mapped.mapping
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> u64 {
        self.inner.mapped.len
    }

    /// Whether the mapping is empty (never: the server refuses empty ones).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file's length when it was mapped.
    pub fn file_len(&self) -> u64 {
        self.inner.mapped.file_len
    }

    /// The client this mapping belongs to.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Serves a read from the cache without waiting: `Ok(true)` when `buf`
    /// was filled, `Ok(false)` when the pages are not all cached (use
    /// [`Mapping::read`]).
    pub fn try_read(&self, offset: u64, buf: &mut [u8]) -> Result<bool, OpError> {
        let id = self.id();
        self.shared()
            .with(|c, now| c.try_read(now, id, offset, buf))
    }

    /// Serves a write from the cache without waiting: `Ok(true)` when every
    /// page it touches is held exclusively and the write is done.
    pub fn try_write(&self, offset: u64, data: &[u8]) -> Result<bool, OpError> {
        let id = self.id();
        self.shared()
            .with(|c, now| c.try_write(now, id, offset, data))
    }

    /// Fills `buf` with the bytes at `offset`.
    pub async fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), OpError> {
        let id = self.id();
        let pages = self
            .shared()
            .run(|c, now| c.read_into(now, id, offset, buf))
            .await?;
        pages.copy_into(buf)
    }

    /// The `len` bytes at `offset` as slices of the cached pages, in order,
    /// without copying them (for writing them out with vectored IO, as
    /// `rmmap cat` and `get` do).
    pub async fn read_slices(&self, offset: u64, len: u64) -> Result<Vec<Bytes>, OpError> {
        let id = self.id();
        let slices = self
            .shared()
            .run(|c, now| c.read_pages(now, id, offset, len))
            .await?
            .into_slices();
        let got: u64 = slices.iter().map(|b| b.len() as u64).sum();
        if got != len {
            return Err(OpError::Internal(format!(
                "a read of {len} bytes completed with {got}"
            )));
        }
        Ok(slices)
    }

    /// The `len` bytes at `offset`.
    pub async fn read_bytes(&self, offset: u64, len: u64) -> Result<Bytes, OpError> {
        let id = self.id();
        self.shared()
            .run(|c, now| c.read_bytes(now, id, offset, len))
            .await
    }

    /// Writes `data` at `offset`. When it returns, every later read by any
    /// client sees it.
    pub async fn write(&self, offset: u64, data: &[u8]) -> Result<(), OpError> {
        let id = self.id();
        self.shared()
            .run(|c, now| c.write_from(now, id, offset, data))
            .await
    }

    /// Like [`Mapping::write`], taking the bytes without copying them.
    pub async fn write_bytes(&self, offset: u64, data: Bytes) -> Result<(), OpError> {
        let id = self.id();
        self.shared()
            .run(|c, now| c.write_bytes(now, id, offset, data))
            .await
    }

    /// Makes every write completed so far on this mapping durable on the
    /// server (fsync).
    pub async fn sync(&self) -> Result<(), OpError> {
        let id = self.id();
        self.shared().run(|c, now| c.sync(now, id)).await
    }

    /// Runs an atomic operation at the server on the 64-bit little-endian
    /// word at `offset` (8-byte aligned in the file). Returns the previous
    /// value and whether the operation applied (false when a
    /// compare-exchange found another value).
    pub async fn atomic(&self, offset: u64, op: AtomicOp) -> Result<(u64, bool), OpError> {
        let id = self.id();
        self.shared()
            .run(|c, now| c.atomic(now, id, offset, op))
            .await
    }

    /// Waits until the little-endian 64-bit word at `offset` (8-byte
    /// aligned in the file) no longer holds `current`, or `timeout` passes:
    /// the new value, or `None` on a timeout. A futex across machines:
    /// another client's write wakes it when the server's invalidation
    /// arrives (nothing is polled), a write through this client as it lands.
    pub async fn wait_while(
        &self,
        offset: u64,
        current: u64,
        timeout: Duration,
    ) -> Result<Option<u64>, OpError> {
        let id = self.id();
        self.shared()
            .run(|c, now| c.wait_while(now, id, offset, current, timeout))
            .await
    }

    /// Writes back the mapping's dirty pages and ends it, for every clone:
    /// their operations fail with `unmapped` from now on.
    pub async fn unmap(self) -> Result<(), OpError> {
        let id = self.id();
        self.shared().run(|c, now| c.unmap(now, id)).await
    }
}
