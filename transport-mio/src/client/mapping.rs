//! A mapped byte range of a remote file.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use rmmap_core::client::{Completion, MappingId, OpError, copy_read_pages};
use rmmap_core::protocol::AtomicOp;

use super::{Client, unexpected};

struct MappingInner {
    client: Client,
    id: MappingId,
    len: u64,
    file_len: u64,
    unmapped: AtomicBool,
}

impl Drop for MappingInner {
    fn drop(&mut self) {
        if !self.unmapped.load(Ordering::Acquire) {
            // Best effort: the unmap runs on the IO thread; nobody waits for it.
            let shared = self.client.shared();
            let now = shared.now();
            let _ = shared.lock().client.unmap(now, self.id);
            shared.wake();
        }
    }
}

/// A byte range of a remote file, mapped coherently: every read sees the
/// latest completed write to each page, by any client.
///
/// Offsets are relative to the start of the mapping; reads and writes may
/// span any number of pages. Cheap to clone; the range is unmapped when the
/// last clone is dropped (or by [`Mapping::unmap`]).
#[derive(Clone)]
pub struct Mapping {
    inner: Arc<MappingInner>,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("id", &self.inner.id)
            .field("len", &self.inner.len)
            .finish()
    }
}

impl Mapping {
    pub(crate) fn new(client: Client, id: MappingId, len: u64, file_len: u64) -> Self {
        Mapping {
            inner: Arc::new(MappingInner {
                client,
                id,
                len,
                file_len,
                unmapped: AtomicBool::new(false),
            }),
        }
    }

    /// The mapping's id, as named in [`ClientEvent::SessionLost`](super::ClientEvent::SessionLost).
    pub fn id(&self) -> MappingId {
        self.inner.id
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> u64 {
        self.inner.len
    }

    /// Whether the mapping is empty (never: the server refuses empty ones).
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// The file's length when it was mapped.
    pub fn file_len(&self) -> u64 {
        self.inner.file_len
    }

    /// The client this mapping belongs to.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Serves a read from the cache without waiting: `Ok(true)` when `buf`
    /// was filled, `Ok(false)` when the pages are not all cached (use
    /// [`Mapping::read`]).
    pub fn try_read(&self, offset: u64, buf: &mut [u8]) -> Result<bool, OpError> {
        let shared = self.inner.client.shared();
        let now = shared.now();
        shared
            .lock()
            .client
            .try_read(now, self.inner.id, offset, buf)
    }

    /// Serves a write from the cache without waiting: `Ok(true)` when every
    /// page it touches is held exclusively and the write is done.
    pub fn try_write(&self, offset: u64, data: &[u8]) -> Result<bool, OpError> {
        let shared = self.inner.client.shared();
        let now = shared.now();
        shared
            .lock()
            .client
            .try_write(now, self.inner.id, offset, data)
    }

    /// Fills `buf` with the bytes at `offset`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), OpError> {
        if self.try_read(offset, buf)? {
            return Ok(());
        }
        // The pages' own bytes, copied once, straight into `buf`.
        let id = self.inner.id;
        let len = buf.len() as u64;
        match self
            .inner
            .client
            .shared()
            .run(|c, now| c.read_pages(now, id, offset, len))?
        {
            Completion::ReadPages(parts) => copy_read_pages(buf, &parts),
            other => Err(unexpected(other)),
        }
    }

    /// The `len` bytes at `offset`.
    pub fn read_bytes(&self, offset: u64, len: u64) -> Result<Bytes, OpError> {
        if let Ok(n) = usize::try_from(len) {
            let mut buf = BytesMut::zeroed(n);
            if self.try_read(offset, &mut buf)? {
                return Ok(buf.freeze());
            }
        }
        self.fetch(offset, len)
    }

    fn fetch(&self, offset: u64, len: u64) -> Result<Bytes, OpError> {
        let id = self.inner.id;
        match self
            .inner
            .client
            .shared()
            .run(|c, now| c.read(now, id, offset, len))?
        {
            Completion::Read(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// Writes `data` at `offset`. When it returns, every later read by any
    /// client sees it.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), OpError> {
        if self.try_write(offset, data)? {
            return Ok(());
        }
        self.write_slow(offset, Bytes::copy_from_slice(data))
    }

    /// Like [`Mapping::write`], taking the bytes without copying them.
    pub fn write_bytes(&self, offset: u64, data: Bytes) -> Result<(), OpError> {
        if self.try_write(offset, &data)? {
            return Ok(());
        }
        self.write_slow(offset, data)
    }

    fn write_slow(&self, offset: u64, data: Bytes) -> Result<(), OpError> {
        let id = self.inner.id;
        match self
            .inner
            .client
            .shared()
            .run(|c, now| c.write(now, id, offset, data))?
        {
            Completion::Written => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Makes every write completed so far on this mapping durable on the
    /// server (fsync).
    pub fn sync(&self) -> Result<(), OpError> {
        let id = self.inner.id;
        match self.inner.client.shared().run(|c, now| c.sync(now, id))? {
            Completion::Synced => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Runs an atomic operation at the server on the 64-bit little-endian
    /// word at `offset` (8-byte aligned in the file). Returns the previous
    /// value and whether the operation applied (false when a
    /// compare-exchange found another value).
    pub fn atomic(&self, offset: u64, op: AtomicOp) -> Result<(u64, bool), OpError> {
        let id = self.inner.id;
        match self
            .inner
            .client
            .shared()
            .run(|c, now| c.atomic(now, id, offset, op))?
        {
            Completion::Atomic { previous, applied } => Ok((previous, applied)),
            other => Err(unexpected(other)),
        }
    }

    /// Writes back the mapping's dirty pages and ends it, for every clone:
    /// their operations fail with `unmapped` from now on.
    pub fn unmap(self) -> Result<(), OpError> {
        let id = self.inner.id;
        let unmapped = &self.inner.unmapped;
        let start = |c: &mut rmmap_core::client::Client, now| {
            unmapped.store(true, Ordering::Release);
            c.unmap(now, id)
        };
        match self.inner.client.shared().run(start)? {
            Completion::Unmapped => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}
