//! The client state machine: one connection to one server, carrying every
//! mapping of the client, with a coherent page cache.
//!
//! The adapter drives it through the loop described in the crate
//! documentation. Application commands ([`Client::map`], [`Client::read`],
//! [`Client::write`], [`Client::sync`], [`Client::unmap`], ...) return a
//! [`Pending`] operation that completes later as [`Event::Completed`] and
//! turns that completion into its own result type ([`Pending::finish`]).
//! Reads and writes that the cache can serve finish on the spot:
//! [`Client::read_into`], [`Client::read_bytes`], [`Client::write_from`] and
//! [`Client::write_bytes`] return [`Started::Done`] then, and
//! [`Client::try_read`] / [`Client::try_write`] say whether they could.
//!
//! Every range is checked here, before anything is allocated for it, so an
//! adapter passes what its caller gave and never checks a range itself.
//!
//! The client decides when to connect ([`Event::Connect`]), resumes its
//! session after a lost connection, sends again what was in flight (the
//! server applies it once), and, when the session cannot be resumed, tells
//! the application exactly which mappings lost writes.

mod cache;
mod commands;
mod completion;
mod config;
mod connection;
mod error;
mod event;
mod files;
mod flush;
mod handover;
mod input;
mod lifecycle;
mod mappings;
mod memory;
mod operations;
mod ops;
mod recovery;
mod redirect;
mod replies;
mod requests;
mod watch;
mod window;

use std::collections::VecDeque;

use bytes::Bytes;

pub use commands::range_len;
pub use completion::{Completion, IntoStarted, Mapped, Pending, ReadPages, Started};
pub use config::ClientConfig;
pub use error::{ConnectError, LossCause, LostWrites, OpError, SessionLossReason};
pub use event::{ClientEvent, Event};
pub use memory::MemoryBacking;
pub use redirect::{
    Again, BadMemberAddr, MAX_MEMBER_ADDR_LEN, MemberAddr, MemberLeft, NextTry, RedirectPolicy,
    Redirects,
};

use crate::Instant;
use crate::protocol::Chunks;

use cache::{FileId, PageCache};
use connection::Connection;
use files::OpenFiles;
pub(crate) use mappings::{MappingState, MappingStatus, Mappings};
use operations::{OpKind, Operations, ReadInto};
use requests::RequestLog;

/// A version no server ever issues: marks a copy that must not be
/// revalidated.
pub(crate) const VERSION_UNKNOWN: crate::protocol::Version = u64::MAX;

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

/// Deliberate client bugs, to prove that checkers can fail (feature
/// `bug-injection`: a release build has neither the switch nor a branch
/// that looks at it).
#[cfg(feature = "bug-injection")]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientBug {
    /// No bug.
    #[default]
    None,
    /// Keep serving the cache after the lease may have run out.
    IgnoreLease,
}

/// The client state machine.
///
/// It is made of parts that each keep their own state behind their own
/// methods; the files named below are where that state changes.
pub struct Client {
    config: ClientConfig,
    /// The connection, the session, the lease (`connection.rs`; what comes
    /// in is handled in `input.rs`).
    conn: Connection,
    /// What the adapter must hear, in order.
    events: VecDeque<Event>,
    /// Requests in flight and the retransmit log (`requests.rs`).
    requests: RequestLog,
    /// Open files and their server handles (`files.rs`).
    files: OpenFiles,
    /// Cached pages and their coherence state (`cache.rs`).
    cache: PageCache,
    /// Where writes that must wait are copied (their pages become slices
    /// of it), reused once the cache lets go of them.
    write_copies: Chunks,
    /// Mappings and their status (`mappings.rs`).
    mappings: Mappings,
    /// Operations in progress and what wakes them (`operations.rs`; how
    /// each makes progress is in `ops.rs` and `lifecycle.rs`).
    ops: Operations,
    #[cfg(feature = "bug-injection")]
    bug: ClientBug,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("conn", &self.conn)
            .field("session", &self.conn.session_id())
            .field("mappings", &self.mappings.len())
            .field("ops", &self.ops.len())
            .field("requests", &self.requests.len())
            .field("cached_pages", &self.cache.len())
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
            conn: Connection::new(seed, now),
            events: VecDeque::new(),
            requests: RequestLog::new(),
            files: OpenFiles::default(),
            cache: PageCache::default(),
            write_copies: Chunks::default(),
            mappings: Mappings::default(),
            ops: Operations::default(),
            #[cfg(feature = "bug-injection")]
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
        self.conn.page_size().map(|ps| ps as u32)
    }

    /// Whether the handshake has completed on the current connection.
    pub fn is_connected(&self) -> bool {
        self.conn.is_ready()
    }

    /// Whether recall answers (with pages written here) wait for the
    /// server to confirm them (tests and logs).
    pub fn has_unconfirmed_recall_answers(&self) -> bool {
        !self.requests.unconfirmed_recalled_pages().is_empty()
    }

    /// The session the server gave this client last (tests and logs: the
    /// same number names another session after the server restarted).
    pub fn session_id(&self) -> Option<crate::protocol::SessionId> {
        self.conn.session_id()
    }

    /// The epoch of the server run that gave that session.
    pub fn session_epoch(&self) -> Option<u64> {
        self.conn.session_epoch()
    }

    /// The length of a mapping.
    pub fn mapping_len(&self, mapping: MappingId) -> Option<u64> {
        self.mappings.get(mapping).map(|m| m.len)
    }

    /// Whether the mapping may be written.
    pub fn mapping_writable(&self, mapping: MappingId) -> Option<bool> {
        self.mappings.get(mapping).map(|m| m.writable)
    }

    /// Pages in the cache.
    pub fn cached_pages(&self) -> usize {
        self.cache.len()
    }

    /// The pages reads or writes may be served from (not Invalid), in (path,
    /// page) order: for checkers that compare caches across clients.
    pub fn cached_page_view(&self) -> Vec<CachedPage> {
        let mut out = Vec::new();
        for (fid, q, p) in self.cache.all() {
            if p.state == cache::PageState::Invalid
                || (p.state == cache::PageState::Shared && !p.data.is_some())
            {
                continue;
            }
            out.push(CachedPage {
                path: self.mappings.path_of(fid).unwrap_or_default().to_owned(),
                page: q,
                exclusive: p.state == cache::PageState::Exclusive,
                dirty: p.dirty.is_some(),
            });
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
        self.conn.poll_transmit()
    }

    /// Bytes waiting to be written.
    pub fn pending_output(&self) -> usize {
        self.conn.pending_output()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- commands ----

    pub(crate) fn lease_valid(&self, now: Instant) -> bool {
        #[cfg(feature = "bug-injection")]
        if self.bug == ClientBug::IgnoreLease {
            return true;
        }
        self.conn.lease_valid(now)
    }

    pub(crate) fn complete(&mut self, op: OpId, result: Result<Completion, OpError>) {
        if self.ops.finish(op) {
            self.events.push_back(Event::Completed { op, result });
        }
    }

    /// Fails every waiting operation on `mapping` except unmaps.
    /// Fails every operation waiting on `mapping`; returns how many.
    pub(crate) fn fail_mapping_ops(&mut self, mapping: MappingId, err: OpError) -> usize {
        let ids = self.ops.on_mapping(mapping);
        for id in &ids {
            self.complete(*id, Err(err.clone()));
        }
        ids.len()
    }

    /// Reports the mapping's loss, if it has one not yet reported: the
    /// error for the operation that hears it. A mapping that goes on after
    /// the report is mapped again.
    pub(crate) fn report_loss(&mut self, mapping: MappingId) -> Result<(), OpError> {
        let Some(m) = self.mappings.get_mut(mapping) else {
            return Ok(());
        };
        let Some(lost) = m.report_loss() else {
            return Ok(());
        };
        if m.is_reopening() {
            self.mappings.set_reopen_pending(true);
        }
        Err(OpError::SessionLost(lost))
    }

    /// Steps every woken operation until none makes progress, then trims
    /// the cache.
    pub(crate) fn pump(&mut self, now: Instant) {
        self.drive_mappings();
        let mut rounds = 0;
        while let Some(op) = self.ops.next_woken() {
            self.step(now, op);
            rounds += 1;
            if rounds > 1_000_000 {
                debug_assert!(false, "operations woke each other a million times");
                break;
            }
        }
        self.evict(now);
    }

    /// Numbers a new file and makes room for its pages.
    pub(crate) fn new_file(&mut self) -> FileId {
        let id = self.files.add();
        self.cache.add_file(id);
        id
    }

    /// Forgets a file and its cached pages.
    pub(crate) fn drop_file(&mut self, file: FileId) {
        self.files.close(file);
        self.cache.remove_file(file);
    }
}
