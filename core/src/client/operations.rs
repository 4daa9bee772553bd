//! The application operations in progress: what each one is doing
//! ([`OpKind`]), which are due a step, and which wait for room in the
//! request window or for a lease renewal.
//!
//! An operation waiting for a page, a mapping or a reply is registered
//! there (the page's or mapping's waiters, the request's kind) and woken
//! from there; the table only keeps the operations themselves and the two
//! waits that belong to no page.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::Instant;
use crate::protocol::{AtomicOp, PageNo, ReqId};

use super::{MappingId, OpError, OpId};

/// What an operation in progress is doing, and how far it got.
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
        buf: ReadInto,
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
    /// Writes back and syncs what the mapping wrote, then unmaps it.
    Unmap {
        mapping: MappingId,
        writebacks: BTreeSet<ReqId>,
        /// The `Sync` of what it wrote, once sent.
        sync_req: Option<ReqId>,
        /// That sync succeeded (or none was needed).
        synced: bool,
        /// How the write-backs or the sync failed: the unmap fails and the
        /// mapping stays.
        failed: Option<OpError>,
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
    /// Writes back and syncs everything written, then says `Bye`.
    Close {
        writebacks: BTreeSet<ReqId>,
        /// The syncs sent, by request, and for which mapping.
        syncs: BTreeMap<ReqId, MappingId>,
        /// Every mapping with unsynced writes has had its sync sent.
        syncs_sent: bool,
        /// The first failure of a write-back or sync: reported by the close.
        failed: Option<OpError>,
        bye_sent: bool,
    },
    Fault {
        mapping: MappingId,
        index: u64,
        write: bool,
    },
    /// Waits until a word no longer holds `current`, or `deadline`.
    WaitWhile {
        mapping: MappingId,
        offset: u64,
        current: u64,
        deadline: Option<Instant>,
    },
    /// Waits for a handshake to complete.
    Connect,
}

/// Where a read puts what it finds.
#[derive(Debug)]
pub(crate) enum ReadInto {
    /// One contiguous copy (allocated when the read starts, or for a read
    /// within one page on first use).
    Buffer(Option<Vec<u8>>),
    /// The pages' own bytes, sliced: no copy in the core.
    Slices(Vec<Bytes>),
}

/// The operations in progress.
#[derive(Debug, Default)]
pub(crate) struct Operations {
    ops: BTreeMap<OpId, OpKind>,
    next: u64,
    /// Due a step.
    woken: BTreeSet<OpId>,
    /// Waiting for room in the request window.
    window: BTreeSet<OpId>,
    /// Waiting for a lease renewal.
    lease: BTreeSet<OpId>,
    /// Due a step at a time (their deadline), whatever else they wait for.
    timers: BTreeSet<(Instant, OpId)>,
}

impl Operations {
    /// Operations in progress.
    pub(crate) fn len(&self) -> usize {
        self.ops.len()
    }

    /// Takes a new operation, due a step at once, unless `limit` are in
    /// progress already (no limit with `None`).
    pub(crate) fn admit(&mut self, kind: OpKind, limit: Option<usize>) -> Result<OpId, OpError> {
        if limit.is_some_and(|l| self.ops.len() >= l) {
            return Err(OpError::Busy(self.ops.len()));
        }
        self.next += 1;
        let id = OpId(self.next);
        self.ops.insert(id, kind);
        self.woken.insert(id);
        Ok(id)
    }

    /// Takes an operation out to step it (put it back with [`Operations::put`]).
    pub(crate) fn take(&mut self, id: OpId) -> Option<OpKind> {
        self.ops.remove(&id)
    }

    /// Puts a stepped operation back: it still waits.
    pub(crate) fn put(&mut self, id: OpId, kind: OpKind) {
        self.ops.insert(id, kind);
    }

    /// Ends an operation; whether it was in progress.
    pub(crate) fn finish(&mut self, id: OpId) -> bool {
        self.ops.remove(&id).is_some()
    }

    pub(crate) fn get(&self, id: OpId) -> Option<&OpKind> {
        self.ops.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: OpId) -> Option<&mut OpKind> {
        self.ops.get_mut(&id)
    }

    /// Every operation, to reset what they wait for.
    pub(crate) fn kinds_mut(&mut self) -> impl Iterator<Item = &mut OpKind> {
        self.ops.values_mut()
    }

    /// The ids of the operations in progress.
    pub(crate) fn ids(&self) -> Vec<OpId> {
        self.ops.keys().copied().collect()
    }

    /// The operations that use `mapping` through its pages (not its map or
    /// unmap).
    pub(crate) fn on_mapping(&self, mapping: MappingId) -> Vec<OpId> {
        self.ops
            .iter()
            .filter(|(_, k)| match k {
                OpKind::Read { mapping: m, .. }
                | OpKind::Write { mapping: m, .. }
                | OpKind::Sync { mapping: m, .. }
                | OpKind::Atomic { mapping: m, .. }
                | OpKind::Fault { mapping: m, .. }
                | OpKind::WaitWhile { mapping: m, .. } => *m == mapping,
                _ => false,
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether a close is under way.
    pub(crate) fn closing(&self) -> bool {
        self.ops.values().any(|k| matches!(k, OpKind::Close { .. }))
    }

    /// Makes `id` due a step.
    pub(crate) fn wake(&mut self, id: OpId) {
        self.woken.insert(id);
    }

    /// Makes all of `ids` due a step.
    pub(crate) fn wake_all_of(&mut self, ids: impl IntoIterator<Item = OpId>) {
        self.woken.extend(ids);
    }

    /// Makes every operation due a step.
    pub(crate) fn wake_all(&mut self) {
        self.woken.extend(self.ops.keys().copied());
    }

    /// The next operation due a step.
    pub(crate) fn next_woken(&mut self) -> Option<OpId> {
        self.woken.pop_first()
    }

    /// `id` waits for room in the request window.
    pub(crate) fn wait_window(&mut self, id: OpId) {
        self.window.insert(id);
    }

    /// A request was answered: whoever waited for room is due a step.
    pub(crate) fn wake_window(&mut self) {
        let w = std::mem::take(&mut self.window);
        self.woken.extend(w);
    }

    /// `id` waits for a lease renewal.
    pub(crate) fn wait_lease(&mut self, id: OpId) {
        self.lease.insert(id);
    }

    /// The lease was renewed: whoever waited for it is due a step.
    pub(crate) fn wake_lease(&mut self) {
        let w = std::mem::take(&mut self.lease);
        self.woken.extend(w);
    }

    /// `id` is due a step at `at`.
    pub(crate) fn wake_at(&mut self, id: OpId, at: Instant) {
        self.timers.insert((at, id));
    }

    /// Makes the operations whose time came by `now` due a step.
    pub(crate) fn wake_timers(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if self.ops.contains_key(&id) {
                self.woken.insert(id);
            }
        }
    }

    /// The next time an operation still in progress is due a step.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.timers
            .iter()
            .find(|(_, id)| self.ops.contains_key(id))
            .map(|(at, _)| *at)
    }
}
