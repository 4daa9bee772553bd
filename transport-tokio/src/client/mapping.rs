//! A mapped byte range of a remote file.
//!
//! A [`Mapping`] made through a [`ClusterClient`] follows its file when the
//! cluster moves it to another member (CLUSTER.md section 6): it maps the
//! same range on the owner and runs the operation there, after telling the
//! application once what the move lost (`homed.rs`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rmmap_core::client::{Again, Mapped, MappingId, OpError, Redirects};
use rmmap_core::protocol::AtomicOp;

use super::homed::Home;
use super::{Client, Shared};

/// One mapping on one connection: what a [`Mapping`] runs its operations
/// on.
pub(crate) struct MappingInner {
    pub(crate) client: Client,
    pub(crate) mapped: Mapped,
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
///
/// Made by a [`ClusterClient`](super::ClusterClient), it moves with its
/// file from member to member (every clone with it); a move that may have
/// lost writes fails one operation with [`OpError::SessionLost`] naming
/// them (cause [`SessionLossReason::MemberLost`](rmmap_core::client::SessionLossReason::MemberLost)).
#[derive(Clone)]
pub struct Mapping {
    at: At,
}

#[derive(Clone)]
enum At {
    /// On one connection for good.
    Fixed(Arc<MappingInner>),
    /// On whichever member serves the file.
    Homed(Arc<Home>),
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("id", &self.id())
            .field("len", &self.len())
            .finish()
    }
}

/// Runs `$op` (an expression of the mapping `at` and its id) on the
/// mapping's member now, again on the next one after a move (`$again`).
macro_rules! on_member {
    ($self:ident, $again:expr, |$at:ident, $id:ident| $op:expr) => {{
        let mut way = None;
        loop {
            let $at = $self.current();
            let $id = $at.mapped.mapping;
            match $op {
                Err(e) => $self.after(&$at, e, $again, &mut way).await?,
                ok => break ok,
            }
        }
    }};
}

impl MappingInner {
    fn shared(&self) -> &Shared {
        self.client.shared()
    }
}

impl Mapping {
    pub(crate) fn new(client: Client, mapped: Mapped) -> Self {
        Mapping {
            at: At::Fixed(Arc::new(MappingInner { client, mapped })),
        }
    }

    pub(crate) fn fixed(inner: Arc<MappingInner>) -> Self {
        Mapping {
            at: At::Fixed(inner),
        }
    }

    pub(crate) fn homed(home: Home) -> Self {
        Mapping {
            at: At::Homed(Arc::new(home)),
        }
    }

    /// The mapping on the connection that carries it now.
    pub(crate) fn current(&self) -> Arc<MappingInner> {
        match &self.at {
            At::Fixed(m) => m.clone(),
            At::Homed(h) => h.current(),
        }
    }

    /// After `e` from an operation on `at`: `Ok(())` to run it again (on
    /// the member that serves the file now), else the error to report.
    async fn after(
        &self,
        at: &Arc<MappingInner>,
        e: OpError,
        again: Again,
        way: &mut Option<Redirects>,
    ) -> Result<(), OpError> {
        match &self.at {
            At::Fixed(_) => Err(e),
            At::Homed(h) => h.after(at, e, again, way).await,
        }
    }

    /// Whether the mapping follows its file from member to member.
    #[cfg(target_os = "linux")]
    pub(crate) fn follows_file(&self) -> bool {
        matches!(self.at, At::Homed(_))
    }

    /// A memory fault (or a copy's faults) on `at` failed with `e`:
    /// `Ok(())` to fault again on the member that serves the file now,
    /// else the error the fault fails with (a move's loss, once, or `e`).
    #[cfg(target_os = "linux")]
    pub(crate) async fn after_fault(
        &self,
        at: &Arc<MappingInner>,
        e: OpError,
    ) -> Result<(), OpError> {
        self.after(at, e, Again::Yes, &mut None).await
    }

    /// The mapping on its one connection, if it never moves (as every
    /// mapping a [`Client`] makes).
    pub(crate) fn into_fixed(self) -> Option<Arc<MappingInner>> {
        match self.at {
            At::Fixed(m) => Some(m),
            At::Homed(_) => None,
        }
    }

    /// The mapping's id on the connection that carries it now, as named
    /// in [`ClientEvent::SessionLost`](super::ClientEvent::SessionLost).
    pub fn id(&self) -> MappingId {
        self.current().mapped.mapping
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> u64 {
        self.current().mapped.len
    }

    /// Whether the mapping is empty (never: the server refuses empty ones).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file's length when it was mapped (again, after a move).
    pub fn file_len(&self) -> u64 {
        self.current().mapped.file_len
    }

    /// The client (the connection to one member) that carries the mapping
    /// now.
    pub fn client(&self) -> Client {
        self.current().client.clone()
    }

    /// Serves a read from the cache without waiting: `Ok(true)` when `buf`
    /// was filled, `Ok(false)` when the pages are not all cached (use
    /// [`Mapping::read`]).
    pub fn try_read(&self, offset: u64, buf: &mut [u8]) -> Result<bool, OpError> {
        let at = self.current();
        let id = at.mapped.mapping;
        at.shared().with(|c, now| c.try_read(now, id, offset, buf))
    }

    /// Serves a write from the cache without waiting: `Ok(true)` when every
    /// page it touches is held exclusively and the write is done.
    pub fn try_write(&self, offset: u64, data: &[u8]) -> Result<bool, OpError> {
        let at = self.current();
        let id = at.mapped.mapping;
        at.shared()
            .with(|c, now| c.try_write(now, id, offset, data))
    }

    /// Fills `buf` with the bytes at `offset`.
    pub async fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), OpError> {
        on_member!(self, Again::Yes, |at, id| match at
            .shared()
            .run(|c, now| c.read_into(now, id, offset, buf))
            .await
        {
            Ok(pages) => pages.copy_into(buf),
            Err(e) => Err(e),
        })
    }

    /// The `len` bytes at `offset` as slices of the cached pages, in order,
    /// without copying them (for writing them out with vectored IO, as
    /// `rmmap cat` and `get` do).
    pub async fn read_slices(&self, offset: u64, len: u64) -> Result<Vec<Bytes>, OpError> {
        let slices = on_member!(self, Again::Yes, |at, id| at
            .shared()
            .run(|c, now| c.read_pages(now, id, offset, len))
            .await)?
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
        on_member!(self, Again::Yes, |at, id| at
            .shared()
            .run(|c, now| c.read_bytes(now, id, offset, len))
            .await)
    }

    /// Writes `data` at `offset`. When it returns, every later read by any
    /// client sees it.
    pub async fn write(&self, offset: u64, data: &[u8]) -> Result<(), OpError> {
        on_member!(self, Again::Yes, |at, id| at
            .shared()
            .run(|c, now| c.write_from(now, id, offset, data))
            .await)
    }

    /// Like [`Mapping::write`], taking the bytes without copying them.
    pub async fn write_bytes(&self, offset: u64, data: Bytes) -> Result<(), OpError> {
        on_member!(self, Again::Yes, |at, id| {
            let data = data.clone();
            at.shared()
                .run(|c, now| c.write_bytes(now, id, offset, data))
                .await
        })
    }

    /// Makes every write completed so far on this mapping durable on the
    /// server (fsync).
    pub async fn sync(&self) -> Result<(), OpError> {
        on_member!(self, Again::Yes, |at, id| at
            .shared()
            .run(|c, now| c.sync(now, id))
            .await)
    }

    /// Runs an atomic operation at the server on the 64-bit little-endian
    /// word at `offset` (8-byte aligned in the file). Returns the previous
    /// value and whether the operation applied (false when a
    /// compare-exchange found another value).
    pub async fn atomic(&self, offset: u64, op: AtomicOp) -> Result<(u64, bool), OpError> {
        // Sent and unanswered, it may have applied: not run again.
        on_member!(self, Again::IfRefused, |at, id| at
            .shared()
            .run(|c, now| c.atomic(now, id, offset, op))
            .await)
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
        on_member!(self, Again::Yes, |at, id| at
            .shared()
            .run(|c, now| c.wait_while(now, id, offset, current, timeout))
            .await)
    }

    /// Writes back the mapping's dirty pages and ends it, for every clone:
    /// their operations fail with `unmapped` from now on.
    pub async fn unmap(self) -> Result<(), OpError> {
        let at = self.current();
        let id = at.mapped.mapping;
        at.shared().run(|c, now| c.unmap(now, id)).await
    }
}
