//! `--member`: the server is a cluster member (docs/CLUSTER.md) beside a
//! second member, "b", that owns shards and serves them to one writer of
//! its own: while b may grant writes of a shard (it holds it, and the
//! takeover grace has passed), that writer writes a cell of one of its
//! files and syncs it, straight to the shared store, and the write joins
//! the history as an operation of one more client. A server that serves a
//! shard it no longer owns then shows a stale read or a lost write to the
//! linearizability checker. Faults of the
//! membership: the server is cut off from the coordinator for a while
//! (sometimes longer than its etcd lease: it loses its shards, ends the
//! sessions on them and takes them again with the takeover grace), and
//! "b" joins or leaves (planned moves: the server drains shards and takes
//! them back). Files of b's shards answer `moved`, which the operations
//! record as failures. Before the liveness phase the cut heals and b
//! leaves, so every file is served again and read back.

use std::time::Duration;

use rmmap_core::Instant;
use rmmap_core::client::MappingId;
use rmmap_core::cluster::{ClusterConfig, OwnershipEvent, Placement};

use crate::history::{OpKind, OpRecord, Outcome, encode_value};
use crate::workload::Layout;

use super::Sim;
use super::faults::partition_length;

/// The etcd lease TTL of the members in the simulation.
const MEMBER_TTL: Duration = Duration::from_secs(3);

/// The members' safety margin: storage writes must land within it, so the
/// slow disk of this mode is kept below it.
pub(super) const MEMBER_MARGIN: Duration = Duration::from_millis(500);

/// The membership side of a run.
#[derive(Debug, Default)]
pub(super) struct Membership {
    /// The server is cut off from the coordinator until then.
    cut_until: Option<Instant>,
    /// "b" is a member (its index among the coordinator's other members).
    b: Option<usize>,
    /// How often b joined (bounded, each join adds a machine).
    joins: u32,
    /// The server lost shards and the store still runs writes it issued
    /// before: the checker's new run begins once they have landed.
    loss_pending: bool,
    /// Writes by b's writer so far (numbers its values).
    b_writes: u64,
}

impl Membership {
    /// Whether b is a member (its writer may have shards to write to).
    pub(super) fn b_may_write(&self) -> bool {
        self.b.is_some()
    }
}

/// The cluster configuration of a member of the simulation.
pub(super) fn member_config(id: &str, client_lease: Duration) -> ClusterConfig {
    ClusterConfig {
        shards: 4,
        lease_ttl: MEMBER_TTL,
        safety_margin: MEMBER_MARGIN,
        client_lease,
        ..ClusterConfig::new(id, format!("{id}.sim:7878"))
    }
}

impl Sim<'_> {
    /// A fault of the membership.
    pub(super) fn inject_member_fault(&mut self) {
        let now = self.cluster.now;
        match self.rng.below(3) {
            0 if self.member.cut_until.is_none() => {
                let d = if self.rng.chance(500) {
                    partition_length(&mut self.rng, self.cfg.lease)
                } else {
                    self.rng.micros(
                        MEMBER_TTL.as_micros() as u64,
                        MEMBER_TTL.as_micros() as u64 * 3,
                    )
                };
                self.trace
                    .line(format!("{now:?} fault member cut from etcd for {d:?}"));
                self.stats.member_cuts += 1;
                self.member.cut_until = Some(now + d);
                self.cluster.cut_coordinator(true);
            }
            1 if self.member.b.is_none() && self.member.joins < 3 => {
                self.trace.line(format!("{now:?} fault member b joins"));
                self.stats.member_moves += 1;
                self.member.joins += 1;
                let b = self.cluster.add_member(member_config("b", self.cfg.lease));
                self.member.b = Some(b);
            }
            2 if self.member.b.is_some() => self.b_leaves(),
            _ => return,
        }
        self.after_step();
    }

    /// b's writer writes one cell of a file whose shard b may grant writes
    /// of now, and syncs it: a write of client `clients` (one more than the
    /// simulated clients), completed at once.
    pub(super) fn b_writes(&mut self) {
        let (Some(b), Some(c)) = (self.member.b, self.cluster.coordination.as_ref()) else {
            return;
        };
        let now = self.cluster.now;
        let files: Vec<usize> = (0..self.layout.pages.len())
            .filter(|&f| {
                matches!(
                    c.others[b].placement(now, &Layout::path(f)),
                    Placement::Local(l) if !l.draining && now >= l.writes_from
                )
            })
            .collect();
        if files.is_empty() {
            return;
        }
        let file = files[self.rng.below(files.len() as u64) as usize];
        let cells: Vec<_> = self
            .history
            .cells
            .iter()
            .copied()
            .filter(|c| c.file == file)
            .collect();
        let cell = cells[self.rng.below(cells.len() as u64) as usize];
        let writer = self.cfg.clients;
        let value = encode_value(writer, self.member.b_writes, 0);
        self.member.b_writes += 1;
        let path = Layout::path(file);
        let store = &self.cluster.store;
        let mut bytes = store.contents(&path).unwrap_or_default();
        let at = cell.offset as usize;
        if bytes.len() < at + 8 {
            return;
        }
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        // Written and synced: the file as it is now is durable.
        store.insert(&path, bytes);
        let (invoke_seq, complete_seq) = (self.next_seq(), self.next_seq());
        let rec = OpRecord {
            id: self.history.ops.len(),
            client: writer,
            incarnation: 0,
            end_incarnation: 0,
            segment: self.segment,
            end_segment: self.segment,
            mapping: MappingId(0),
            invoke_at: now,
            complete_at: Some(now),
            invoke_seq,
            complete_seq: Some(complete_seq),
            kind: OpKind::Write {
                cells: vec![(cell, value)],
            },
            outcome: Outcome::Ok,
            read: Vec::new(),
            applied: false,
        };
        self.trace.line(format!("member b's writer: {rec}"));
        self.stats.member_writes += 1;
        self.history.ops.push(rec);
    }

    fn b_leaves(&mut self) {
        let Some(b) = self.member.b.take() else {
            return;
        };
        let now = self.cluster.now;
        self.trace.line(format!("{now:?} fault member b leaves"));
        self.stats.member_moves += 1;
        if let Some(c) = self.cluster.coordination.as_mut() {
            c.others[b].leave(now);
        }
        self.cluster.flush();
    }

    /// Ends a cut whose time has come.
    pub(super) fn member_tick(&mut self) {
        if self.member.cut_until.is_some_and(|t| t <= self.cluster.now) {
            let now = self.cluster.now;
            self.trace
                .line(format!("{now:?} member back in touch with etcd"));
            self.member.cut_until = None;
            self.cluster.cut_coordinator(false);
        }
    }

    /// A shard loss drops what the server held of its files and had not
    /// written: for the checker, the server's run ends there as in a kill
    /// (the store keeps what was written), and a new one begins.
    pub(super) fn note_shard_losses(&mut self) {
        let Some(c) = self.cluster.coordination.as_mut() else {
            return;
        };
        let lost = std::mem::take(&mut c.events)
            .iter()
            .filter(|e| matches!(e, OwnershipEvent::ShardLost { .. }))
            .count();
        if lost > 0 {
            let now = self.cluster.now;
            self.trace.line(format!(
                "{now:?} member lost {lost} shard(s): a new run for the checker"
            ));
            self.stats.member_losses += 1;
            self.new_server_run(false, false);
            self.member.loss_pending = true;
            // Unlike a restart, a loss ends only the sessions on the lost
            // shards (or every session, when it dropped acknowledged data):
            // a session the member kept belongs to the new run, with
            // nothing of the lost files in its cache.
            for i in self.live() {
                let n = &self.cluster.nodes[i];
                let server = &self.cluster.server;
                if n.client.session_epoch() == Some(server.epoch())
                    && n.client.session_id().is_some_and(|s| server.has_session(s))
                {
                    let inc = self.clients[i].incarnation;
                    self.history.inc_segment.insert((i, inc), self.segment);
                }
            }
        }
        // Writes handed to the store before the loss still land (the
        // safety margin covers them, and the simulated disk is kept faster
        // than the margin in this mode; nothing of the lost files is served
        // before a takeover grace): the image the new run starts from is
        // the store's once they have.
        if self.member.loss_pending && self.cluster.disk_busy() == 0 {
            self.member.loss_pending = false;
            let now = self.cluster.now;
            self.trace.line(format!(
                "{now:?} the store is quiet: the new run's image taken"
            ));
            self.retake_restart_image();
        }
    }

    /// When the current cut ends.
    pub(super) fn member_next_change(&self) -> Option<Instant> {
        self.member.cut_until
    }

    /// Faults stop: the cut heals and b leaves.
    pub(super) fn member_heal(&mut self) {
        if self.member.cut_until.is_some() {
            self.member.cut_until = Some(self.cluster.now);
            self.member_tick();
        }
        self.b_leaves();
    }
}
