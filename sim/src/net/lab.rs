//! The state every part of a network-level run shares: the history being
//! recorded, the trace, and what each client host is doing.
//!
//! turmoil runs every host on one thread, one after another, so the lab
//! lives in an `Rc<RefCell<_>>` that host tasks borrow briefly (never across
//! an `.await`) and the controller borrows between steps. The order in which
//! the lab is borrowed is the real-time order of the run: one counter
//! (`seq`) numbers every invocation, completion, session end and restart.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::Bytes;
use rmmap_core::Instant;
use rmmap_core::client::{LossCause, MappingId};
use rmmap_core::store::MemStore;
use rmmap_tokio::{Client, ClientEvent, Mapping, OpError};
use tokio::sync::{Notify, broadcast};

use crate::checker::Violation;
use crate::history::{Cell, History, OpKind, OpRecord, Outcome, Restart, cell_values};
use crate::trace::Trace;
use crate::workload::{Layout, Planned};

use super::NetStats;

/// The lab, shared by the controller and every host.
pub(crate) type LabRef = Rc<RefCell<Lab>>;

/// Where a client host's mapping of one file stands.
#[derive(Clone, Debug)]
pub(crate) enum Slot {
    /// Not mapped: the maintainer maps it.
    Idle,
    /// A map is in flight.
    Opening,
    /// Mapped and usable.
    Ready(Mapping),
    /// It lost writes: the maintainer unmaps it.
    Lost(Mapping),
    /// An unmap is in flight.
    Unmapping,
}

/// An operation waiting for its client host to run it.
#[derive(Clone, Debug)]
pub(crate) struct Posted {
    /// What to do.
    pub(crate) op: Planned,
    /// The scenario operation it comes from, if any.
    pub(crate) script: Option<usize>,
    /// The logical client it was planned for (values name it).
    pub(crate) cid: usize,
}

/// One client host: its current process, if it runs.
pub(crate) struct HostState {
    /// Times it booted.
    pub(crate) boots: u32,
    /// The logical client (history id) of the running process.
    pub(crate) cid: Option<usize>,
    /// The rmmap client, once its first handshake completed.
    pub(crate) client: Option<Client>,
    /// Its connection events.
    events: Option<broadcast::Receiver<ClientEvent>>,
    /// One mapping per file.
    pub(crate) slots: Vec<Slot>,
    /// Operations invoked and not completed.
    pub(crate) outstanding: usize,
    /// Operations posted by the controller, not yet started.
    pub(crate) inbox: VecDeque<Posted>,
    /// Wakes the host's executor.
    pub(crate) work: Rc<Notify>,
    /// Wakes the host's mapping maintainer.
    pub(crate) maint: Rc<Notify>,
}

impl HostState {
    fn new(files: usize) -> Self {
        HostState {
            boots: 0,
            cid: None,
            client: None,
            events: None,
            slots: vec![Slot::Idle; files],
            outstanding: 0,
            inbox: VecDeque::new(),
            work: Rc::new(Notify::new()),
            maint: Rc::new(Notify::new()),
        }
    }

    /// Files with a usable mapping.
    pub(crate) fn ready_files(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|f| matches!(self.slots[*f], Slot::Ready(_)))
            .collect()
    }

    /// Connected, every file mapped, nothing in flight or waiting.
    pub(crate) fn quiet(&self) -> bool {
        self.client.as_ref().is_some_and(|c| c.is_connected())
            && self.slots.iter().all(|s| matches!(s, Slot::Ready(_)))
            && self.outstanding == 0
            && self.inbox.is_empty()
    }
}

/// A logical client: one process of one client host.
#[derive(Clone, Debug)]
pub(crate) struct Logical {
    /// Sessions lost so far.
    pub(crate) incarnation: u32,
    /// Operations planned (numbers the values it writes).
    pub(crate) next_seq: u64,
    /// The last value it read of each cell (for compare-exchange).
    pub(crate) last_seen: BTreeMap<Cell, u64>,
}

/// What a successful operation returned.
#[derive(Clone, Debug)]
pub(crate) enum Done {
    /// A write or a sync.
    Unit,
    /// A read's bytes.
    Read(Bytes),
    /// An atomic's previous value and whether it applied.
    Atomic(u64, bool),
    /// A `wait_while` that timed out: it observed nothing to check (it may
    /// never have had the page to look at).
    TimedOut,
}

/// Everything shared.
pub(crate) struct Lab {
    /// The files.
    pub(crate) layout: Layout,
    /// The server's store; clones share the files, so it outlives restarts.
    pub(crate) store: MemStore,
    /// Makes the server's disk lie (see [`super::sabotage`]).
    pub(crate) lying: Arc<AtomicBool>,
    /// The history being recorded.
    pub(crate) history: History,
    seq: u64,
    /// The trace (hashed; text when asked for).
    pub(crate) trace: Trace,
    /// The server run clients connect to now.
    pub(crate) segment: u32,
    /// Client hosts.
    pub(crate) hosts: Vec<HostState>,
    /// Logical clients, by history id.
    pub(crate) logical: Vec<Logical>,
    /// Scenario operation → its history id (`None`: not run).
    pub(crate) scripted: Vec<Option<usize>>,
    /// What the checker and the controller found.
    pub(crate) violations: Vec<Violation>,
    /// Counts.
    pub(crate) stats: NetStats,
}

/// Virtual time of the whole simulation, as the core counts time.
pub(crate) fn at(d: Duration) -> Instant {
    Instant::from_duration(d)
}

/// Virtual time inside a host.
pub(crate) fn host_now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

impl Lab {
    pub(crate) fn new(layout: Layout, store: MemStore, hosts: usize, keep_trace: bool) -> Self {
        let files = layout.pages.len();
        let history = History {
            cells: layout.cells(),
            ..History::default()
        };
        Lab {
            layout,
            store,
            lying: Arc::new(AtomicBool::new(false)),
            history,
            seq: 0,
            trace: Trace::new(keep_trace),
            segment: 0,
            hosts: (0..hosts).map(|_| HostState::new(files)).collect(),
            logical: Vec::new(),
            scripted: Vec::new(),
            violations: Vec::new(),
            stats: NetStats::default(),
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Adds a line to the trace, stamped with the virtual time.
    pub(crate) fn line(&mut self, now: Duration, s: impl AsRef<str>) {
        self.trace.line(format!("{:?} {}", at(now), s.as_ref()));
    }

    /// A client host booted: a new logical client, a clean slate.
    pub(crate) fn boot_client(&mut self, host: usize, now: Duration) -> usize {
        let files = self.layout.pages.len();
        let boots = self.hosts[host].boots + 1;
        self.hosts[host] = HostState::new(files);
        self.hosts[host].boots = boots;
        let cid = self.logical.len();
        self.logical.push(Logical {
            incarnation: 0,
            next_seq: 0,
            last_seen: BTreeMap::new(),
        });
        self.hosts[host].cid = Some(cid);
        self.line(now, format!("host c{host} boots as client {cid}"));
        cid
    }

    /// The first handshake of the host's client completed.
    pub(crate) fn client_ready(
        &mut self,
        host: usize,
        client: Client,
        events: broadcast::Receiver<ClientEvent>,
        now: Duration,
    ) {
        let Some(cid) = self.hosts[host].cid else {
            return;
        };
        let inc = self.logical[cid].incarnation;
        self.history.inc_segment.insert((cid, inc), self.segment);
        self.stats.connects += 1;
        self.hosts[host].client = Some(client);
        self.hosts[host].events = Some(events);
        self.line(
            now,
            format!(
                "client {cid} connected (first) in server run {}",
                self.segment
            ),
        );
        self.hosts[host].maint.notify_one();
    }

    /// The host crashed: its process and everything it held are gone; its
    /// pending operations stay pending for ever.
    pub(crate) fn crash_client(&mut self, host: usize, now: Duration) {
        if let Some(cid) = self.hosts[host].cid {
            let seq = self.next_seq();
            let inc = self.logical[cid].incarnation;
            let end = self.history.ended.entry((cid, inc)).or_default();
            end.crashed = true;
            end.seq = seq;
            let unsynced = self.unsynced_writes(cid, inc);
            if unsynced > 0 {
                self.stats.crashes_with_unsynced_writes += 1;
            }
            self.line(
                now,
                format!("host c{host} crashes (client {cid} inc{inc}, {unsynced} unsynced writes)"),
            );
        }
        let files = self.layout.pages.len();
        let boots = self.hosts[host].boots;
        self.hosts[host] = HostState::new(files);
        self.hosts[host].boots = boots;
    }

    /// Writes of the client's incarnation that completed OK and that no
    /// sync of their file, begun after them, has completed OK since: its
    /// dirty pages, unless a recall wrote them back.
    fn unsynced_writes(&self, cid: usize, inc: u32) -> usize {
        let ops = &self.history.ops;
        let synced = |file: usize, after: u64| {
            ops.iter().any(|s| {
                s.client == cid
                    && s.ok()
                    && matches!(s.kind, OpKind::Sync { file: f } if f == file)
                    && s.invoke_seq > after
            })
        };
        ops.iter()
            .filter(|w| w.client == cid && w.end_incarnation == inc && w.ok())
            .filter(|w| match &w.kind {
                OpKind::Write { cells } => !synced(cells[0].0.file, w.complete_seq.unwrap_or(0)),
                _ => false,
            })
            .count()
    }

    /// The server restarted (the store already crashed, if it did): a new
    /// server run begins with what the disk holds now.
    pub(crate) fn restart_server(&mut self, crash: bool, now: Duration) {
        self.segment += 1;
        let disk = cell_values(&self.history.cells, |f| {
            self.store.contents(&Layout::path(f))
        });
        let durable = cell_values(&self.history.cells, |f| {
            self.store.durable_contents(&Layout::path(f))
        });
        let seq = self.next_seq();
        self.history.restarts.push(Restart {
            seq,
            at: at(now),
            crash,
            graceful: false,
            disk,
            durable,
        });
        self.line(
            now,
            format!(
                "server down: run {} begins, store crashed={crash}",
                self.segment
            ),
        );
    }

    /// The server run of the client's current session.
    fn session_segment(&self, cid: usize) -> u32 {
        let inc = self.logical[cid].incarnation;
        self.history
            .inc_segment
            .get(&(cid, inc))
            .copied()
            .unwrap_or(self.segment)
    }

    /// Records every connection event the host's client published so far.
    /// Called before anything is recorded for the host, so an event
    /// published before a completion is recorded before it.
    pub(crate) fn pump(&mut self, host: usize, now: Duration) {
        let Some(cid) = self.hosts[host].cid else {
            return;
        };
        loop {
            let Some(rx) = self.hosts[host].events.as_mut() else {
                return;
            };
            let ev = match rx.try_recv() {
                Ok(ev) => ev,
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    let d = format!("client {cid} missed {n} connection events");
                    self.violations
                        .push(Violation::new("event-lag", None, d, Vec::new()));
                    continue;
                }
                Err(_) => return,
            };
            self.on_event(host, cid, ev, now);
        }
    }

    fn on_event(&mut self, host: usize, cid: usize, ev: ClientEvent, now: Duration) {
        match ev {
            ClientEvent::SessionLost { reason, lost } => {
                self.stats.sessions_lost += 1;
                let seq = self.next_seq();
                let inc = self.logical[cid].incarnation;
                let end = self.history.ended.entry((cid, inc)).or_default();
                end.reason = Some(format!("{reason:?}"));
                end.seq = seq;
                for (m, _) in &lost {
                    end.told.insert(*m);
                }
                self.logical[cid].incarnation += 1;
                let names: Vec<MappingId> = lost.iter().map(|(m, _)| *m).collect();
                self.line(
                    now,
                    format!("client {cid} session lost ({reason:?}) inc{inc} lost {names:?}"),
                );
                for m in names {
                    self.mark_lost(host, m);
                }
            }
            ClientEvent::Connected { resumed } => {
                self.stats.connects += 1;
                if !resumed {
                    let inc = self.logical[cid].incarnation;
                    self.history.inc_segment.insert((cid, inc), self.segment);
                }
                self.line(now, format!("client {cid} connected resumed={resumed}"));
            }
            ClientEvent::Failed { reason } => {
                let d = format!("client {cid} failed for good: {reason}");
                self.violations
                    .push(Violation::new("client-failed", None, d, Vec::new()));
            }
            other => self.line(now, format!("client {cid} {other:?}")),
        }
    }

    /// The mapping lost writes: it must be unmapped before the file is used
    /// again.
    pub(crate) fn mark_lost(&mut self, host: usize, m: MappingId) {
        let h = &mut self.hosts[host];
        for s in &mut h.slots {
            if let Slot::Ready(x) = s
                && x.id() == m
            {
                *s = Slot::Lost(x.clone());
                h.maint.notify_one();
            }
        }
    }

    /// Records the start of an operation; returns its history id and the
    /// mapping to run it on, or `None` when the file is not mapped (the
    /// operation is not run).
    pub(crate) fn invoke(
        &mut self,
        host: usize,
        posted: &Posted,
        now: Duration,
    ) -> Option<(usize, Mapping)> {
        self.pump(host, now);
        let cid = self.hosts[host].cid.filter(|c| *c == posted.cid)?;
        let (file, kind) = self.kind_of(&posted.op);
        let Some(Slot::Ready(m)) = self.hosts[host].slots.get(file).cloned() else {
            self.line(
                now,
                format!("client {cid} not mapped, skips {:?}", posted.op),
            );
            return None;
        };
        let id = self.history.ops.len();
        let seq = self.next_seq();
        let (inc, segment) = (self.logical[cid].incarnation, self.session_segment(cid));
        let rec = OpRecord {
            id,
            client: cid,
            incarnation: inc,
            end_incarnation: inc,
            segment,
            end_segment: segment,
            mapping: m.id(),
            invoke_at: at(now),
            complete_at: None,
            invoke_seq: seq,
            complete_seq: None,
            kind,
            outcome: Outcome::Pending,
            read: Vec::new(),
            applied: false,
        };
        self.trace.line(format!("invoke {rec}"));
        self.history.ops.push(rec);
        if let Some(i) = posted.script {
            self.scripted[i] = Some(id);
        }
        self.hosts[host].outstanding += 1;
        self.stats.ops += 1;
        Some((id, m))
    }

    fn kind_of(&self, op: &Planned) -> (usize, OpKind) {
        match op {
            Planned::Read { file, offset, len } => (
                *file,
                OpKind::Read {
                    offset: *offset,
                    cells: self.layout.cells_in(*file, *offset, *len),
                },
            ),
            Planned::Write { file, cells, .. } => (
                *file,
                OpKind::Write {
                    cells: cells.clone(),
                },
            ),
            Planned::Sync { file } => (*file, OpKind::Sync { file: *file }),
            Planned::Swap { cell, new } => (
                cell.file,
                OpKind::Swap {
                    cell: *cell,
                    new: *new,
                },
            ),
            Planned::Cas {
                cell,
                expected,
                new,
            } => (
                cell.file,
                OpKind::Cas {
                    cell: *cell,
                    expected: *expected,
                    new: *new,
                },
            ),
            // Checked as a read of the word.
            Planned::Wait { cell, .. } => (
                cell.file,
                OpKind::Read {
                    offset: cell.offset,
                    cells: vec![*cell],
                },
            ),
        }
    }

    /// Records the end of operation `id` run by `host`.
    pub(crate) fn complete(
        &mut self,
        host: usize,
        id: usize,
        result: Result<Done, OpError>,
        now: Duration,
    ) {
        self.pump(host, now);
        let seq = self.next_seq();
        let cid = self.history.ops[id].client;
        if self.hosts[host].cid == Some(cid) {
            self.hosts[host].outstanding -= 1;
        }
        let (inc, segment) = (self.logical[cid].incarnation, self.session_segment(cid));
        let rec = &mut self.history.ops[id];
        rec.complete_at = Some(at(now));
        rec.complete_seq = Some(seq);
        rec.end_segment = segment;
        rec.end_incarnation = inc;
        let mut lost = None;
        match result {
            Ok(done) => {
                rec.outcome = Outcome::Ok;
                match done {
                    Done::Read(b) => {
                        let OpKind::Read { offset, cells } = &rec.kind else {
                            unreachable!("reads complete with bytes")
                        };
                        for c in cells {
                            let o = (c.offset - offset) as usize;
                            let v = b.get(o..o + 8).map_or(u64::MAX, |w| {
                                u64::from_le_bytes(w.try_into().expect("8 bytes"))
                            });
                            rec.read.push(v);
                            self.logical[cid].last_seen.insert(*c, v);
                        }
                    }
                    Done::Atomic(previous, applied) => {
                        rec.read = vec![previous];
                        rec.applied = applied;
                    }
                    Done::Unit => {}
                    Done::TimedOut => rec.outcome = Outcome::Failed("timed_out".to_owned()),
                }
            }
            Err(e) => {
                rec.outcome = Outcome::Failed(e.kind().to_owned());
                if let OpError::SessionLost(l) = &e {
                    let m = rec.mapping;
                    self.history.told_by_error.entry((cid, m)).or_insert(seq);
                    if let LossCause::WriteBackFailed(_) = l.cause {
                        let d = format!("client {cid}: a write-back was refused: {e}");
                        self.violations.push(Violation::new(
                            "write-back-refused",
                            None,
                            d,
                            vec![id],
                        ));
                    }
                    lost = Some(m);
                }
            }
        }
        let line = format!("done {}", self.history.ops[id]);
        self.trace.line(line);
        if let Some(m) = lost
            && self.hosts[host].cid == Some(cid)
        {
            self.mark_lost(host, m);
        }
    }

    /// Where every slot of every host stands, for a liveness report.
    pub(crate) fn describe_hosts(&self) -> String {
        let mut s = String::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let slots: Vec<&str> = h
                .slots
                .iter()
                .map(|s| match s {
                    Slot::Idle => "idle",
                    Slot::Opening => "opening",
                    Slot::Ready(_) => "ready",
                    Slot::Lost(_) => "lost",
                    Slot::Unmapping => "unmapping",
                })
                .collect();
            s.push_str(&format!(
                " c{i}: client={:?} connected={} outstanding={} inbox={} slots={slots:?};",
                h.cid,
                h.client.as_ref().is_some_and(|c| c.is_connected()),
                h.outstanding,
                h.inbox.len()
            ));
        }
        s
    }
}
