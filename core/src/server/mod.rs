//! The server state machine: sessions, the coherence directory, leases.
//!
//! One [`Server`] serves every connection. The adapter owns the sockets and
//! drives it through the loop described in the crate documentation:
//!
//! * [`Server::handle_connect`] for a new connection, [`Server::handle_input`]
//!   with the bytes read from it, [`Server::handle_disconnect`] when it ends,
//!   [`Server::handle_timeout`] when [`Server::poll_timeout`] has passed;
//! * then drain [`Server::poll_event`] (which connections have bytes to send,
//!   which to close) and [`Server::poll_transmit`] for each of them.
//!
//! Everything a peer sends is checked; a peer that breaks the protocol gets
//! an `Error` frame naming what was wrong and loses its connection, and
//! nobody else notices.

mod config;
mod directory;
mod files;
mod handshake;
mod ops;
mod pages;
mod requests;
mod revoke;
mod session;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

pub use config::{
    AccessList, AccessListError, ClientEntry, ConfigError, Rights, ServerConfig, decode_hex,
};

use crate::Instant;
use crate::protocol::{
    ChunkQueue, ErrorCode, ErrorMsg, HANDSHAKE_MAX_FRAME, Message, Nonce, ReqId, RevId, SessionId,
    decode_frame,
};
use crate::store::Store;

use directory::FileTable;
use ops::{Op, OpId};
use revoke::Revocation;
use session::Session;

/// A connection, as the server numbers it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// What the adapter must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// The connection has bytes to send: call [`Server::poll_transmit`] until
    /// it returns `None`.
    Transmit(ConnId),
    /// Send what is queued for the connection, then close it and call
    /// [`Server::handle_disconnect`].
    Close(ConnId),
    /// A session began (for logs).
    SessionStarted {
        /// The session.
        session: SessionId,
        /// The client's name (empty without authentication).
        client: String,
    },
    /// A session ended (for logs).
    SessionEnded {
        /// The session.
        session: SessionId,
        /// Why.
        reason: String,
    },
    /// [`Server::begin_shutdown`] finished: every dirty page was recalled,
    /// every file synced, every connection told.
    ShutdownComplete,
}

/// What became of the bytes given to [`Server::handle_input`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum InputStatus {
    /// Every whole frame was processed; keep reading.
    Consumed,
    /// Too much output waits for this connection: stop reading it until its
    /// output drains, then call `handle_input` again with the same buffer.
    Paused,
    /// The connection is closing; stop reading it.
    Closing,
}

/// Deliberate protocol bugs, to prove that the tests and the simulator can
/// catch them (feature `bug-injection`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerBug {
    /// No bug.
    #[default]
    None,
    /// Grant exclusive ownership without invalidating shared copies.
    SkipInvalidation,
    /// Give a silent session's pages away without waiting for its lease.
    IgnoreLease,
}

#[derive(Debug)]
enum ConnState {
    AwaitHello,
    AwaitAuth {
        hello: crate::protocol::Hello,
        server_nonce: Nonce,
    },
    Established(SessionId),
    Closing,
}

#[derive(Debug)]
struct Connection {
    state: ConnState,
    out: ChunkQueue,
    notified: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Handshake(ConnId),
    Lease(SessionId),
    GraceEnds,
}

#[derive(Debug)]
struct Shutdown {
    done: bool,
}

/// The server state machine. `S` is where the files live.
pub struct Server<S> {
    config: ServerConfig,
    store: S,
    rng: ChaCha20Rng,
    epoch: u64,
    conns: BTreeMap<ConnId, Connection>,
    next_conn: u64,
    handshaking: u32,
    sessions: BTreeMap<SessionId, Session>,
    next_session: u64,
    files: FileTable,
    ops: BTreeMap<OpId, Op>,
    next_op: u64,
    ready: VecDeque<OpId>,
    revocations: BTreeMap<(SessionId, RevId), Revocation>,
    shutdown_revs: usize,
    next_version: u64,
    timers: BTreeSet<(Instant, Timer)>,
    events: VecDeque<ServerEvent>,
    shutdown: Option<Shutdown>,
    /// The end of the restart grace period, fixed at the first instant the
    /// server is given.
    grace_until: Option<Instant>,
    /// Operations that need write ownership, waiting for the grace period.
    grace_waiting: Vec<OpId>,
    bug: ServerBug,
}

impl<S> std::fmt::Debug for Server<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("epoch", &self.epoch)
            .field("connections", &self.conns.len())
            .field("sessions", &self.sessions.len())
            .field("files", &self.files.files.len())
            .finish_non_exhaustive()
    }
}

/// A failed request: what to tell the client.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    pub(crate) fatal: bool,
}

impl Failure {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            fatal: false,
        }
    }

    pub(crate) fn fatal(code: ErrorCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            fatal: true,
        }
    }
}

impl<S: Store> Server<S> {
    /// A server over `store`. `seed` must come from a good random source in
    /// production: it yields the server's epoch, resume tokens and nonces.
    pub fn new(config: ServerConfig, store: S, seed: [u8; 32]) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut rng = ChaCha20Rng::from_seed(seed);
        let epoch = rng.next_u64() | 1;
        Ok(Server {
            config,
            store,
            rng,
            epoch,
            conns: BTreeMap::new(),
            next_conn: 0,
            handshaking: 0,
            sessions: BTreeMap::new(),
            next_session: 0,
            files: FileTable::default(),
            ops: BTreeMap::new(),
            next_op: 0,
            ready: VecDeque::new(),
            revocations: BTreeMap::new(),
            shutdown_revs: 0,
            next_version: 0,
            timers: BTreeSet::new(),
            events: VecDeque::new(),
            shutdown: None,
            grace_until: None,
            grace_waiting: Vec::new(),
            bug: ServerBug::None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// This run's epoch: a restarted server has another.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Pages held by all sessions together, and directory entries (pages
    /// held, locked, waited for or changed): what the directory's memory
    /// grows with.
    pub fn directory_size(&self) -> (u64, usize) {
        let held = self.sessions.values().map(|s| s.held_count).sum();
        let entries = self.files.files.values().map(|f| f.pages.len()).sum();
        (held, entries)
    }

    /// Switches on a deliberate bug (tests only).
    #[cfg(feature = "bug-injection")]
    pub fn inject_bug(&mut self, bug: ServerBug) {
        self.bug = bug;
    }

    /// Starts the restart grace period at the first instant the server
    /// sees. Adapters should call [`Server::handle_timeout`] once when they
    /// start, so that it begins then.
    fn note_time(&mut self, now: Instant) {
        if self.grace_until.is_none() {
            let until = now + self.config.restart_grace.unwrap_or(self.config.lease);
            self.grace_until = Some(until);
            self.timers.insert((until, Timer::GraceEnds));
        }
    }

    /// Whether the restart grace period is running.
    pub fn in_grace(&self, now: Instant) -> bool {
        self.grace_until.is_none_or(|g| now < g)
    }

    /// A new connection was accepted.
    pub fn handle_connect(&mut self, now: Instant) -> ConnId {
        self.note_time(now);
        self.next_conn += 1;
        let id = ConnId(self.next_conn);
        self.conns.insert(
            id,
            Connection {
                state: ConnState::AwaitHello,
                out: ChunkQueue::new(),
                notified: false,
            },
        );
        self.handshaking += 1;
        self.timers
            .insert((now + self.config.handshake_timeout, Timer::Handshake(id)));
        if self.handshaking > self.config.max_handshaking {
            self.fail_conn(
                id,
                Failure::fatal(
                    ErrorCode::Busy,
                    "too many connections are in their handshake; try again",
                ),
            );
        }
        id
    }

    /// Bytes arrived on `conn`. Whole frames are taken off the front of
    /// `buf`; a partial frame stays there for the next call.
    pub fn handle_input(&mut self, now: Instant, conn: ConnId, buf: &mut BytesMut) -> InputStatus {
        self.note_time(now);
        let status = loop {
            let Some(c) = self.conns.get(&conn) else {
                break InputStatus::Closing;
            };
            let max = match c.state {
                ConnState::Closing => break InputStatus::Closing,
                ConnState::Established(_) => self.config.max_frame,
                _ => HANDSHAKE_MAX_FRAME,
            };
            if c.out.len() > self.config.output_soft_limit {
                break InputStatus::Paused;
            }
            match decode_frame(buf, max) {
                Ok(Some(msg)) => self.on_message(now, conn, msg),
                Ok(None) => break InputStatus::Consumed,
                Err(e) => {
                    buf.clear();
                    self.fail_conn(conn, Failure::fatal(e.code(), e.to_string()));
                    break InputStatus::Closing;
                }
            }
        };
        self.run_ready(now);
        status
    }

    /// The connection is gone (closed by either side, or failed).
    pub fn handle_disconnect(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            match c.state {
                ConnState::AwaitHello | ConnState::AwaitAuth { .. } => self.handshaking -= 1,
                ConnState::Established(sid) => {
                    if let Some(s) = self.sessions.get_mut(&sid)
                        && s.conn == Some(conn)
                    {
                        s.conn = None;
                        if self.bug == ServerBug::IgnoreLease {
                            self.end_session(now, sid, "bug: lease ignored");
                            self.run_ready(now);
                        }
                    }
                }
                ConnState::Closing => {}
            }
        }
    }

    /// Time passed: leases run out, handshakes time out.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.note_time(now);
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Handshake(c) => {
                    if let Some(conn) = self.conns.get(&c)
                        && matches!(
                            conn.state,
                            ConnState::AwaitHello | ConnState::AwaitAuth { .. }
                        )
                    {
                        self.fail_conn(
                            c,
                            Failure::fatal(ErrorCode::Timeout, "the handshake took too long"),
                        );
                    }
                }
                Timer::GraceEnds => {
                    let waiting = std::mem::take(&mut self.grace_waiting);
                    self.ready.extend(waiting);
                }
                Timer::Lease(sid) => {
                    let Some(s) = self.sessions.get(&sid) else {
                        continue;
                    };
                    if s.lease_expiry <= now {
                        self.end_session(now, sid, "its lease ran out");
                    } else {
                        self.timers.insert((s.lease_expiry, Timer::Lease(sid)));
                    }
                }
            }
        }
        self.run_ready(now);
    }

    /// When [`Server::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// The next thing the adapter must do.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// The next chunk of bytes to write to `conn`.
    pub fn poll_transmit(&mut self, conn: ConnId) -> Option<Bytes> {
        let c = self.conns.get_mut(&conn)?;
        let b = c.out.pop();
        if b.is_none() {
            c.notified = false;
        }
        b
    }

    /// Bytes waiting to be written to `conn`.
    pub fn pending_output(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.out.len())
    }

    /// Begins a graceful shutdown: no new sessions, every dirty page is
    /// recalled and every file synced, then every client gets a `Goodbye`
    /// and [`ServerEvent::ShutdownComplete`] follows.
    pub fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown.is_none() {
            self.shutdown = Some(Shutdown { done: false });
            self.recall_all_owned(now);
            self.check_shutdown();
        }
    }

    /// Whether shutdown has completed.
    pub fn is_shut_down(&self) -> bool {
        self.shutdown.as_ref().is_some_and(|s| s.done)
    }

    fn check_shutdown(&mut self) {
        let Some(sd) = &self.shutdown else { return };
        if sd.done || self.shutdown_revs > 0 {
            return;
        }
        // Every owner was recalled when shutdown began, and no operation
        // grants ownership after that (`finish` refuses it).
        debug_assert!(
            self.files
                .files
                .values()
                .all(|f| f.pages.values().all(|p| p.owner.is_none())),
            "an owner appeared during shutdown"
        );
        let stores: Vec<_> = self.files.files.values().map(|f| f.store).collect();
        let mut failed = 0;
        for f in stores {
            if self.store.sync(f).is_err() {
                failed += 1;
            }
        }
        let message = if failed == 0 {
            "the server is shutting down; every file was synced".to_string()
        } else {
            format!("the server is shutting down; {failed} file(s) failed to sync")
        };
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for c in conns {
            self.push(
                c,
                &Message::Goodbye(crate::protocol::Goodbye {
                    code: ErrorCode::ShuttingDown,
                    message: Bytes::from(message.clone()),
                }),
            );
            self.close_conn(c);
        }
        if let Some(sd) = &mut self.shutdown {
            sd.done = true;
        }
        self.events.push_back(ServerEvent::ShutdownComplete);
    }

    // ---- output helpers ----

    fn push(&mut self, conn: ConnId, msg: &Message) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if matches!(c.state, ConnState::Closing) {
            return;
        }
        c.out.push_message(msg);
        if !c.notified {
            c.notified = true;
            self.events.push_back(ServerEvent::Transmit(conn));
        }
        if c.out.len() > self.config.output_hard_limit {
            // The client stopped reading. Its session lives on (and its lease
            // runs out if it never answers what was queued).
            c.out.clear();
            self.close_conn(conn);
        }
    }

    /// Sends to the session's current connection, if it has one.
    fn send(&mut self, sid: SessionId, msg: &Message) {
        if let Some(c) = self.sessions.get(&sid).and_then(|s| s.conn) {
            self.push(c, msg);
        }
    }

    fn close_conn(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if matches!(c.state, ConnState::Closing) {
                return;
            }
            match std::mem::replace(&mut c.state, ConnState::Closing) {
                ConnState::AwaitHello | ConnState::AwaitAuth { .. } => self.handshaking -= 1,
                ConnState::Established(sid) => {
                    if let Some(s) = self.sessions.get_mut(&sid)
                        && s.conn == Some(conn)
                    {
                        s.conn = None;
                    }
                }
                ConnState::Closing => {}
            }
            self.events.push_back(ServerEvent::Close(conn));
        }
    }

    /// Sends a fatal error and closes the connection. A session on it loses
    /// its connection; a protocol violation also dooms the session.
    fn fail_conn(&mut self, conn: ConnId, f: Failure) {
        self.push(conn, &error_msg(ReqId(0), &f));
        let violation = matches!(
            f.code,
            ErrorCode::Protocol | ErrorCode::Malformed | ErrorCode::FrameTooLarge
        );
        if violation
            && let Some(Connection {
                state: ConnState::Established(sid),
                ..
            }) = self.conns.get(&conn)
            && let Some(s) = self.sessions.get_mut(sid)
        {
            s.doomed = true;
        }
        self.close_conn(conn);
    }

    fn on_message(&mut self, now: Instant, conn: ConnId, msg: Message) {
        let state = match self.conns.get(&conn) {
            Some(c) => &c.state,
            None => return,
        };
        match state {
            ConnState::Closing => {}
            ConnState::AwaitHello => match msg {
                Message::Hello(h) => self.on_hello(now, conn, h),
                other => self.fail_conn(
                    conn,
                    Failure::fatal(
                        ErrorCode::Protocol,
                        format!("expected Hello, got {}", other.name()),
                    ),
                ),
            },
            ConnState::AwaitAuth { .. } => match msg {
                Message::Authenticate(a) => self.on_authenticate(now, conn, a),
                other => self.fail_conn(
                    conn,
                    Failure::fatal(
                        ErrorCode::Protocol,
                        format!("expected Authenticate, got {}", other.name()),
                    ),
                ),
            },
            &ConnState::Established(sid) => {
                if let Some(s) = self.sessions.get_mut(&sid)
                    && s.may_renew()
                {
                    s.lease_expiry = now + self.config.lease;
                }
                self.on_session_message(now, conn, sid, msg);
            }
        }
    }

    fn new_token(&mut self) -> [u8; 16] {
        let mut t = [0u8; 16];
        self.rng.fill_bytes(&mut t);
        t
    }

    /// Checks the directory's invariants: at most one owner per page and
    /// never an owner beside sharers; holders are live sessions whose
    /// mappings cover the page and whose bookkeeping agrees; locks and queues
    /// name live operations. For tests, the fuzzer and the simulator.
    pub fn check_invariants(&self) -> Result<(), String> {
        let ps = self.config.page_size as u64;
        let mut counted: BTreeMap<SessionId, u64> = BTreeMap::new();
        for (fid, f) in &self.files.files {
            for (p, e) in &f.pages {
                if e.owner.is_some() && !e.sharers.is_empty() {
                    return Err(format!(
                        "file {fid:?} page {p}: owner {:?} beside sharers {:?}",
                        e.owner, e.sharers
                    ));
                }
                if e.version > self.next_version {
                    return Err(format!(
                        "file {fid:?} page {p}: version {} was never issued",
                        e.version
                    ));
                }
                for h in e.owner.iter().chain(e.sharers.iter()) {
                    let Some(s) = self.sessions.get(h) else {
                        return Err(format!(
                            "file {fid:?} page {p}: holder {h:?} is not a live session"
                        ));
                    };
                    if !s.held.get(fid).is_some_and(|set| set.contains(p)) {
                        return Err(format!(
                            "file {fid:?} page {p}: {h:?} holds it but does not know"
                        ));
                    }
                    if !s.covers(*fid, *p, ps) {
                        return Err(format!(
                            "file {fid:?} page {p}: {h:?} holds it without a mapping"
                        ));
                    }
                    *counted.entry(*h).or_default() += 1;
                }
                if let Some(l) = e.lock
                    && !self.ops.contains_key(&l)
                {
                    return Err(format!(
                        "file {fid:?} page {p}: locked by finished op {l:?}"
                    ));
                }
                if let Some(q) = e.queue.iter().find(|q| !self.ops.contains_key(q)) {
                    return Err(format!("file {fid:?} page {p}: finished op {q:?} in queue"));
                }
            }
        }
        for (sid, s) in &self.sessions {
            let n = counted.get(sid).copied().unwrap_or(0);
            if n != s.held_count {
                return Err(format!(
                    "{sid:?} counts {} held pages, the directory {n}",
                    s.held_count
                ));
            }
        }
        Ok(())
    }
}

pub(crate) fn error_msg(req: ReqId, f: &Failure) -> Message {
    let mut end = f.message.len().min(1000);
    while !f.message.is_char_boundary(end) {
        end -= 1;
    }
    let message = Bytes::copy_from_slice(&f.message.as_bytes()[..end]);
    Message::Error(ErrorMsg {
        req,
        code: f.code,
        fatal: f.fatal,
        message,
    })
}
