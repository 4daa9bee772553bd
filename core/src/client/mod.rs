//! The client state machine: one connection to one server, carrying every
//! mapping of the client, with a coherent page cache.
//!
//! The adapter drives it through the loop described in the crate
//! documentation. Application commands ([`Client::map`], [`Client::read`],
//! [`Client::write`], [`Client::sync`], [`Client::unmap`], ...) return an
//! [`OpId`] and complete later as [`Event::Completed`]; reads and writes that
//! the cache can serve complete at once, and [`Client::try_read`] /
//! [`Client::try_write`] serve them without an event at all.
//!
//! The client decides when to connect ([`Event::Connect`]), resumes its
//! session after a lost connection, sends again what was in flight (the
//! server applies it once), and, when the session cannot be resumed, tells
//! the application exactly which mappings lost writes.

mod cache;
mod config;
mod conn;
mod error;
mod ops;
mod recovery;
mod replies;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub use config::ClientConfig;
pub use error::{LossCause, LostWrites, OpError, SessionLossReason};

use crate::Instant;
use crate::protocol::{
    AtomicOp, ChunkQueue, FileHandle, Message, PageNo, ReqId, ResumeToken, SessionId, Version,
};

use cache::{FileId, FileState};

/// An application operation, numbered by the client.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// A mapping, as the client numbers it. Stays the same across reconnections.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MappingId(pub u64);

/// A cached page, as a cross-client checker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedPage {
    /// The file's path (as given to `map`, of some mapping of the file).
    pub path: String,
    /// The page number in the file.
    pub page: u64,
    /// Held exclusively (else shared).
    pub exclusive: bool,
    /// Has bytes not yet written back.
    pub dirty: bool,
}

/// Read-only or read-write.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads only.
    ReadOnly,
    /// Reads and writes.
    ReadWrite,
}

/// How to map.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MapOptions {
    /// Read-only or read-write.
    pub access: Access,
    /// Create the file if missing and extend it to cover the range.
    pub create: bool,
}

impl MapOptions {
    /// Read-only, no create.
    pub fn read_only() -> Self {
        MapOptions {
            access: Access::ReadOnly,
            create: false,
        }
    }

    /// Read-write, no create.
    pub fn read_write() -> Self {
        MapOptions {
            access: Access::ReadWrite,
            create: false,
        }
    }
}

/// The result of a completed operation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Completion {
    /// [`Client::map`] succeeded.
    Mapped {
        /// The new mapping.
        mapping: MappingId,
        /// The file's length when it was mapped.
        file_len: u64,
    },
    /// [`Client::read`]: the bytes.
    Read(Bytes),
    /// [`Client::write`] completed: every later read anywhere sees it.
    Written,
    /// [`Client::sync`]: every write completed before it is on disk.
    Synced,
    /// [`Client::unmap`].
    Unmapped,
    /// [`Client::set_len`].
    LenSet {
        /// The new length.
        len: u64,
    },
    /// [`Client::atomic`].
    Atomic {
        /// The word before the operation.
        previous: u64,
        /// False when a compare-exchange found another value.
        applied: bool,
    },
    /// [`Client::close`]: everything was written back and the server told.
    Closed,
}

/// What the adapter or the application must know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Open a connection to the server now, then call
    /// [`Client::handle_connected`] or [`Client::handle_connect_failed`].
    Connect,
    /// Close the current connection (or abandon the attempt). The client
    /// already counts it as gone: do not call `handle_disconnected` for it.
    Disconnect,
    /// An operation finished.
    Completed {
        /// Which.
        op: OpId,
        /// How.
        result: Result<Completion, OpError>,
    },
    /// The handshake completed.
    Connected {
        /// The old session lives on.
        resumed: bool,
    },
    /// The connection was lost; the client reconnects by itself.
    ConnectionLost,
    /// The session could not be resumed; `lost` names every mapping that
    /// lost writes (its operations fail until it is unmapped).
    SessionLost {
        /// Why.
        reason: SessionLossReason,
        /// The mappings that lost writes.
        lost: Vec<(MappingId, LostWrites)>,
    },
    /// The client failed for good (wrong credentials, unsupported version).
    Failed {
        /// Why.
        reason: String,
    },
}

/// Deliberate client bugs, to prove that checkers can fail (feature
/// `bug-injection`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientBug {
    /// No bug.
    #[default]
    None,
    /// Keep serving the cache after the lease may have run out.
    IgnoreLease,
}

#[derive(Clone, Debug)]
pub(crate) struct SessionInfo {
    pub(crate) id: SessionId,
    pub(crate) token: ResumeToken,
    pub(crate) epoch: u64,
}

/// Limits and sizes learned from the server's `Welcome`.
#[derive(Clone, Debug)]
pub(crate) struct Params {
    pub(crate) page_size: u64,
    pub(crate) lease: Duration,
    pub(crate) max_pages: u32,
    pub(crate) max_frame: u32,
    pub(crate) window: u64,
}

#[derive(Debug)]
pub(crate) enum Conn {
    Disconnected { retry_at: Instant },
    Connecting { since: Instant },
    Handshaking { since: Instant },
    Ready,
    Failed,
}

#[derive(Clone, Debug)]
pub(crate) enum MappingStatus {
    /// A `Map` request is (or will be) in flight.
    Opening {
        req: Option<ReqId>,
    },
    Ready {
        wire: crate::protocol::WireMappingId,
    },
    /// Mapped again after a lost session.
    Reopening {
        req: Option<ReqId>,
    },
    Lost(LostWrites),
    Closing,
}

#[derive(Debug)]
pub(crate) struct MappingState {
    pub(crate) path: String,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) writable: bool,
    pub(crate) create: bool,
    pub(crate) status: MappingStatus,
    pub(crate) file: Option<FileId>,
    pub(crate) write_seq: u64,
    pub(crate) synced_seq: u64,
    pub(crate) waiters: BTreeSet<OpId>,
    /// Where the last read ended, to spot sequential readers.
    pub(crate) last_read_end: u64,
    /// Read-ahead has been asked for up to this page.
    pub(crate) readahead_to: PageNo,
    pub(crate) file_len: u64,
}

impl MappingState {
    pub(crate) fn end(&self) -> u64 {
        self.offset + self.len
    }

    pub(crate) fn pages(&self, ps: u64) -> (PageNo, PageNo) {
        (self.offset / ps, self.end().div_ceil(ps))
    }

    pub(crate) fn wire(&self) -> Option<crate::protocol::WireMappingId> {
        match self.status {
            MappingStatus::Ready { wire } => Some(wire),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(crate) enum OpKind {
    Map {
        mapping: MappingId,
    },
    Read {
        mapping: MappingId,
        start: u64,
        len: u64,
        pos: u64,
        buf: Option<BytesMut>,
        sequential: bool,
    },
    Write {
        mapping: MappingId,
        start: u64,
        data: Bytes,
        pos: u64,
    },
    Sync {
        mapping: MappingId,
        snapshot: Option<Vec<PageNo>>,
        upto: u64,
        writebacks: BTreeSet<ReqId>,
        sync_req: Option<ReqId>,
        done: bool,
        failed: Option<OpError>,
    },
    Unmap {
        mapping: MappingId,
        writebacks: BTreeSet<ReqId>,
        req: Option<ReqId>,
    },
    SetLen {
        path: String,
        len: u64,
        create: bool,
        req: Option<ReqId>,
    },
    Atomic {
        mapping: MappingId,
        offset: u64,
        op: AtomicOp,
        req: Option<ReqId>,
    },
    Close {
        writebacks: BTreeSet<ReqId>,
        bye_sent: bool,
    },
}

#[derive(Debug)]
pub(crate) struct Op {
    pub(crate) kind: OpKind,
}

#[derive(Debug)]
pub(crate) enum ReqKind {
    Map {
        mapping: MappingId,
        op: Option<OpId>,
    },
    Unmap {
        mapping: MappingId,
        op: OpId,
    },
    Fetch {
        file: FileId,
        first: PageNo,
        count: u32,
    },
    /// `pages[i]` is the page of patch `i`.
    WriteBack {
        file: FileId,
        pages: Vec<PageNo>,
        op: Option<OpId>,
        mapping: MappingId,
    },
    Sync {
        op: OpId,
    },
    Revalidate {
        file: FileId,
        pages: Vec<(PageNo, Version)>,
    },
    SetLen {
        op: OpId,
    },
    Atomic {
        op: OpId,
    },
}

#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) seq: u64,
    pub(crate) msg: Message,
    pub(crate) kind: ReqKind,
}

#[derive(Debug)]
pub(crate) enum LogEntry {
    Request(ReqId),
    /// A recall acknowledgement carrying dirty data: kept until the server
    /// confirms it (`rev_acked`), sent again after a resume.
    RecallAck(crate::protocol::RevId, Message),
}

/// The client state machine.
pub struct Client {
    pub(crate) config: ClientConfig,
    pub(crate) rng: ChaCha20Rng,
    pub(crate) conn: Conn,
    pub(crate) attempts: u32,
    pub(crate) disconnected_since: Option<Instant>,
    pub(crate) failed: Option<String>,
    pub(crate) session: Option<SessionInfo>,
    pub(crate) params: Option<Params>,
    pub(crate) client_nonce: crate::protocol::Nonce,
    pub(crate) server_nonce: Option<crate::protocol::Nonce>,
    pub(crate) lease_until: Option<Instant>,
    pub(crate) ping: Option<(u64, Instant)>,
    pub(crate) next_ping_at: Option<Instant>,
    pub(crate) ping_nonce: u64,
    pub(crate) lease_waiters: BTreeSet<OpId>,
    pub(crate) out: ChunkQueue,
    pub(crate) events: VecDeque<Event>,
    pub(crate) next_req: u64,
    pub(crate) requests: BTreeMap<ReqId, Request>,
    pub(crate) next_seq: u64,
    pub(crate) log: BTreeMap<u64, LogEntry>,
    pub(crate) window_waiters: BTreeSet<OpId>,
    pub(crate) session_waiters: BTreeSet<OpId>,
    pub(crate) files: BTreeMap<FileId, FileState>,
    pub(crate) next_file: u32,
    pub(crate) by_handle: BTreeMap<FileHandle, FileId>,
    pub(crate) mappings: BTreeMap<MappingId, MappingState>,
    pub(crate) next_mapping: u64,
    pub(crate) cached: usize,
    pub(crate) tick: u64,
    pub(crate) ops: BTreeMap<OpId, Op>,
    pub(crate) next_op: u64,
    pub(crate) woken: BTreeSet<OpId>,
    pub(crate) bug: ClientBug,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("conn", &self.conn)
            .field("session", &self.session.as_ref().map(|s| s.id))
            .field("mappings", &self.mappings.len())
            .field("ops", &self.ops.len())
            .field("requests", &self.requests.len())
            .field("cached_pages", &self.cached)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client that will ask to connect at once ([`Event::Connect`]).
    /// `seed` drives reconnection jitter and nonces; give it fresh
    /// randomness in production.
    pub fn new(config: ClientConfig, seed: [u8; 32], now: Instant) -> Self {
        let mut c = Client {
            config,
            rng: ChaCha20Rng::from_seed(seed),
            conn: Conn::Disconnected { retry_at: now },
            attempts: 0,
            disconnected_since: None,
            failed: None,
            session: None,
            params: None,
            client_nonce: [0; 16],
            server_nonce: None,
            lease_until: None,
            ping: None,
            next_ping_at: None,
            ping_nonce: 0,
            lease_waiters: BTreeSet::new(),
            out: ChunkQueue::new(),
            events: VecDeque::new(),
            next_req: 1,
            requests: BTreeMap::new(),
            next_seq: 0,
            log: BTreeMap::new(),
            window_waiters: BTreeSet::new(),
            session_waiters: BTreeSet::new(),
            files: BTreeMap::new(),
            next_file: 0,
            by_handle: BTreeMap::new(),
            mappings: BTreeMap::new(),
            next_mapping: 0,
            cached: 0,
            tick: 0,
            ops: BTreeMap::new(),
            next_op: 0,
            woken: BTreeSet::new(),
            bug: ClientBug::None,
        };
        c.handle_timeout(now);
        c
    }

    /// Switches on a deliberate bug (tests only).
    #[cfg(feature = "bug-injection")]
    pub fn inject_bug(&mut self, bug: ClientBug) {
        self.bug = bug;
    }

    /// The server's page size, once connected.
    pub fn page_size(&self) -> Option<u32> {
        self.params.as_ref().map(|p| p.page_size as u32)
    }

    /// Whether the handshake has completed on the current connection.
    pub fn is_connected(&self) -> bool {
        matches!(self.conn, Conn::Ready)
    }

    /// The length of a mapping.
    pub fn mapping_len(&self, mapping: MappingId) -> Option<u64> {
        self.mappings.get(&mapping).map(|m| m.len)
    }

    /// Whether the mapping may be written.
    pub fn mapping_writable(&self, mapping: MappingId) -> Option<bool> {
        self.mappings.get(&mapping).map(|m| m.writable)
    }

    /// Pages in the cache.
    pub fn cached_pages(&self) -> usize {
        self.cached
    }

    /// The pages reads or writes may be served from (not Invalid), in (path,
    /// page) order: for checkers that compare caches across clients.
    pub fn cached_page_view(&self) -> Vec<CachedPage> {
        let mut out = Vec::new();
        for (fid, f) in &self.files {
            let path = self
                .mappings
                .values()
                .find(|m| m.file == Some(*fid))
                .map_or_else(String::new, |m| m.path.clone());
            for (q, p) in &f.pages {
                if p.state == cache::PageState::Invalid || (p.state == cache::PageState::Shared && !p.data.is_some()) {
                    continue;
                }
                out.push(CachedPage {
                    path: path.clone(),
                    page: *q,
                    exclusive: p.state == cache::PageState::Exclusive,
                    dirty: p.dirty.is_some(),
                });
            }
        }
        out.sort_by(|a, b| (&a.path, a.page).cmp(&(&b.path, b.page)));
        out
    }

    /// Whether the client would serve reads from its cache at `now`.
    pub fn lease_valid_at(&self, now: Instant) -> bool {
        self.lease_valid(now)
    }

    /// Operations not yet completed.
    pub fn pending_ops(&self) -> usize {
        self.ops.len()
    }

    /// The next bytes to write to the connection.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.out.pop()
    }

    /// Bytes waiting to be written.
    pub fn pending_output(&self) -> usize {
        self.out.len()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- commands ----

    fn admit(&mut self, kind: OpKind) -> Result<OpId, OpError> {
        if let Some(f) = &self.failed {
            return Err(OpError::Closed(f.clone()));
        }
        if self.ops.len() >= self.config.max_pending_ops {
            return Err(OpError::Busy(self.ops.len()));
        }
        self.next_op += 1;
        let id = OpId(self.next_op);
        self.ops.insert(id, Op { kind });
        self.woken.insert(id);
        Ok(id)
    }

    fn check_range(
        &self,
        mapping: MappingId,
        offset: u64,
        len: u64,
    ) -> Result<&MappingState, OpError> {
        let m = self.mappings.get(&mapping).ok_or(OpError::UnknownMapping)?;
        if offset.checked_add(len).is_none_or(|e| e > m.len) {
            return Err(OpError::OutOfRange {
                offset,
                len,
                mapping_len: m.len,
            });
        }
        if let MappingStatus::Lost(l) = &m.status {
            return Err(OpError::SessionLost(l.clone()));
        }
        if matches!(m.status, MappingStatus::Closing) {
            return Err(OpError::MappingClosed);
        }
        Ok(m)
    }

    /// Maps `[offset, offset + len)` of the file at `path` (relative to the
    /// export root).
    pub fn map(
        &mut self,
        now: Instant,
        path: &str,
        offset: u64,
        len: u64,
        opts: MapOptions,
    ) -> Result<OpId, OpError> {
        if self.ops.len() >= self.config.max_pending_ops {
            return Err(OpError::Busy(self.ops.len()));
        }
        self.next_mapping += 1;
        let mapping = MappingId(self.next_mapping);
        self.mappings.insert(
            mapping,
            MappingState {
                path: path.to_owned(),
                offset,
                len,
                writable: opts.access == Access::ReadWrite,
                create: opts.create,
                status: MappingStatus::Opening { req: None },
                file: None,
                write_seq: 0,
                synced_seq: 0,
                waiters: BTreeSet::new(),
                last_read_end: u64::MAX,
                readahead_to: 0,
                file_len: 0,
            },
        );
        let r = self.admit(OpKind::Map { mapping });
        if r.is_err() {
            self.mappings.remove(&mapping);
        }
        self.pump(now);
        r
    }

    /// Reads `len` bytes at `offset` of the mapping.
    pub fn read(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        len: u64,
    ) -> Result<OpId, OpError> {
        let m = self.check_range(mapping, offset, len)?;
        let start = m.offset + offset;
        let sequential = m.last_read_end == start;
        if let Some(m) = self.mappings.get_mut(&mapping) {
            m.last_read_end = start + len;
        }
        let r = self.admit(OpKind::Read {
            mapping,
            start,
            len,
            pos: 0,
            buf: None,
            sequential,
        });
        self.pump(now);
        r
    }

    /// Writes `data` at `offset` of the mapping.
    pub fn write(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        data: Bytes,
    ) -> Result<OpId, OpError> {
        let m = self.check_range(mapping, offset, data.len() as u64)?;
        if !m.writable {
            return Err(OpError::ReadOnly);
        }
        let start = m.offset + offset;
        let r = self.admit(OpKind::Write {
            mapping,
            start,
            data,
            pos: 0,
        });
        self.pump(now);
        r
    }

    /// Makes every write completed so far on this mapping durable.
    pub fn sync(&mut self, now: Instant, mapping: MappingId) -> Result<OpId, OpError> {
        let m = self.check_range(mapping, 0, 0)?;
        let upto = m.write_seq;
        let r = self.admit(OpKind::Sync {
            mapping,
            snapshot: None,
            upto,
            writebacks: BTreeSet::new(),
            sync_req: None,
            done: false,
            failed: None,
        });
        self.pump(now);
        r
    }

    /// Writes back the mapping's dirty pages and ends it. Operations still
    /// waiting on it fail with [`OpError::MappingClosed`].
    pub fn unmap(&mut self, now: Instant, mapping: MappingId) -> Result<OpId, OpError> {
        if !self.mappings.contains_key(&mapping) {
            return Err(OpError::UnknownMapping);
        }
        if matches!(self.mappings[&mapping].status, MappingStatus::Closing) {
            return Err(OpError::MappingClosed);
        }
        self.fail_mapping_ops(mapping, OpError::MappingClosed);
        let r = self.admit(OpKind::Unmap {
            mapping,
            writebacks: BTreeSet::new(),
            req: None,
        });
        self.pump(now);
        r
    }

    /// Sets the length of the file at `path`; with `create`, creates it.
    pub fn set_len(
        &mut self,
        now: Instant,
        path: &str,
        len: u64,
        create: bool,
    ) -> Result<OpId, OpError> {
        let r = self.admit(OpKind::SetLen {
            path: path.to_owned(),
            len,
            create,
            req: None,
        });
        self.pump(now);
        r
    }

    /// Runs an atomic operation at the server on the 64-bit little-endian
    /// word at `offset` of the mapping (8-byte aligned in the file).
    pub fn atomic(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        op: AtomicOp,
    ) -> Result<OpId, OpError> {
        let m = self.check_range(mapping, offset, 8)?;
        if !m.writable {
            return Err(OpError::ReadOnly);
        }
        let abs = m.offset + offset;
        if abs % 8 != 0 {
            return Err(OpError::Misaligned(abs));
        }
        let r = self.admit(OpKind::Atomic {
            mapping,
            offset: abs,
            op,
            req: None,
        });
        self.pump(now);
        r
    }

    /// Writes back everything dirty, says goodbye and ends the session.
    pub fn close(&mut self, now: Instant) -> Result<OpId, OpError> {
        let r = self.admit(OpKind::Close {
            writebacks: BTreeSet::new(),
            bye_sent: false,
        });
        self.pump(now);
        r
    }

    /// Serves a read from the cache without creating an operation:
    /// `Ok(true)` when `buf` was filled, `Ok(false)` when the data is not
    /// all cached (or the lease needs renewing): use [`Client::read`].
    pub fn try_read(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<bool, OpError> {
        let m = self.check_range(mapping, offset, buf.len() as u64)?;
        let (Some(file), Some(_)) = (m.file, m.wire()) else {
            return Ok(false);
        };
        let start = m.offset + offset;
        let Some(ps) = self.params.as_ref().map(|p| p.page_size) else {
            return Ok(false);
        };
        if !self.lease_valid(now) {
            return Ok(false);
        }
        let f = &self.files[&file];
        let mut pos = 0usize;
        while pos < buf.len() {
            let abs = start + pos as u64;
            let (p, inp) = (abs / ps, (abs % ps) as usize);
            let n = (ps as usize - inp).min(buf.len() - pos);
            let Some(page) = f.pages.get(&p) else {
                return Ok(false);
            };
            if !page.readable() {
                return Ok(false);
            }
            let d = page.data.as_slice().expect("readable pages have data");
            buf[pos..pos + n].copy_from_slice(&d[inp..inp + n]);
            pos += n;
        }
        self.tick += 1;
        Ok(true)
    }

    /// Serves a write from the cache: `Ok(true)` when every page it touches
    /// is held exclusively (and the lease is valid) and the write is done.
    pub fn try_write(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        data: &[u8],
    ) -> Result<bool, OpError> {
        let m = self.check_range(mapping, offset, data.len() as u64)?;
        if !m.writable {
            return Err(OpError::ReadOnly);
        }
        let (Some(file), Some(_)) = (m.file, m.wire()) else {
            return Ok(false);
        };
        let start = m.offset + offset;
        let Some(ps) = self.params.as_ref().map(|p| p.page_size) else {
            return Ok(false);
        };
        if !self.lease_valid(now) {
            return Ok(false);
        }
        let f = &self.files[&file];
        let (first, last) = (start / ps, (start + data.len() as u64).div_ceil(ps));
        for p in first..last {
            match f.pages.get(&p) {
                Some(pg) if pg.state == cache::PageState::Exclusive && pg.data.is_some() => {}
                _ => return Ok(false),
            }
        }
        self.apply_write(mapping, file, start, data);
        Ok(true)
    }

    /// Copies `data` into exclusively held pages (checked by the caller).
    pub(crate) fn apply_write(
        &mut self,
        mapping: MappingId,
        file: FileId,
        start: u64,
        data: &[u8],
    ) {
        let ps = self.params.as_ref().expect("connected").page_size;
        let f = self.files.get_mut(&file).expect("mapped file");
        let mut pos = 0usize;
        while pos < data.len() {
            let abs = start + pos as u64;
            let (p, inp) = (abs / ps, (abs % ps) as usize);
            let n = (ps as usize - inp).min(data.len() - pos);
            let page = f.pages.get_mut(&p).expect("checked exclusive");
            let had = page.data.is_some();
            page.data.make_mut(ps as usize)[inp..inp + n].copy_from_slice(&data[pos..pos + n]);
            if !had {
                self.cached += 1;
            }
            page.mark_dirty(inp as u32, (inp + n) as u32);
            pos += n;
        }
        let m = self.mappings.get_mut(&mapping).expect("checked");
        m.write_seq += 1;
        self.tick += 1;
    }

    pub(crate) fn lease_valid(&self, now: Instant) -> bool {
        self.bug == ClientBug::IgnoreLease || self.lease_until.is_some_and(|u| now < u)
    }

    pub(crate) fn complete(&mut self, op: OpId, result: Result<Completion, OpError>) {
        if self.ops.remove(&op).is_some() {
            self.events.push_back(Event::Completed { op, result });
        }
    }

    /// Fails every waiting operation on `mapping` except unmaps.
    pub(crate) fn fail_mapping_ops(&mut self, mapping: MappingId, err: OpError) {
        let victims: Vec<OpId> = self
            .ops
            .iter()
            .filter(|(_, o)| match &o.kind {
                OpKind::Read { mapping: m, .. }
                | OpKind::Write { mapping: m, .. }
                | OpKind::Sync { mapping: m, .. }
                | OpKind::Atomic { mapping: m, .. } => *m == mapping,
                _ => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in victims {
            self.complete(id, Err(err.clone()));
        }
    }

    pub(crate) fn wake_all(&mut self) {
        let all: Vec<OpId> = self.ops.keys().copied().collect();
        self.woken.extend(all);
    }

    /// Steps every woken operation until none makes progress, then trims
    /// the cache.
    pub(crate) fn pump(&mut self, now: Instant) {
        self.drive_mappings();
        let mut rounds = 0;
        while let Some(op) = self.woken.pop_first() {
            self.step(now, op);
            rounds += 1;
            if rounds > 1_000_000 {
                debug_assert!(false, "operations woke each other a million times");
                break;
            }
        }
        self.evict(now);
    }

    pub(crate) fn new_file(&mut self, path: &str) -> FileId {
        self.next_file += 1;
        let id = FileId(self.next_file);
        let _ = path;
        self.files.insert(
            id,
            FileState {
                handle: None,
                pages: BTreeMap::new(),
            },
        );
        id
    }
}
