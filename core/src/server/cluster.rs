//! The server as a member of a cluster (docs/CLUSTER.md, section 10).
//!
//! With [`ServerConfig::cluster`](super::ServerConfig::cluster) set, the
//! server owns a [`ShardOwnership`] machine and drives it inside its own
//! loop: the machine's coordinator requests come out of
//! [`Server::poll_event`] as [`ServerEvent::Coordinate`], their answers go
//! back through [`Server::handle_coordinator_response`] and the watch's
//! through [`Server::handle_coordinator_watch`] /
//! [`Server::handle_coordinator_watch_ended`]; its deadlines are part of
//! [`Server::poll_timeout`].
//!
//! What the server does with it:
//!
//! - **Placement.** `Map` and `SetLen` of a path whose shard another member
//!   owns are answered `moved` with that member's address, of a shard
//!   nobody owns yet (or being handed over) `busy`. So is every request on
//!   an existing mapping whose file's shard this member does not serve now.
//! - **Fencing.** An operation checks again, by the clock, that the shard is
//!   served when it executes and when it grants, so nothing is granted
//!   after the serving window closed even before the machine's timer runs.
//!   Write ownership waits for the shard's takeover grace (`writes_from`),
//!   as it waits for the restart grace.
//! - **Loss** (`ShardLost`: the window closed, the lease is gone, the key was
//!   taken): every session with a mapping of a file of the shard, or with
//!   data of one not yet on the disk, ends (its client is told which
//!   unsynced writes were lost, as after a lost session), and what of those
//!   files is not on the disk is dropped, never written: another member may
//!   own them now. When that drops bytes acknowledged to a writer, the loss
//!   is a crash of the member for them: it takes a new epoch and ends every
//!   session, so every client resumes with `ServerRestarted` and reports
//!   what it wrote since its last sync.
//! - **Drain** (`DrainShard`: a planned move): every copy of the shard's
//!   pages is revoked (owners give their dirty data back), the files are
//!   synced, and only then is the shard reported drained. Mappings stay;
//!   their next request is answered `moved`.
//! - **Leave**: [`Server::begin_shutdown`] first leaves the cluster (every
//!   shard drained and released), then shuts down as a single server does.
//!   A leave that does not finish within two lease TTLs gives up; the
//!   shards are then lost the unclean way, which is still safe.

use std::collections::{BTreeMap, BTreeSet};

use rand_core::Rng;

use crate::Instant;
use crate::cluster::{
    ClusterConfig, CoordRequestId, CoordResponse, OwnershipEvent, Placement, ShardId,
    ShardOwnership, WatchEvent, shard_of,
};
use crate::protocol::{ErrorCode, SessionId};
use crate::store::{StoreError, StoreId};

use super::ids::{FileId, RevKind};
use super::{Failure, Server, ServerEvent, Timer};

/// The server's side of cluster membership.
pub(crate) struct Membership {
    machine: ShardOwnership,
    /// Shards being handed over.
    drains: BTreeMap<ShardId, Drain>,
    /// [`Server::begin_shutdown`] asked to leave: the local shutdown begins
    /// at `Left`.
    leaving: bool,
}

/// A shard being drained.
#[derive(Debug)]
struct Drain {
    epoch: i64,
    /// Revocations sent and not yet answered.
    revocations: usize,
    /// Its fsyncs not yet finished; `None` until they are sent.
    syncs: Option<BTreeSet<StoreId>>,
    /// The disk refused some of the shard's data: sync again no sooner
    /// than this (the disk writes it again meanwhile).
    retry_at: Option<Instant>,
}

impl Membership {
    pub(crate) fn new(config: ClusterConfig) -> Result<Self, String> {
        Ok(Membership {
            machine: ShardOwnership::new(config)?,
            drains: BTreeMap::new(),
            leaving: false,
        })
    }

    /// Starts the member: it takes a lease, registers and takes its shards.
    pub(crate) fn start(&mut self, now: Instant) {
        self.machine.handle_timeout(now);
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.machine.poll_timeout()
    }
}

/// What a request does with a file's shard, for the placement check.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum ShardUse {
    /// Grants pages or writes: only while the shard is served here and not
    /// draining.
    Grant,
    /// Lands data the client owns (a write-back): while the shard is held
    /// here, draining or not (it crossed the drain's recall, which waits
    /// for it).
    Land,
}

/// Who is waiting for a revocation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum RevWaiter {
    /// An operation.
    Op(super::ids::OpId),
    /// A graceful shutdown's recall.
    Shutdown,
    /// The drain of a shard.
    Drain(ShardId),
}

impl Server {
    /// The coordinator answered request `id`.
    pub fn handle_coordinator_response(
        &mut self,
        now: Instant,
        id: CoordRequestId,
        response: CoordResponse,
    ) {
        if let Some(m) = &mut self.cluster {
            m.machine.handle_response(now, id, response);
        }
        self.run_ready(now);
    }

    /// The watch started by request `id` reported changes.
    pub fn handle_coordinator_watch(
        &mut self,
        now: Instant,
        id: CoordRequestId,
        events: &[WatchEvent],
    ) {
        if let Some(m) = &mut self.cluster {
            m.machine.handle_watch_events(now, id, events);
        }
        self.run_ready(now);
    }

    /// The watch started by request `id` ended.
    pub fn handle_coordinator_watch_ended(&mut self, now: Instant, id: CoordRequestId) {
        if let Some(m) = &mut self.cluster {
            m.machine.handle_watch_ended(now, id);
        }
        self.run_ready(now);
    }

    #[cfg(feature = "bug-injection")]
    pub(super) fn inject_member_bug(&mut self, bug: crate::cluster::OwnershipBug) {
        if let Some(m) = &mut self.cluster {
            m.machine.inject_bug(bug);
        }
    }

    /// The shards this member serves now, with their epochs (empty outside
    /// a cluster).
    pub fn held_shards(&self) -> Vec<(ShardId, i64)> {
        self.cluster
            .as_ref()
            .map_or_else(Vec::new, |m| m.machine.held_shards().collect())
    }

    /// Runs the machine's deadlines that passed and acts on what it says.
    /// Called first thing in every turn of the server, so that no grant
    /// follows a closed window before the timer fires.
    pub(super) fn drive_cluster(&mut self, now: Instant) {
        let Some(m) = &mut self.cluster else { return };
        if m.machine.poll_timeout().is_some_and(|t| t <= now) {
            m.machine.handle_timeout(now);
        }
        while let Some(event) = self.cluster.as_mut().and_then(|m| m.machine.poll_event()) {
            self.on_ownership_event(now, event);
        }
    }

    /// The next coordinator request, for [`Server::poll_event`].
    pub(super) fn poll_coordinator(&mut self) -> Option<ServerEvent> {
        let (id, request) = self.cluster.as_mut()?.machine.poll_request()?;
        Some(ServerEvent::Coordinate { id, request })
    }

    fn on_ownership_event(&mut self, now: Instant, event: OwnershipEvent) {
        self.events.push_back(ServerEvent::Cluster(event.clone()));
        match event {
            OwnershipEvent::ShardAcquired { shard, .. } => self.renumber_shard(shard),
            OwnershipEvent::WritesAllowed { .. } => self.release_grace_waiting(now),
            OwnershipEvent::DrainShard { shard, epoch } => self.start_drain(now, shard, epoch),
            OwnershipEvent::ShardLost { shard, reason, .. } => {
                self.lose_shard(now, shard, &format!("{reason:?}"))
            }
            OwnershipEvent::Left => {
                if self.cluster.as_ref().is_some_and(|m| m.leaving) {
                    self.begin_local_shutdown(now);
                }
            }
            OwnershipEvent::Registered { .. }
            | OwnershipEvent::ShardReleased { .. }
            | OwnershipEvent::Misconfigured { .. } => {}
        }
    }

    /// In a cluster, a shutdown leaves first. Says whether it did (the
    /// local shutdown then begins when the leave is over).
    pub(super) fn leave_cluster_first(&mut self, now: Instant) -> bool {
        let Some(m) = &mut self.cluster else {
            return false;
        };
        if !m.leaving {
            m.leaving = true;
            m.machine.leave(now);
            let give_up = m.machine.config().lease_ttl * 2;
            self.timers.insert((now + give_up, Timer::LeaveGiveUp));
            self.run_ready(now);
        }
        true
    }

    /// The leave took too long (the coordinator is unreachable): shut down
    /// anyway. The shards are lost the unclean way: safe, with a grace.
    pub(super) fn leave_given_up(&mut self, now: Instant) {
        if self.shutdown.is_none() {
            self.begin_local_shutdown(now);
        }
    }

    fn shard_of_file(&self, file: FileId) -> Option<ShardId> {
        let m = self.cluster.as_ref()?;
        let f = self.files.files.get(&file)?;
        Some(shard_of(f.path.as_str(), m.machine.config().shards))
    }

    fn files_of_shard(&self, shard: ShardId) -> Vec<FileId> {
        let Some(m) = &self.cluster else {
            return Vec::new();
        };
        let n = m.machine.config().shards;
        self.files
            .files
            .iter()
            .filter(|(_, f)| shard_of(f.path.as_str(), n) == shard)
            .map(|(id, _)| *id)
            .collect()
    }

    /// May a request about `path` (beneath the root) be served here now?
    pub(super) fn shard_check_path(&self, now: Instant, path: &str) -> Result<(), Failure> {
        match &self.cluster {
            None => Ok(()),
            Some(m) => placement_answer(m.machine.placement(now, path), path),
        }
    }

    /// A map or set-length op opened `full`, which is the file open here as
    /// `known`: its shard is still served here (the open took time), and in
    /// a cluster no file is reached by two paths, which could lie in two
    /// shards (a symlink or a hard link inside the root).
    pub(super) fn shard_check_opened(
        &self,
        now: Instant,
        full: &crate::path::ExportPath,
        known: &crate::path::ExportPath,
    ) -> Result<(), Failure> {
        if self.cluster.is_some() && full != known {
            return Err(Failure::new(
                ErrorCode::BadPath,
                format!(
                    "{full} is the file {known} under another name (a link); \
                     a cluster serves each file by one path only"
                ),
            ));
        }
        self.shard_check_path(now, full.as_str())
    }

    /// May a request on open file `file` be served here now, for `use_`?
    pub(super) fn shard_check_file(
        &self,
        now: Instant,
        file: FileId,
        use_: ShardUse,
    ) -> Result<(), Failure> {
        let (Some(m), Some(shard)) = (&self.cluster, self.shard_of_file(file)) else {
            return Ok(());
        };
        let path = self.files.get(file).path.as_str();
        match m.machine.shard_placement(now, shard) {
            Placement::Local(_) if use_ == ShardUse::Land => Ok(()),
            other => placement_answer(other, path),
        }
    }

    /// Whether write ownership of `file` waits for its shard's takeover grace.
    pub(super) fn shard_in_grace(&self, now: Instant, file: FileId) -> bool {
        let (Some(m), Some(shard)) = (&self.cluster, self.shard_of_file(file)) else {
            return false;
        };
        matches!(m.machine.shard_placement(now, shard), Placement::Local(l) if now < l.writes_from)
    }

    /// A shard (again) this member's: the shared storage may have changed
    /// under files still open here, so no version this member handed out
    /// for them before may vouch for their bytes now.
    fn renumber_shard(&mut self, shard: ShardId) {
        for file in self.files_of_shard(shard) {
            let v = self.bump_version();
            let f = self.files.get_mut(file);
            f.base_version = v;
            for e in f.pages.values_mut() {
                e.version = v;
            }
        }
    }

    /// Stops serving `shard` at once (see the module documentation).
    fn lose_shard(&mut self, now: Instant, shard: ShardId, reason: &str) {
        if let Some(m) = &mut self.cluster {
            m.drains.remove(&shard);
        }
        let files = self.files_of_shard(shard);
        if files.is_empty() {
            return;
        }
        let mut sessions: BTreeSet<SessionId> = BTreeSet::new();
        for (sid, s) in &self.sessions {
            if s.mappings.values().any(|m| files.contains(&m.file))
                || files.iter().any(|f| s.held.contains_key(f))
            {
                sessions.insert(*sid);
            }
        }
        let mut dropped = false;
        for &file in &files {
            let path = self.files.get(file).path.clone();
            dropped |= !self.disk.unsynced_writers(file).is_empty();
            self.disk.abandon(
                file,
                StoreError::Io(format!(
                    "{path}: this member stopped serving the file's shard ({reason}); \
                     what was written to it and not synced is lost"
                )),
            );
        }
        if dropped {
            // Bytes acknowledged and not yet on the disk are gone: for their
            // writers this is a crash of the member, and they may be any
            // session's, an expired one's too, whose client cannot be found
            // by its session. So the member acts as a restarted server
            // does: a new epoch, every session ended, and every client's
            // resume answered `ServerRestarted`, after which it reports
            // what it wrote since its last sync.
            self.epoch = self.rng.next_u64() | 1;
            sessions.extend(self.sessions.keys().copied());
        }
        let why = if dropped {
            "the member lost the shard of a file with data not yet on the disk, as in a crash"
        } else {
            "the member lost the shard of a file it mapped"
        };
        for sid in sessions {
            self.end_session(now, sid, why);
        }
        for file in files {
            // Its state here ends with the shard; a later open starts afresh.
            self.files.detach(file);
            self.forget_file_if_unused(file);
        }
    }

    /// Begins handing `shard` over: revoke every copy of its pages.
    fn start_drain(&mut self, now: Instant, shard: ShardId, epoch: i64) {
        let Some(m) = &mut self.cluster else { return };
        m.drains.insert(
            shard,
            Drain {
                epoch,
                revocations: 0,
                syncs: None,
                retry_at: None,
            },
        );
        for file in self.files_of_shard(shard) {
            let wanted: Vec<_> = self
                .files
                .get(file)
                .pages
                .iter()
                .flat_map(|(p, e)| {
                    let owner = e
                        .owner
                        .map(|o| (o, *p, RevKind::Recall { downgrade: false }));
                    let sharers = e.sharers.iter().map(|s| (*s, *p, RevKind::Invalidate));
                    owner.into_iter().chain(sharers)
                })
                .collect();
            if !wanted.is_empty() {
                self.send_revocations(now, RevWaiter::Drain(shard), file, wanted);
            }
        }
        // Operations waiting out the takeover grace will get no write
        // ownership here, and the drain waits for every operation on the
        // shard's files: they are answered busy (the client asks again, and
        // is sent on once the shard is released).
        let files = self.files_of_shard(shard);
        let waiting: Vec<_> = self
            .grace_waiting
            .iter()
            .copied()
            .filter(|id| {
                self.ops
                    .get(id)
                    .and_then(|o| o.file)
                    .is_some_and(|f| files.contains(&f))
            })
            .collect();
        self.grace_waiting.retain(|id| !waiting.contains(id));
        for id in waiting {
            self.fail_op(
                id,
                Failure::new(
                    ErrorCode::Busy,
                    "the file is being handed over to another member; try again",
                ),
            );
        }
    }

    pub(super) fn drain_revocation_sent(&mut self, shard: ShardId) {
        if let Some(d) = self.cluster.as_mut().and_then(|m| m.drains.get_mut(&shard)) {
            d.revocations += 1;
        }
    }

    pub(super) fn drain_revocation_done(&mut self, shard: ShardId) {
        if let Some(d) = self.cluster.as_mut().and_then(|m| m.drains.get_mut(&shard)) {
            d.revocations = d.revocations.saturating_sub(1);
        }
    }

    /// An fsync without an operation finished: maybe a drain's.
    pub(super) fn drain_sync_done(&mut self, id: StoreId) {
        if let Some(m) = &mut self.cluster {
            for d in m.drains.values_mut() {
                if let Some(s) = &mut d.syncs {
                    s.remove(&id);
                }
            }
        }
    }

    /// Moves every drain on as far as it goes.
    pub(super) fn check_drains(&mut self, now: Instant) {
        let Some(m) = &self.cluster else { return };
        let shards: Vec<(ShardId, i64)> = m.drains.iter().map(|(s, d)| (*s, d.epoch)).collect();
        for (shard, epoch) in shards {
            let files = self.files_of_shard(shard);
            let d = &self.cluster.as_ref().expect("checked").drains[&shard];
            if d.revocations > 0 || d.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            // Operations still running on the files (a write-back being
            // written) finish first; none can grant: the shard is draining.
            let busy = files.iter().any(|f| self.files.get(*f).ops > 0);
            match &d.syncs {
                None if !busy => {
                    let dirty: Vec<FileId> = files
                        .iter()
                        .copied()
                        .filter(|f| !self.disk.is_idle(*f))
                        .collect();
                    let syncs = dirty.into_iter().map(|f| self.disk.sync(f, None)).collect();
                    let d = self.drain_mut(shard);
                    d.syncs = Some(syncs);
                }
                Some(s) if s.is_empty() => {
                    match files.iter().find_map(|f| self.disk.any_failure(*f)) {
                        // Not handed over with data the disk refused: the
                        // disk writes it again, and the drain syncs again
                        // after that (its writers get the error at their
                        // syncs meanwhile). Should the member go first, the
                        // shard is lost the unclean way.
                        Some(error) => {
                            self.events.push_back(ServerEvent::DiskTrouble {
                                path: None,
                                error: StoreError::Io(format!(
                                    "shard {shard} cannot be handed over yet: {error}"
                                )),
                            });
                            let d = self.drain_mut(shard);
                            d.syncs = None;
                            d.retry_at = Some(now + super::STORE_RETRY);
                            self.schedule_store_retry(now);
                        }
                        None => {
                            let m = self.cluster.as_mut().expect("checked");
                            m.drains.remove(&shard);
                            m.machine.handle_shard_drained(now, shard, epoch);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn drain_mut(&mut self, shard: ShardId) -> &mut Drain {
        self.cluster
            .as_mut()
            .and_then(|m| m.drains.get_mut(&shard))
            .expect("a drain in progress")
    }
}

/// The answer to a request about `path`, by where its shard is served.
fn placement_answer(placement: Placement, path: &str) -> Result<(), Failure> {
    match placement {
        Placement::Local(l) if !l.draining => Ok(()),
        Placement::Local(_) => Err(Failure::new(
            ErrorCode::Busy,
            format!("{path} is being handed over to another member; try again"),
        )),
        Placement::Remote { address, .. } => Err(Failure::new(ErrorCode::Moved, address)),
        Placement::Unowned { shard } => Err(Failure::new(
            ErrorCode::Busy,
            format!("no member serves shard {shard} (of {path}) yet; try again"),
        )),
    }
}
