//! Operations that need pages in a new state: fetches (shared or
//! exclusive), atomic operations and file shrinks.
//!
//! An operation locks its pages in ascending order. For each page it locks it
//! sends the revocations that the new state needs (invalidate sharers, recall
//! an owner). When it holds every page and every revocation is answered (or
//! the holder's lease ran out), it runs, replies, and unlocks. Operations
//! waiting for a page wait in that page's FIFO queue.

use bytes::Bytes;

use crate::Instant;
use crate::protocol::{
    AtomicDone, AtomicOp, ErrorCode, LenSet, Message, PageGrant, PageNo, Pages, ReqId, SessionId,
    WireMappingId,
};
use crate::store::Store;

use super::directory::FileId;
use super::revoke::RevKind;
use super::{Failure, Server, ServerBug, error_msg};

/// An operation, numbered by the server.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct OpId(pub(crate) u64);

#[derive(Clone, Debug)]
pub(crate) enum OpKind {
    Fetch {
        exclusive: bool,
        want_data: bool,
        overwrite: bool,
    },
    Atomic {
        offset: u64,
        op: AtomicOp,
    },
    Shrink {
        len: u64,
    },
}

#[derive(Debug)]
pub(crate) struct Op {
    pub(crate) session: SessionId,
    pub(crate) req: ReqId,
    pub(crate) mapping: Option<WireMappingId>,
    pub(crate) file: FileId,
    pub(crate) first: PageNo,
    pub(crate) end: PageNo,
    /// Pages `[first, next)` are locked by this op.
    pub(crate) next: PageNo,
    pub(crate) pending_revs: u32,
    pub(crate) kind: OpKind,
    /// The session or mapping went away; finish revocations, then unlock.
    pub(crate) cancelled: bool,
    /// The page whose queue this op waits in.
    pub(crate) queued_on: Option<PageNo>,
}

impl<S: Store> Server<S> {
    /// Registers an op and runs it as far as it goes right away, so that an
    /// op that needs no waiting replies in the order its request arrived.
    pub(super) fn start_op(&mut self, now: Instant, op: Op) -> OpId {
        self.next_op += 1;
        let id = OpId(self.next_op);
        self.files.get_mut(op.file).ops += 1;
        if let Some(s) = self.sessions.get_mut(&op.session) {
            s.in_progress.insert(op.req, id);
        }
        let exclusive = matches!(
            op.kind,
            OpKind::Fetch {
                exclusive: true,
                ..
            } | OpKind::Atomic { .. }
                | OpKind::Shrink { .. }
        );
        self.ops.insert(id, op);
        if exclusive && self.in_grace(now) {
            self.grace_waiting.push(id);
        } else {
            self.advance(now, id);
        }
        id
    }

    /// Runs every operation that may make progress.
    pub(super) fn run_ready(&mut self, now: Instant) {
        while let Some(id) = self.ready.pop_front() {
            self.advance(now, id);
        }
        self.check_shutdown();
    }

    /// Locks as many pages as possible, sends what must be revoked, and runs
    /// the op when it holds everything.
    fn advance(&mut self, now: Instant, id: OpId) {
        let Some(op) = self.ops.get(&id) else { return };
        let (file, session, kind, cancelled) = (op.file, op.session, op.kind.clone(), op.cancelled);
        let (mut next, end) = (op.next, op.end);
        let mut wanted: Vec<(SessionId, PageNo, RevKind)> = Vec::new();
        let mut queued_on = None;
        {
            let f = self.files.get_mut(file);
            while next < end {
                let e = f.entry(next);
                let mine = e.lock == Some(id);
                let free = e.lock.is_none() && e.queue.front().is_none_or(|q| *q == id);
                if !mine && !free {
                    if !e.queue.contains(&id) {
                        e.queue.push_back(id);
                    }
                    queued_on = Some(next);
                    break;
                }
                if !mine {
                    if e.queue.front() == Some(&id) {
                        e.queue.pop_front();
                    }
                    e.lock = Some(id);
                    if !cancelled {
                        needed_revocations(e, session, &kind, self.bug, next, &mut wanted);
                    }
                }
                next += 1;
            }
        }
        let op = self.ops.get_mut(&id).expect("checked above");
        op.next = next;
        op.queued_on = queued_on;
        self.send_revocations(now, Some(id), file, wanted);
        let op = &self.ops[&id];
        if op.next == op.end && op.pending_revs == 0 {
            self.finish(now, id);
        } else if op.cancelled && op.pending_revs == 0 {
            self.release_op(id);
        }
    }

    /// Called when a revocation of `id` completed.
    pub(super) fn revocation_done_for(&mut self, id: OpId) {
        if let Some(op) = self.ops.get_mut(&id) {
            op.pending_revs -= 1;
            if op.pending_revs == 0 {
                self.ready.push_back(id);
            }
        }
    }

    /// Cancels an op whose session or mapping went away: it stops waiting,
    /// and unlocks once its revocations are answered.
    pub(super) fn cancel_op(&mut self, id: OpId) {
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        op.cancelled = true;
        if let Some(p) = op.queued_on.take() {
            let file = op.file;
            let f = self.files.get_mut(file);
            if let Some(e) = f.pages.get_mut(&p) {
                e.queue.retain(|q| *q != id);
                if e.lock.is_none()
                    && let Some(&n) = e.queue.front()
                {
                    self.ready.push_back(n);
                }
            }
            f.gc_page(p);
        }
        if self.ops[&id].pending_revs == 0 {
            self.release_op(id);
        }
    }

    /// Unlocks the op's pages, wakes whoever waits for them and forgets it.
    fn release_op(&mut self, id: OpId) {
        let Some(op) = self.ops.remove(&id) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(&op.session)
            && s.in_progress.get(&op.req) == Some(&id)
        {
            s.in_progress.remove(&op.req);
        }
        let f = self.files.get_mut(op.file);
        for p in op.first..op.next {
            if let Some(e) = f.pages.get_mut(&p) {
                if e.lock == Some(id) {
                    e.lock = None;
                }
                if let Some(&n) = e.queue.front() {
                    self.ready.push_back(n);
                }
            }
            f.gc_page(p);
        }
        if let Some(p) = op.queued_on
            && let Some(e) = f.pages.get_mut(&p)
        {
            e.queue.retain(|q| *q != id);
        }
        f.ops -= 1;
        if let Some(sf) = self.files.remove_if_unused(op.file) {
            self.store.close(sf);
        }
    }

    /// Every page is locked and every revocation answered: run the op.
    fn finish(&mut self, now: Instant, id: OpId) {
        let op = &self.ops[&id];
        if op.cancelled || !self.sessions.contains_key(&op.session) {
            return self.release_op(id);
        }
        let (sid, req) = (op.session, op.req);
        let result = match op.kind.clone() {
            // Shutdown recalls every owned page once; an exclusive fetch
            // queued before it began gets no ownership either, so none
            // appears behind those recalls (the client asks again of the
            // next run).
            OpKind::Fetch {
                exclusive: true, ..
            } if self.shutdown.is_some() => Err(Failure::new(
                ErrorCode::ShuttingDown,
                "the server is shutting down; no new write ownership",
            )),
            OpKind::Fetch {
                exclusive,
                want_data,
                overwrite,
            } => self.grant(id, exclusive, want_data, overwrite),
            OpKind::Atomic { offset, op: aop } => self.run_atomic(id, offset, aop),
            OpKind::Shrink { len } => self.run_shrink(id, len),
        };
        match result {
            Ok((reply, cache)) => {
                if cache {
                    self.remember(sid, req, reply.clone());
                }
                self.reply(sid, req, &reply);
            }
            Err(f) => {
                let m = error_msg(req, &f);
                self.reply(sid, req, &m);
            }
        }
        self.release_op(id);
        let _ = now;
    }

    fn grant(
        &mut self,
        id: OpId,
        exclusive: bool,
        want_data: bool,
        overwrite: bool,
    ) -> Result<(Message, bool), Failure> {
        let op = &self.ops[&id];
        let (sid, file, first, end, req) = (op.session, op.file, op.first, op.end, op.req);
        let ps = self.config.page_size as u64;
        let f = self.files.get(file);
        let needs: Vec<bool> = (first..end)
            .map(|p| !overwrite && (want_data || f.pages.get(&p).is_none_or(|e| !e.holds(sid))))
            .collect();
        let data = if needs.iter().any(|n| *n) {
            let count = (end - first) as usize;
            Some(
                self.store
                    .read(f.store, first * ps, count * ps as usize)
                    .map_err(|e| Failure::new(ErrorCode::Io, format!("reading {}: {e}", f.path)))?,
            )
        } else {
            None
        };
        let handle = self.sessions[&sid].handle_of[&file];
        let f = self.files.get_mut(file);
        let mut pages = Vec::with_capacity((end - first) as usize);
        for (i, p) in (first..end).enumerate() {
            let e = f.entry(p);
            if exclusive {
                e.remove_sharer(sid);
                e.owner = Some(sid);
            } else {
                if e.owner == Some(sid) {
                    e.owner = None;
                }
                e.add_sharer(sid);
            }
            let d: Option<Bytes> = match (&data, needs[i]) {
                (Some(all), true) => Some(all.slice(i * ps as usize..(i + 1) * ps as usize)),
                _ => None,
            };
            pages.push(PageGrant {
                version: e.version,
                data: d,
            });
        }
        let s = self.sessions.get_mut(&sid).expect("checked by finish");
        for p in first..end {
            s.note_held(file, p);
        }
        Ok((
            Message::Pages(Pages {
                req,
                file: handle,
                first_page: first,
                exclusive,
                pages,
            }),
            false,
        ))
    }

    fn run_atomic(
        &mut self,
        id: OpId,
        offset: u64,
        aop: AtomicOp,
    ) -> Result<(Message, bool), Failure> {
        let op = &self.ops[&id];
        let (file, req, page) = (op.file, op.req, op.first);
        let f = self.files.get(file);
        let io = |e: crate::store::StoreError| {
            Failure::new(ErrorCode::Io, format!("atomic on {}: {e}", f.path))
        };
        let word = self.store.read(f.store, offset, 8).map_err(io)?;
        let previous =
            u64::from_le_bytes(word[..8].try_into().expect("store reads exactly 8 bytes"));
        let (new, applied) = match aop {
            AtomicOp::FetchAdd(v) => (previous.wrapping_add(v), true),
            AtomicOp::Swap(v) => (v, true),
            AtomicOp::CompareExchange { expected, new } => {
                if previous == expected {
                    (new, true)
                } else {
                    (previous, false)
                }
            }
        };
        if new != previous {
            let store = f.store;
            let path = f.path.clone();
            self.store
                .write(store, offset, &new.to_le_bytes())
                .map_err(|e| Failure::new(ErrorCode::Io, format!("atomic on {path}: {e}")))?;
            let v = self.bump_version();
            self.files.get_mut(file).entry(page).version = v;
        }
        Ok((
            Message::AtomicDone(AtomicDone {
                req,
                previous,
                applied,
            }),
            true,
        ))
    }

    fn run_shrink(&mut self, id: OpId, len: u64) -> Result<(Message, bool), Failure> {
        let op = &self.ops[&id];
        let (file, req, page) = (op.file, op.req, op.first);
        self.apply_set_len(file, len)?;
        let v = self.bump_version();
        let f = self.files.get_mut(file);
        f.entry(page).version = v;
        Ok((Message::LenSet(LenSet { req, len }), true))
    }

    pub(super) fn bump_version(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }
}

/// What must be revoked before `session` may have `page` in the state `kind`
/// asks for.
fn needed_revocations(
    e: &super::directory::PageEntry,
    session: SessionId,
    kind: &OpKind,
    bug: ServerBug,
    page: PageNo,
    out: &mut Vec<(SessionId, PageNo, RevKind)>,
) {
    match kind {
        OpKind::Fetch {
            exclusive: false, ..
        } => {
            // Even from the requester itself: a shared fetch by the owner
            // means the client lost track of its ownership, and any dirty data
            // it has must come back before the page is granted shared.
            if let Some(o) = e.owner {
                out.push((o, page, RevKind::Recall { downgrade: true }));
            }
        }
        OpKind::Fetch {
            exclusive: true, ..
        } => {
            if bug != ServerBug::SkipInvalidation {
                for &x in &e.sharers {
                    if x != session {
                        out.push((x, page, RevKind::Invalidate));
                    }
                }
            }
            if let Some(o) = e.owner
                && o != session
            {
                out.push((o, page, RevKind::Recall { downgrade: false }));
            }
        }
        OpKind::Atomic { .. } | OpKind::Shrink { .. } => {
            for &x in &e.sharers {
                out.push((x, page, RevKind::Invalidate));
            }
            if let Some(o) = e.owner {
                out.push((o, page, RevKind::Recall { downgrade: false }));
            }
        }
    }
}
