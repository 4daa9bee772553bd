//! Graceful shutdown: recall every owned page, put every byte on the disk,
//! tell every client, wait for them to confirm, record the run state.
//!
//! 1. **Recalling.** Every owner is recalled (a downgrade: its dirty bytes
//!    come back). From now on no operation grants write ownership or writes
//!    (exclusive fetches and atomics are answered `shutting_down`).
//! 2. **Syncing.** Every file with bytes not yet durable is fsynced (what the
//!    disk refused is written again first).
//! 3. **Farewell.** Every client gets a `Goodbye` saying whether every file
//!    was synced; a client confirms with `Bye` once it has stopped trusting
//!    its cache. The server waits for them, at most [`FAREWELL`] (and never
//!    longer than a lease).
//! 4. **Recording.** The run state records how long the next run must wait
//!    before it grants write ownership: what is left of the leases of
//!    clients that did not confirm (nothing, when all did), and of the grace
//!    this run started with. Then every connection closes and
//!    [`ServerEvent::ShutdownComplete`] follows.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;

use crate::Instant;
use crate::path::ExportPath;
use crate::protocol::{ErrorCode, Goodbye, Message};
use crate::store::{StoreError, StoreId};

use super::conns::{ConnId, ConnState};
use super::{Server, ServerEvent, Timer};

/// The longest a shutdown waits for clients to confirm its goodbye.
pub(crate) const FAREWELL: Duration = Duration::from_secs(1);

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Stage {
    Recalling,
    Syncing,
    Farewell,
    Recording,
    Done,
}

#[derive(Debug)]
pub(crate) struct Shutdown {
    stage: Stage,
    /// Shutdown recalls not yet answered.
    recalls: usize,
    /// Its fsyncs not yet finished.
    syncs: BTreeSet<StoreId>,
    /// Files that could not be made durable, and why.
    failures: Vec<(ExportPath, StoreError)>,
    /// The grace the next run needs, fixed when the farewell ends.
    grace: Duration,
}

impl Server {
    /// Begins a graceful shutdown (see the module documentation of
    /// `shutdown`): no new sessions, every dirty page is recalled and every
    /// file synced, every client gets a `Goodbye`, and
    /// [`ServerEvent::ShutdownComplete`] follows.
    ///
    /// A cluster member first leaves the cluster: every shard it owns is
    /// drained and handed over (docs/CLUSTER.md, section 3).
    pub fn begin_shutdown(&mut self, now: Instant) {
        if !self.leave_cluster_first(now) {
            self.begin_local_shutdown(now);
        }
    }

    /// The shutdown of this server's own state (after a cluster leave).
    pub(super) fn begin_local_shutdown(&mut self, now: Instant) {
        if self.shutdown.is_none() {
            self.shutdown = Some(Shutdown {
                stage: Stage::Recalling,
                recalls: 0,
                syncs: BTreeSet::new(),
                failures: Vec::new(),
                grace: Duration::ZERO,
            });
            self.recall_all_owned(now);
            self.run_ready(now);
        }
    }

    /// Whether shutdown has completed.
    pub fn is_shut_down(&self) -> bool {
        self.shutdown
            .as_ref()
            .is_some_and(|s| s.stage == Stage::Done)
    }

    /// Whether shutdown waits for its final run state to be recorded.
    pub(super) fn final_state_due(&self) -> bool {
        self.shutdown
            .as_ref()
            .is_some_and(|s| s.stage == Stage::Recording)
    }

    /// Whether shutdown has begun.
    pub(super) fn is_stopping(&self) -> bool {
        self.shutdown.is_some()
    }

    pub(super) fn shutdown_recall_sent(&mut self) {
        if let Some(sd) = &mut self.shutdown {
            sd.recalls += 1;
        }
    }

    pub(super) fn shutdown_recall_done(&mut self) {
        if let Some(sd) = &mut self.shutdown {
            sd.recalls -= 1;
        }
    }

    /// An fsync without an operation finished: one of shutdown's, or one
    /// the disk started on its own.
    pub(super) fn shutdown_sync_done(&mut self, _now: Instant, id: StoreId) {
        if let Some(sd) = &mut self.shutdown {
            sd.syncs.remove(&id);
        }
    }

    /// Moves shutdown on as far as it goes.
    pub(super) fn check_shutdown(&mut self, now: Instant) {
        loop {
            let Some(sd) = &self.shutdown else { return };
            match sd.stage {
                Stage::Recalling if sd.recalls == 0 => {
                    // Every owner was recalled when shutdown began, and no
                    // operation grants ownership after that.
                    debug_assert!(
                        self.files
                            .files
                            .values()
                            .all(|f| f.pages.values().all(|p| p.owner.is_none())),
                        "an owner appeared during shutdown"
                    );
                    self.shutdown_sync_round();
                }
                Stage::Syncing if sd.syncs.is_empty() => {
                    // Operations still writing (a write-back of data answered
                    // to a recall) need another round.
                    if self.ops.values().any(|o| o.store_waits > 0) {
                        return;
                    }
                    let failing = self.disk.failing_files();
                    let pending: Vec<_> = self
                        .disk
                        .unsynced_files()
                        .into_iter()
                        .filter(|f| !failing.contains(f))
                        .collect();
                    if pending.is_empty() {
                        self.farewell(now);
                    } else {
                        self.shutdown_sync_round();
                    }
                }
                _ => return,
            }
        }
    }

    fn shutdown_sync_round(&mut self) {
        let files = self.disk.unsynced_files();
        let mut ids = BTreeSet::new();
        for f in files {
            ids.insert(self.disk.sync(f, None));
        }
        let sd = self.shutdown.as_mut().expect("stopping");
        sd.syncs = ids;
        sd.stage = Stage::Syncing;
    }

    /// Tells every client, and waits for them to confirm.
    fn farewell(&mut self, now: Instant) {
        let failures: Vec<(ExportPath, StoreError)> = self
            .disk
            .failing_files()
            .into_iter()
            .filter_map(|f| {
                let path = self.files.files.get(&f)?.path.clone();
                Some((path, self.disk.any_failure(f)?))
            })
            .collect();
        let message = if failures.is_empty() {
            "the server is shutting down; every file was synced".to_string()
        } else {
            let list: Vec<String> = failures.iter().map(|(p, e)| format!("{p}: {e}")).collect();
            format!(
                "the server is shutting down; {} file(s) could not be written to its disk ({})",
                failures.len(),
                list.join("; ")
            )
        };
        let code = if failures.is_empty() {
            ErrorCode::ShuttingDown
        } else {
            ErrorCode::Io
        };
        for (path, error) in &failures {
            self.events.push_back(ServerEvent::DiskTrouble {
                path: Some(path.clone()),
                error: error.clone(),
            });
        }
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, ConnState::Established(_)))
            .map(|(id, _)| *id)
            .collect();
        for c in &conns {
            self.push(
                *c,
                &Message::Goodbye(Goodbye {
                    code,
                    message: Bytes::from(message.clone()),
                }),
            );
        }
        let sd = self.shutdown.as_mut().expect("stopping");
        sd.failures = failures;
        sd.stage = Stage::Farewell;
        let wait = FAREWELL.min(self.config.lease);
        self.timers.insert((now + wait, Timer::Farewell));
        self.farewell_check(now);
    }

    /// A session ended during the farewell: maybe every client confirmed.
    pub(super) fn farewell_check(&mut self, now: Instant) {
        let waiting = self.sessions.values().any(|s| s.conn.is_some());
        if self
            .shutdown
            .as_ref()
            .is_some_and(|s| s.stage == Stage::Farewell)
            && !waiting
        {
            self.farewell_over(now);
        }
    }

    /// The farewell ends: record what the next run must know.
    pub(super) fn farewell_over(&mut self, now: Instant) {
        let Some(sd) = &self.shutdown else { return };
        if sd.stage != Stage::Farewell {
            return;
        }
        // Clients that did not confirm may trust their leases until these
        // run out, and clients of an earlier run until the grace this run
        // started with is over.
        let grace = self
            .sessions
            .values()
            .map(|s| s.lease_expiry.saturating_duration_since(now))
            .max()
            .unwrap_or(Duration::ZERO)
            .max(self.grace_until.saturating_duration_since(now));
        let sd = self.shutdown.as_mut().expect("stopping");
        sd.grace = grace;
        sd.stage = Stage::Recording;
        if !self.records_run_state() {
            self.run_state_final_recorded();
        } else {
            self.record_run_state(false);
        }
    }

    /// The grace a clean shutdown leaves the next run.
    pub(super) fn shutdown_grace(&self) -> Duration {
        self.shutdown
            .as_ref()
            .map_or(self.config.lease, |s| s.grace)
    }

    pub(super) fn run_state_final_recorded(&mut self) {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for c in conns {
            self.close_conn(c);
        }
        let mut unwritten = Vec::new();
        if let Some(sd) = &mut self.shutdown {
            sd.stage = Stage::Done;
            unwritten = sd.failures.iter().map(|(p, _)| p.clone()).collect();
        }
        self.events
            .push_back(ServerEvent::ShutdownComplete { unwritten });
    }
}
