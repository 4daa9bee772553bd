//! Driving the cluster: issuing operations, advancing time step by step,
//! and recording what comes out.

use std::time::Duration;

use rmmap_core::client::{ClientEvent, Completion, Event, MapOptions, OpError, OpId};
use rmmap_core::protocol::AtomicOp;

use crate::checker::Violation;
use crate::history::{OpKind, OpRecord, Outcome};
use crate::workload::{Layout, Planned};

use super::{Pending, Sim, SlotState};

/// Steps one `advance` may take before the run is declared stuck.
const MAX_STEPS_PER_ADVANCE: u64 = 200_000;

impl Sim<'_> {
    /// The server run whose state client `i` acts on: the one its current
    /// session was made in (it may not know yet that the server restarted).
    pub(super) fn session_segment(&self, i: usize) -> u32 {
        let inc = self.clients[i].incarnation;
        self.history
            .inc_segment
            .get(&(i, inc))
            .copied()
            .unwrap_or(self.segment)
    }

    pub(super) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Issues a random operation on client `i`, if it has a ready mapping
    /// and room for another outstanding operation.
    pub(super) fn issue(&mut self, i: usize) {
        let c = &self.clients[i];
        if c.outstanding >= self.cfg.max_outstanding {
            return;
        }
        let files: Vec<usize> = (0..c.slots.len())
            .filter(|f| c.slots[*f].state == SlotState::Ready)
            .collect();
        if files.is_empty() {
            return;
        }
        self.clients[i].next_seq += 1;
        let seq = self.clients[i].next_seq;
        let seen = self.clients[i].last_seen.clone();
        let last = |cell| seen.get(&cell).copied().unwrap_or(0);
        let planned = if self.cfg.waits && self.rng.below(10) == 0 {
            self.layout.plan_wait(&mut self.rng, &files, last)
        } else {
            self.layout.plan(&mut self.rng, i, seq, &files, last)
        };
        self.issue_planned(i, planned);
    }

    /// Issues `planned` on client `i` and records it.
    pub(super) fn issue_planned(&mut self, i: usize, planned: Planned) {
        let file = match &planned {
            Planned::Read { file, .. } | Planned::Write { file, .. } | Planned::Sync { file } => {
                *file
            }
            Planned::Swap { cell, .. } | Planned::Cas { cell, .. } | Planned::Wait { cell, .. } => {
                cell.file
            }
        };
        let waiting_out = match &planned {
            Planned::Wait { current, .. } => Some(*current),
            _ => None,
        };
        let slot = &self.clients[i].slots[file];
        let (SlotState::Ready, Some(m)) = (&slot.state, slot.mapping) else {
            return;
        };
        let now = self.cluster.now;
        let client = &mut self.cluster.nodes[i].client;
        let (r, kind) = match planned {
            Planned::Read { file, offset, len } => (
                client.read(now, m, offset, len).map(OpId::from),
                OpKind::Read {
                    offset,
                    cells: self.layout.cells_in(file, offset, len),
                },
            ),
            Planned::Write {
                offset,
                data,
                cells,
                ..
            } => (
                client.write(now, m, offset, data).map(OpId::from),
                OpKind::Write { cells },
            ),
            Planned::Sync { file } => (client.sync(now, m).map(OpId::from), OpKind::Sync { file }),
            Planned::Swap { cell, new } => (
                client
                    .atomic(now, m, cell.offset, AtomicOp::Swap(new))
                    .map(OpId::from),
                OpKind::Swap { cell, new },
            ),
            Planned::Cas {
                cell,
                expected,
                new,
            } => (
                client
                    .atomic(
                        now,
                        m,
                        cell.offset,
                        AtomicOp::CompareExchange { expected, new },
                    )
                    .map(OpId::from),
                OpKind::Cas {
                    cell,
                    expected,
                    new,
                },
            ),
            Planned::Wait {
                cell,
                current,
                timeout,
            } => (
                client
                    .wait_while(now, m, cell.offset, current, timeout)
                    .map(OpId::from),
                OpKind::Read {
                    offset: cell.offset,
                    cells: vec![cell],
                },
            ),
        };
        let id = self.history.ops.len();
        let invoke_seq = self.next_seq();
        let rec = OpRecord {
            id,
            client: i,
            incarnation: self.clients[i].incarnation,
            end_incarnation: self.clients[i].incarnation,
            segment: self.session_segment(i),
            end_segment: self.session_segment(i),
            mapping: m,
            invoke_at: now,
            complete_at: None,
            invoke_seq,
            complete_seq: None,
            kind,
            outcome: Outcome::Pending,
            read: Vec::new(),
            applied: false,
        };
        match r {
            Ok(op) => {
                self.trace.line(format!("invoke {rec}"));
                self.history.ops.push(rec);
                self.pending.insert((i, op), Pending::Op(id));
                if let Some(current) = waiting_out {
                    self.waits.insert(id, current);
                }
                self.clients[i].outstanding += 1;
                self.stats.ops += 1;
            }
            Err(e) => {
                self.trace.line(format!("rejected {rec}: {}", e.kind()));
                if let OpError::SessionLost(_) = e {
                    self.mark_lost(i, m);
                }
            }
        }
        self.cluster.flush();
        self.after_step();
    }

    /// Advances virtual time by `dt`, one cluster step at a time, stopping
    /// where partitions and periods of disk faults end.
    pub(super) fn advance(&mut self, dt: Duration) {
        self.advance_until(dt, |_| false);
    }

    /// Like [`Sim::advance`], but stops early, right after the step in
    /// which `done` becomes true; says whether it did.
    pub(super) fn advance_until(&mut self, dt: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let until = self.cluster.now + dt;
        loop {
            if done(self) {
                return true;
            }
            let now = self.cluster.now;
            self.member_tick();
            let disk_change = self.disk.borrow().next_change(now);
            let stop = self
                .parts
                .iter()
                .filter_map(|p| p.next_change(now))
                .chain(disk_change)
                .chain(self.member_next_change())
                .fold(until, |a, b| a.min(b));
            let mut n = 0;
            while self.cluster.step(stop) {
                self.after_step();
                if done(self) {
                    return true;
                }
                n += 1;
                if n > MAX_STEPS_PER_ADVANCE {
                    let d = format!(
                        "more than {MAX_STEPS_PER_ADVANCE} steps without reaching {stop:?}"
                    );
                    self.violations
                        .push(Violation::new("stuck", None, d, Vec::new()));
                    self.cluster.now = until;
                    return done(self);
                }
            }
            if self.cluster.now < stop {
                self.cluster.run_for(stop - self.cluster.now);
            }
            self.after_step();
            if stop >= until {
                return done(self);
            }
        }
    }

    /// After anything happened: re-apply partitions, check invariants,
    /// record completions and events, keep mappings in shape.
    pub(super) fn after_step(&mut self) {
        self.steps += 1;
        self.note_shard_losses();
        let now = self.cluster.now;
        for i in 0..self.parts.len() {
            self.parts[i].apply(&mut self.cluster, i, now);
            self.cluster.nodes[i].unreachable |= self.stopping;
        }
        if self.disk.borrow_mut().apply(&self.cluster.store, now) {
            self.trace.line(format!("{now:?} disk fault period over"));
        }
        if let Err(e) = self.cluster.server.check_invariants()
            && !self
                .violations
                .iter()
                .any(|v| v.check == "server-invariant")
        {
            self.violations.push(Violation::new(
                "server-invariant",
                None,
                format!("at {now:?}: {e}"),
                Vec::new(),
            ));
        }
        self.check_caches();
        let (log, frames) = {
            let mut f = self.frames.borrow_mut();
            (std::mem::take(&mut f.log), std::mem::take(&mut f.frames))
        };
        for l in frames {
            self.trace.note(format!("{now:?} {l}"));
        }
        let requests = std::mem::take(&mut self.disk.borrow_mut().requests);
        for l in requests {
            self.trace.note(format!("{now:?} {l}"));
        }
        for l in log {
            self.trace.line(format!("{now:?} {l}"));
        }
        self.drain();
        self.maintain_mappings();
    }

    fn drain(&mut self) {
        for i in 0..self.clients.len() {
            let events = std::mem::take(&mut self.cluster.nodes[i].events);
            for ev in events {
                self.on_event(i, ev);
            }
            let done = std::mem::take(&mut self.cluster.nodes[i].completions);
            for (op, result) in done {
                self.on_completion(i, op, result);
            }
        }
    }

    fn on_event(&mut self, i: usize, ev: Event) {
        let now = self.cluster.now;
        if self.clients[i].crashed {
            return;
        }
        match ev {
            Event::Connection(ClientEvent::SessionLost { reason, lost }) => {
                self.stats.sessions_lost += 1;
                let seq = self.next_seq();
                let inc = self.clients[i].incarnation;
                self.trace.line(format!(
                    "{now:?} c{i} session lost ({reason:?}) inc{inc} lost {lost:?}"
                ));
                let end = self.history.ended.entry((i, inc)).or_default();
                end.reason = Some(format!("{reason:?}"));
                end.seq = seq;
                for (m, _) in &lost {
                    end.told.insert(*m);
                }
                self.clients[i].incarnation += 1;
                for (m, _) in lost {
                    self.mark_lost(i, m);
                }
            }
            Event::Connection(ClientEvent::Connected { resumed }) => {
                self.stats.connects += 1;
                self.clients[i].connected_once = true;
                if !resumed {
                    let inc = self.clients[i].incarnation;
                    self.history.inc_segment.insert((i, inc), self.segment);
                }
                self.trace
                    .line(format!("{now:?} c{i} connected resumed={resumed}"));
            }
            Event::Connection(ClientEvent::Failed { reason }) => {
                let d = format!("client {i} failed for good at {now:?}: {reason}");
                self.violations
                    .push(Violation::new("client-failed", None, d, Vec::new()));
            }
            other => self.trace.line(format!("{now:?} c{i} {other:?}")),
        }
    }

    fn mark_lost(&mut self, i: usize, m: rmmap_core::client::MappingId) {
        for s in &mut self.clients[i].slots {
            if s.mapping == Some(m) && matches!(s.state, SlotState::Ready | SlotState::Opening) {
                s.state = SlotState::Lost;
            }
        }
    }

    fn on_completion(&mut self, i: usize, op: OpId, result: Result<Completion, OpError>) {
        let now = self.cluster.now;
        let Some(p) = self.pending.remove(&(i, op)) else {
            return;
        };
        match p {
            Pending::Map(f) => {
                let slot = &mut self.clients[i].slots[f];
                match result {
                    Ok(Completion::Mapped { mapping, .. }) => {
                        slot.state = SlotState::Ready;
                        slot.mapping = Some(mapping);
                        self.trace
                            .line(format!("{now:?} c{i} mapped f{f} as {mapping:?}"));
                    }
                    other => {
                        slot.state = SlotState::Idle;
                        slot.mapping = None;
                        if self.cfg.member {
                            slot.retry_at = Some(now + std::time::Duration::from_millis(100));
                        }
                        self.trace
                            .line(format!("{now:?} c{i} map f{f} failed: {other:?}"));
                    }
                }
            }
            Pending::Unmap(f) => {
                let slot = &mut self.clients[i].slots[f];
                slot.state = SlotState::Idle;
                slot.mapping = None;
                self.trace.line(format!(
                    "{now:?} c{i} unmapped f{f}: {:?}",
                    result.map(|_| ()).map_err(|e| e.kind())
                ));
            }
            Pending::Op(id) => {
                let seq = self.next_seq();
                self.clients[i].outstanding -= 1;
                let segment = self.session_segment(i);
                let inc_now = self.clients[i].incarnation;
                let rec = &mut self.history.ops[id];
                rec.complete_at = Some(now);
                rec.complete_seq = Some(seq);
                rec.end_segment = segment;
                rec.end_incarnation = inc_now;
                match result {
                    Ok(c) => {
                        rec.outcome = Outcome::Ok;
                        match c {
                            Completion::Read(b) => {
                                let OpKind::Read { offset, cells } = &rec.kind else {
                                    unreachable!("reads complete with Read")
                                };
                                for c in cells {
                                    let at = (c.offset - offset) as usize;
                                    let v = b.get(at..at + 8).map_or(u64::MAX, |w| {
                                        u64::from_le_bytes(w.try_into().expect("8"))
                                    });
                                    rec.read.push(v);
                                    self.clients[i].last_seen.insert(*c, v);
                                }
                            }
                            Completion::Atomic { previous, applied } => {
                                rec.read = vec![previous];
                                rec.applied = applied;
                            }
                            Completion::Waited(v) => {
                                let OpKind::Read { cells, .. } = &rec.kind else {
                                    unreachable!("waits are recorded as reads")
                                };
                                let waited_out = self.waits.remove(&id);
                                match v {
                                    // The new value: checked as a read.
                                    Some(v) => {
                                        debug_assert_ne!(Some(v), waited_out);
                                        rec.read = vec![v];
                                        self.clients[i].last_seen.insert(cells[0], v);
                                    }
                                    // It may never have seen the page:
                                    // nothing to check.
                                    None => rec.outcome = Outcome::Failed("timed_out".into()),
                                }
                            }
                            _ => {}
                        }
                        if let OpKind::Sync { file } = rec.kind {
                            // What a power loss now would leave of the file.
                            let image = self.durable_image(file);
                            self.history.synced_images.insert(id, image);
                        }
                    }
                    Err(e) => {
                        if matches!(rec.kind, OpKind::Sync { .. })
                            && matches!(e.kind(), "no_space" | "io")
                        {
                            self.stats.syncs_failed_on_disk += 1;
                        }
                        let rec = &mut self.history.ops[id];
                        rec.outcome = Outcome::Failed(e.kind().to_owned());
                        let m = rec.mapping;
                        if let OpError::SessionLost(l) = &e {
                            self.history.told_by_error.entry((i, m)).or_insert(seq);
                            if matches!(l.cause, rmmap_core::client::LossCause::WriteBackFailed(_))
                            {
                                let d = format!("client {i}: a write-back was refused: {e}");
                                self.violations.push(Violation::new(
                                    "write-back-refused",
                                    None,
                                    d,
                                    vec![id],
                                ));
                            }
                            self.mark_lost(i, m);
                        }
                    }
                }
                let line = format!("done {}", self.history.ops[id]);
                self.trace.line(line);
            }
        }
    }

    /// Maps what is not mapped, unmaps what lost writes.
    fn maintain_mappings(&mut self) {
        let now = self.cluster.now;
        for i in 0..self.clients.len() {
            if self.clients[i].crashed {
                continue;
            }
            for f in 0..self.clients[i].slots.len() {
                let slot = self.clients[i].slots[f].clone();
                let client = &mut self.cluster.nodes[i].client;
                match slot.state {
                    SlotState::Idle if slot.retry_at.is_some_and(|t| t > now) => {}
                    SlotState::Idle => {
                        let len = self.layout.len(f);
                        if let Ok(op) =
                            client.map(now, &Layout::path(f), 0..len, MapOptions::read_write())
                        {
                            self.pending.insert((i, op.id()), Pending::Map(f));
                            self.clients[i].slots[f].state = SlotState::Opening;
                        }
                    }
                    SlotState::Lost => {
                        let m = slot.mapping.expect("lost mappings exist");
                        match client.unmap(now, m) {
                            Ok(op) => {
                                self.pending.insert((i, op.id()), Pending::Unmap(f));
                                self.clients[i].slots[f].state = SlotState::Unmapping;
                            }
                            Err(_) => {
                                self.clients[i].slots[f] = super::Slot {
                                    state: SlotState::Idle,
                                    mapping: None,
                                    retry_at: None,
                                };
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        self.cluster.flush();
        // Immediate completions (an unmap of a lost mapping) come out now.
        let any = (0..self.clients.len()).any(|i| {
            !self.cluster.nodes[i].completions.is_empty()
                || !self.cluster.nodes[i].events.is_empty()
        });
        if any {
            self.drain();
            self.maintain_mappings();
        }
    }
}
