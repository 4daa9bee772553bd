//! The server state machine: sessions, the coherence directory, leases, and
//! the disk as an effect.
//!
//! One [`Server`] serves every connection. The adapter owns the sockets and
//! the store and drives it through the loop described in the crate
//! documentation:
//!
//! * [`Server::handle_connect`] for a new connection, [`Server::handle_input`]
//!   with the bytes read from it, [`Server::handle_disconnect`] when it ends,
//!   [`Server::handle_timeout`] when [`Server::poll_timeout`] has passed,
//!   [`Server::handle_store_done`] when a store request finished;
//! * then drain [`Server::poll_event`] (which connections have bytes to send,
//!   which to close, which store requests to run) and
//!   [`Server::poll_transmit`] for each connection it names.
//!
//! The server never touches the disk itself: it asks, with
//! [`ServerEvent::Store`], and goes on with other work until the answer
//! comes back. Requests it has outstanding at the same time commute, so the
//! adapter may run them in parallel and finish them in any order.
//!
//! Everything a peer sends is checked; a peer that breaks the protocol gets
//! an `Error` frame naming what was wrong and loses its connection, and
//! nobody else notices.

#[cfg(feature = "bug-injection")]
mod bugs;
mod cluster;
mod config;
mod conns;
mod directory;
mod disk;
mod exec;
mod files;
mod handshake;
mod ids;
mod invariants;
mod ops;
mod pages;
mod requests;
mod revoke;
mod run_state;
mod session;
mod shutdown;
mod store_done;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

#[cfg(feature = "bug-injection")]
pub use bugs::ServerBug;
pub use config::{AccessList, ClientEntry, ConfigError, Rights, ServerConfig};
pub use conns::ConnId;

use crate::Instant;
use crate::path::ExportPath;
use crate::protocol::{HANDSHAKE_MAX_FRAME, RevId, SessionId, decode_frame};
use crate::store::{StoreDone, StoreError, StoreId, StoreRequest};

use conns::{ConnState, Connection, Failure, error_msg};
use directory::FileTable;
use disk::Disk;
use ids::OpId;
use ops::Op;
use revoke::Revocation;
use run_state::{RunState, VERSION_BLOCK};
use session::Session;
use shutdown::Shutdown;

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
    /// Run this request on the store (see [`StoreOp::execute`]) and hand the
    /// result to [`Server::handle_store_done`]. Requests may run at the same
    /// time and finish in any order.
    ///
    /// [`StoreOp::execute`]: crate::store::StoreOp::execute
    Store(StoreRequest),
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
    /// The disk failed; the server keeps the data in memory, writes it again
    /// later, and tells the writers at their next sync (for logs: an
    /// operator may want to free space).
    DiskTrouble {
        /// The file, if the failure is about one.
        path: Option<ExportPath>,
        /// What failed.
        error: StoreError,
    },
    /// [`Server::begin_shutdown`] finished: every dirty page was recalled,
    /// every file synced, every client told, and the run state recorded.
    ShutdownComplete {
        /// Files whose data the disk would not take: what was written to them
        /// and not synced is lost (their clients were told).
        unwritten: Vec<ExportPath>,
    },
    /// Send this request to the cluster's coordinator (etcd) and hand the
    /// answer to [`Server::handle_coordinator_response`]; a `Watch`'s
    /// events go to [`Server::handle_coordinator_watch`] (and its end to
    /// [`Server::handle_coordinator_watch_ended`]). Every request gets
    /// exactly one answer (`Failed` when it timed out). Only in a cluster.
    Coordinate {
        /// The request's id.
        id: crate::cluster::CoordRequestId,
        /// What to ask.
        request: crate::cluster::CoordRequest,
    },
    /// What the shard ownership changed (for logs; the server has acted).
    Cluster(crate::cluster::OwnershipEvent),
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

/// Why a server could not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The run state an earlier server left in the export cannot be read.
    #[error(
        "the export's {name} cannot be read ({reason}); remove it only if no server has exported this directory within its lease",
        name = crate::store::RUN_STATE_NAME
    )]
    RunState {
        /// What is wrong with it.
        reason: String,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Handshake(ConnId),
    Lease(SessionId),
    GraceEnds,
    /// Write again what the disk refused.
    StoreRetry,
    /// Record the run state again (the last attempt failed).
    RunStateRetry,
    /// Shutdown stops waiting for clients to confirm its goodbye.
    Farewell,
    /// A shutdown stops waiting for the cluster leave to finish.
    LeaveGiveUp,
}

/// How long a server waits before writing again what the disk refused.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// The run state this run records, and whether the store has it.
#[derive(Debug)]
struct Recording {
    /// Whether the latest state asked for is durable.
    saved: bool,
    /// A save is in flight.
    saving: bool,
    /// The save in flight is a clean shutdown's final state.
    saving_final: bool,
    /// Versions below this are covered by what was (or is being) recorded.
    version_floor: u64,
    /// The grace a crash of this run would leave the next.
    grace: Duration,
}

/// The server state machine. See the module documentation.
pub struct Server {
    config: ServerConfig,
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
    next_version: u64,
    timers: BTreeSet<(Instant, Timer)>,
    events: VecDeque<ServerEvent>,
    disk: Disk,
    shutdown: Option<Shutdown>,
    /// The end of the restart grace period.
    grace_until: Instant,
    /// Operations that need write ownership, waiting for the grace period
    /// (and for the run state to be recorded).
    grace_waiting: Vec<OpId>,
    recording: Recording,
    /// Membership of a cluster, with [`ServerConfig::cluster`].
    cluster: Option<cluster::Membership>,
    #[cfg(feature = "bug-injection")]
    bug: ServerBug,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("epoch", &self.epoch)
            .field("connections", &self.conns.len())
            .field("sessions", &self.sessions.len())
            .field("files", &self.files.files.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server starting at `now`. `seed` must come from a good random source
    /// in production: it yields the server's epoch, resume tokens and nonces.
    /// `run_state` is what the store's
    /// [`load_run_state`](crate::store::Store::load_run_state) returned: what
    /// an earlier server of this export recorded (`None`: no server ever
    /// exported it).
    ///
    /// The server first records its own run state (a [`ServerEvent::Store`]
    /// request); it grants no write ownership until that is durable and the
    /// grace period the earlier run asked for has passed.
    pub fn new(
        config: ServerConfig,
        seed: [u8; 32],
        now: Instant,
        run_state: Option<&[u8]>,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let prior = run_state
            .map(RunState::decode)
            .transpose()
            .map_err(|reason| StartError::RunState { reason })?;
        let mut rng = ChaCha20Rng::from_seed(seed);
        let epoch = rng.next_u64() | 1;
        let prior_grace = prior.as_ref().map_or(Duration::ZERO, |p| p.grace);
        let cluster = config
            .cluster
            .clone()
            .map(cluster::Membership::new)
            .transpose()
            .map_err(|e| StartError::Config(ConfigError(e)))?;
        // In a cluster the export is shared: the run state another member
        // recorded says nothing of this one, and every shard taken over
        // waits its own grace (docs/CLUSTER.md).
        let grace = match cluster {
            Some(_) => Duration::ZERO,
            None => config.restart_grace.unwrap_or(prior_grace),
        };
        let next_version = prior.as_ref().map_or(0, |p| p.version_floor);
        let mut server = Server {
            disk: Disk::new(config.max_open_files),
            config,
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
            next_version,
            timers: BTreeSet::new(),
            events: VecDeque::new(),
            shutdown: None,
            grace_until: now + grace,
            grace_waiting: Vec::new(),
            recording: Recording {
                saved: false,
                saving: false,
                saving_final: false,
                version_floor: next_version,
                grace: Duration::ZERO,
            },
            cluster,
            #[cfg(feature = "bug-injection")]
            bug: ServerBug::None,
        };
        if let Some(m) = &mut server.cluster {
            m.start(now);
        }
        server.timers.insert((server.grace_until, Timer::GraceEnds));
        if !server.records_run_state() {
            // Read-only: no write ownership is ever granted, so nothing to
            // record. A cluster member: the export is shared, and each
            // shard taken over waits its own grace (docs/CLUSTER.md).
            server.recording.saved = true;
        } else {
            // A crash of this run must be covered by the next: its leases,
            // and what is left of an earlier run's grace.
            server.recording.grace = server.config.lease.max(prior_grace);
            server.record_run_state(true);
        }
        Ok(server)
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// This run's epoch: a restarted server has another.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Whether session `sid` is alive here.
    pub fn has_session(&self, sid: SessionId) -> bool {
        self.sessions.contains_key(&sid)
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

    /// Bytes written by clients and not yet known to be on the disk, and
    /// how many of them the disk refused (they are kept and written again).
    pub fn unsynced_bytes(&self) -> (u64, u64) {
        (self.disk.unsynced_bytes(), self.disk.failed_bytes())
    }

    /// Store requests handed out and not yet finished.
    pub fn store_requests_outstanding(&self) -> usize {
        self.disk.outstanding()
    }

    /// Whether the restart grace period is running: write ownership waits
    /// until it ends and this run's state is recorded.
    pub fn in_grace(&self, now: Instant) -> bool {
        now < self.grace_until || !self.recording.saved
    }

    /// A new connection was accepted.
    pub fn handle_connect(&mut self, now: Instant) -> ConnId {
        self.next_conn += 1;
        let id = ConnId(self.next_conn);
        self.conns.insert(id, Connection::new());
        self.handshaking += 1;
        self.timers
            .insert((now + self.config.handshake_timeout, Timer::Handshake(id)));
        if self.handshaking > self.config.max_handshaking {
            self.fail_conn(
                id,
                Failure::fatal(
                    crate::protocol::ErrorCode::Busy,
                    "too many connections are in their handshake; try again",
                ),
            );
        }
        id
    }

    /// The longest frame `conn` may send now (the handshake's bound until
    /// its session is established, then `max_frame`): what an adapter may
    /// reserve for a frame whose length prefix it has seen before the core
    /// has.
    pub fn frame_limit(&self, conn: ConnId) -> u32 {
        match self.conns.get(&conn).map(|c| &c.state) {
            Some(ConnState::Established(_)) => self.config.max_frame,
            _ => HANDSHAKE_MAX_FRAME,
        }
    }

    /// Bytes arrived on `conn`. Whole frames are taken off the front of
    /// `buf`; a partial frame stays there for the next call.
    pub fn handle_input(&mut self, now: Instant, conn: ConnId, buf: &mut BytesMut) -> InputStatus {
        self.unstall(conn);
        let status = loop {
            let Some(c) = self.conns.get(&conn) else {
                break InputStatus::Closing;
            };
            let (max, reading) = match c.state {
                ConnState::Closing => break InputStatus::Closing,
                // Whatever follows the handshake waits for the session.
                ConnState::Parked { .. } => break InputStatus::Paused,
                ConnState::Established(sid) => (
                    self.config.max_frame,
                    self.sessions.get(&sid).map_or(0, |s| s.reading),
                ),
                _ => (HANDSHAKE_MAX_FRAME, 0),
            };
            // Replies the disk is reading count as queued output.
            if c.out.len() + reading > self.config.output_soft_limit {
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
            // A session left without a connection waits for its lease.
            let _left = self.leave(conn, c.state);
            #[cfg(feature = "bug-injection")]
            self.bug_ignores_lease(now, _left);
        }
        self.run_ready(now);
    }

    /// Time passed: leases run out, handshakes time out, refused writes are
    /// tried again.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Handshake(c) => {
                    let message = match self.conns.get(&c).map(|c| &c.state) {
                        Some(ConnState::AwaitHello | ConnState::AwaitAuth { .. }) => {
                            "the handshake took too long"
                        }
                        Some(ConnState::Parked { .. }) => {
                            "the server could not record its run state in the export in time; try again"
                        }
                        _ => continue,
                    };
                    self.fail_conn(
                        c,
                        Failure::fatal(crate::protocol::ErrorCode::Timeout, message),
                    );
                }
                Timer::GraceEnds => self.release_grace_waiting(now),
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
                Timer::StoreRetry => {
                    for f in self.disk.failing_files() {
                        self.disk.retry(f);
                    }
                }
                Timer::RunStateRetry => self.record_run_state(!self.final_state_due()),
                Timer::Farewell => self.farewell_over(now),
                Timer::LeaveGiveUp => self.leave_given_up(now),
            }
        }
        self.run_ready(now);
    }

    /// A store request finished.
    pub fn handle_store_done(
        &mut self,
        now: Instant,
        id: StoreId,
        result: Result<StoreDone, StoreError>,
    ) {
        self.on_store_done(now, id, result);
        self.run_ready(now);
    }

    /// When [`Server::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.first().map(|(t, _)| *t);
        let member = self.cluster.as_ref().and_then(|m| m.poll_timeout());
        match (timer, member) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next thing the adapter must do.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events
            .pop_front()
            .or_else(|| self.disk.poll_request().map(ServerEvent::Store))
            .or_else(|| self.poll_coordinator())
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

    /// Whether a reply to session `sid` should wait: its connection has
    /// more output queued (or being read from the disk) than its limit.
    pub(crate) fn output_full(&self, sid: SessionId) -> bool {
        let Some(s) = self.sessions.get(&sid) else {
            return false;
        };
        let queued = s
            .conn
            .and_then(|c| self.conns.get(&c))
            .map_or(0, |c| c.out.len());
        queued + s.reading > self.config.output_soft_limit
    }

    /// The connection's output may have drained: fetches that waited for
    /// that go on.
    fn unstall(&mut self, conn: ConnId) {
        let Some(Connection {
            state: ConnState::Established(sid),
            ..
        }) = self.conns.get(&conn)
        else {
            return;
        };
        let sid = *sid;
        if self.output_full(sid) {
            return;
        }
        if let Some(s) = self.sessions.get_mut(&sid) {
            let stalled = std::mem::take(&mut s.stalled);
            self.ready.extend(stalled);
        }
    }

    fn new_token(&mut self) -> [u8; 16] {
        let mut t = [0u8; 16];
        self.rng.fill_bytes(&mut t);
        t
    }

    pub(crate) fn bump_version(&mut self) -> u64 {
        self.next_version += 1;
        // Record a new floor well before this run's is used up.
        if self.next_version + VERSION_BLOCK / 2 > self.recording.version_floor
            && !self.is_stopping()
            && self.records_run_state()
        {
            self.record_run_state(true);
        }
        self.next_version
    }

    /// Whether this server records its run state in the export: not when
    /// read-only, nor as a cluster member.
    fn records_run_state(&self) -> bool {
        !self.config.read_only && self.cluster.is_none()
    }

    /// Asks the store to record the run state: `running` while serving, or
    /// the final state of a clean shutdown.
    fn record_run_state(&mut self, running: bool) {
        if self.recording.saving {
            return;
        }
        let state = if running {
            self.recording.version_floor = self.next_version + VERSION_BLOCK;
            RunState {
                running: true,
                grace: self.recording.grace,
                version_floor: self.recording.version_floor,
            }
        } else {
            RunState {
                running: false,
                grace: self.shutdown_grace(),
                version_floor: self.next_version + 1,
            }
        };
        self.recording.saving = true;
        self.recording.saving_final = !running;
        self.disk.save_run_state(state.encode());
    }

    /// A save of the run state finished. Only the final state's save ends a
    /// shutdown: a running state's save (this run's first, or a retry) may
    /// finish while a shutdown is still recalling, syncing or saying
    /// goodbye.
    fn run_state_recorded(&mut self, now: Instant, result: Result<(), StoreError>) {
        self.recording.saving = false;
        let was_final = std::mem::take(&mut self.recording.saving_final);
        match result {
            Ok(()) if was_final => self.run_state_final_recorded(),
            Ok(()) => {
                self.recording.saved = true;
                if !self.is_stopping() {
                    // No new session once shutdown has begun.
                    self.unpark(now);
                }
                self.release_grace_waiting(now);
                if self.final_state_due() {
                    self.record_run_state(false);
                }
            }
            Err(error) => {
                self.events.push_back(ServerEvent::DiskTrouble {
                    path: None,
                    error: StoreError::Io(format!(
                        "recording the run state in {}: {error}",
                        crate::store::RUN_STATE_NAME
                    )),
                });
                if was_final {
                    // The earlier state stays: the next run waits a lease.
                    self.run_state_final_recorded();
                } else if self.final_state_due() {
                    self.record_run_state(false);
                } else {
                    self.timers
                        .insert((now + STORE_RETRY, Timer::RunStateRetry));
                }
            }
        }
    }

    /// Whether write ownership of `file` must wait now: for the restart
    /// grace (and this run's state to be recorded), or, in a cluster, for
    /// the takeover grace of the file's shard.
    pub(crate) fn writes_wait(&self, now: Instant, file: Option<ids::FileId>) -> bool {
        self.in_grace(now) || file.is_some_and(|f| self.shard_in_grace(now, f))
    }

    fn release_grace_waiting(&mut self, now: Instant) {
        let waiting = std::mem::take(&mut self.grace_waiting);
        for id in waiting {
            let file = self.ops.get(&id).and_then(|o| o.file);
            if self.writes_wait(now, file) {
                self.grace_waiting.push(id);
            } else {
                self.ready.push_back(id);
            }
        }
    }

    /// Makes sure failed writes are tried again.
    fn schedule_store_retry(&mut self, now: Instant) {
        if !self.timers.iter().any(|(_, t)| *t == Timer::StoreRetry) {
            self.timers.insert((now + STORE_RETRY, Timer::StoreRetry));
        }
    }
}
