//! Operations: requests that cannot be answered at once, because they wait
//! for pages, for revocations, or for the disk.
//!
//! Operations that need pages in a new state (fetches, atomic operations,
//! file shrinks) lock their pages in ascending order. For each page it locks,
//! an operation sends the revocations that the new state needs (invalidate
//! sharers, recall an owner). When it holds every page and every revocation
//! is answered (or the holder's lease ran out), it executes: it may still
//! wait for the disk (a read of the pages, a length change) with its pages
//! locked, then it replies and unlocks. Operations waiting for a page wait in
//! that page's FIFO queue. Other requests (map, set length, write-back,
//! sync) are operations only while they wait for the disk.

use std::sync::Arc;

use crate::Instant;
use crate::path::ExportPath;
use crate::protocol::{
    AtomicOp, Message, PageDigest, PageNo, ReqId, SessionId, Version, WireMappingId,
};

use super::ids::{FileId, OpId, RevKind};
use super::{Server, error_msg};

#[derive(Clone, Debug)]
pub(crate) enum OpKind {
    Fetch {
        exclusive: bool,
        want_data: bool,
        overwrite: bool,
        /// A [`Refresh`](crate::protocol::Refresh): the digests of the
        /// client's copies; a page whose bytes match is granted without data.
        known: Option<Arc<[PageDigest]>>,
    },
    Atomic {
        offset: u64,
        op: AtomicOp,
    },
    /// Cutting a file below its length (its last page changes).
    Shrink {
        len: u64,
    },
    Map {
        path: ExportPath,
        offset: u64,
        len: u64,
        write: bool,
        create: bool,
    },
    /// A `SetLen` request, while its file opens or grows.
    SetLen {
        path: ExportPath,
        len: u64,
    },
    /// A write-back, while its writes run: the versions to acknowledge.
    WriteBack {
        versions: Vec<Version>,
    },
    Sync,
}

impl OpKind {
    /// Whether it gives the session a page to write, or writes itself.
    fn needs_write_ownership(&self) -> bool {
        matches!(
            self,
            OpKind::Fetch {
                exclusive: true,
                ..
            } | OpKind::Atomic { .. }
                | OpKind::Shrink { .. }
        )
    }
}

/// The pages an operation locks, and how far it got.
#[derive(Debug)]
pub(crate) struct PageLock {
    pub(crate) first: PageNo,
    pub(crate) end: PageNo,
    /// Pages `[first, next)` are locked by this op.
    pub(crate) next: PageNo,
    pub(crate) pending_revs: u32,
    /// The page whose queue this op waits in.
    pub(crate) queued_on: Option<PageNo>,
}

#[derive(Debug)]
pub(crate) struct Op {
    pub(crate) session: SessionId,
    pub(crate) req: ReqId,
    pub(crate) mapping: Option<WireMappingId>,
    pub(crate) kind: OpKind,
    /// The file, once known; the op keeps it open.
    pub(crate) file: Option<FileId>,
    pub(crate) lock: Option<PageLock>,
    /// Store requests it waits for.
    pub(crate) store_waits: u32,
    /// The session or mapping went away: finish what is under way, reply
    /// nothing, unlock.
    pub(crate) cancelled: bool,
    /// Its pages are locked and it has begun its work on them.
    pub(crate) executing: bool,
}

impl Op {
    pub(crate) fn new(
        session: SessionId,
        req: ReqId,
        mapping: Option<WireMappingId>,
        kind: OpKind,
    ) -> Self {
        Op {
            session,
            req,
            mapping,
            kind,
            file: None,
            lock: None,
            store_waits: 0,
            cancelled: false,
            executing: false,
        }
    }

    /// Locking pages `[first, end)` of `file`.
    pub(crate) fn on_pages(mut self, file: FileId, first: PageNo, end: PageNo) -> Self {
        self.file = Some(file);
        self.lock = Some(PageLock {
            first,
            end,
            next: first,
            pending_revs: 0,
            queued_on: None,
        });
        self
    }

    /// The most page data a fetch's reply carries.
    pub(crate) fn reply_bytes(&self, page_size: u32) -> usize {
        let l = self.lock();
        (l.end - l.first) as usize * page_size as usize
    }

    pub(crate) fn lock(&self) -> &PageLock {
        self.lock.as_ref().expect("a page operation")
    }
}

impl Server {
    /// Registers an op: it keeps its file open and counts as in progress for
    /// its request.
    pub(super) fn register_op(&mut self, op: Op) -> OpId {
        self.next_op += 1;
        let id = OpId(self.next_op);
        if let Some(f) = op.file {
            self.files.get_mut(f).ops += 1;
        }
        if let Some(s) = self.sessions.get_mut(&op.session) {
            s.in_progress.insert(op.req, id);
        }
        self.ops.insert(id, op);
        id
    }

    /// The op now works on `file` (known once it is open).
    pub(super) fn op_uses_file(&mut self, id: OpId, file: FileId) {
        if let Some(op) = self.ops.get_mut(&id)
            && op.file.is_none()
        {
            op.file = Some(file);
            self.files.get_mut(file).ops += 1;
        }
    }

    /// Registers a page op and runs it as far as it goes right away, so that
    /// an op that needs no waiting replies in the order its request arrived.
    pub(super) fn start_page_op(&mut self, now: Instant, op: Op) -> OpId {
        let waits_for_grace = op.kind.needs_write_ownership() && self.writes_wait(now, op.file);
        let id = self.register_op(op);
        if waits_for_grace {
            self.grace_waiting.push(id);
        } else {
            self.advance(now, id);
        }
        id
    }

    /// Runs every operation that may make progress.
    pub(super) fn run_ready(&mut self, now: Instant) {
        self.drive_cluster(now);
        loop {
            while let Some(id) = self.ready.pop_front() {
                self.advance(now, id);
            }
            if let Some((id, result)) = self.disk.poll_early() {
                self.on_store_done(now, id, result);
                continue;
            }
            if self.disk.start_marked() {
                continue;
            }
            self.check_shutdown(now);
            self.check_drains(now);
            if self.ready.is_empty() && !self.disk.start_marked() {
                break;
            }
        }
    }

    /// Locks as many pages as possible, sends what must be revoked, and
    /// executes the op when it holds everything.
    fn advance(&mut self, now: Instant, id: OpId) {
        let Some(op) = self.ops.get(&id) else { return };
        if op.executing || op.lock.is_none() {
            return;
        }
        let (session, kind, cancelled) = (op.session, op.kind.clone(), op.cancelled);
        let file = op.file.expect("page ops know their file");
        let (mut next, end) = (op.lock().next, op.lock().end);
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
                        needed_revocations(e, session, &kind, next, &mut wanted);
                    }
                }
                next += 1;
            }
        }
        #[cfg(feature = "bug-injection")]
        self.bug_skips_invalidations(&kind, &mut wanted);
        let op = self.ops.get_mut(&id).expect("checked above");
        let lock = op.lock.as_mut().expect("checked above");
        lock.next = next;
        lock.queued_on = queued_on;
        self.send_revocations(now, super::revoke::RevWaiter::Op(id), file, wanted);
        let op = &self.ops[&id];
        let lock = op.lock();
        if lock.next == lock.end && lock.pending_revs == 0 {
            self.execute(now, id);
        } else if op.cancelled && lock.pending_revs == 0 {
            self.release_op(id);
        }
    }

    /// Called when a revocation of `id` completed.
    pub(super) fn revocation_done_for(&mut self, id: OpId) {
        if let Some(lock) = self.ops.get_mut(&id).and_then(|o| o.lock.as_mut()) {
            lock.pending_revs -= 1;
            if lock.pending_revs == 0 {
                self.ready.push_back(id);
            }
        }
    }

    /// Cancels an op whose session or mapping went away: it stops waiting,
    /// and unlocks once its revocations and store requests are done.
    pub(super) fn cancel_op(&mut self, id: OpId) {
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        op.cancelled = true;
        if let Some(lock) = op.lock.as_mut()
            && let Some(p) = lock.queued_on.take()
        {
            let file = op.file.expect("page ops know their file");
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
        let op = &self.ops[&id];
        let revs = op.lock.as_ref().map_or(0, |l| l.pending_revs);
        if revs == 0 && op.store_waits == 0 {
            self.release_op(id);
        }
    }

    /// Unlocks the op's pages, wakes whoever waits for them and forgets it.
    pub(super) fn release_op(&mut self, id: OpId) {
        let Some(op) = self.ops.remove(&id) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(&op.session) {
            if s.in_progress.get(&op.req) == Some(&id) {
                s.in_progress.remove(&op.req);
            }
            if matches!(op.kind, OpKind::Map { .. }) {
                s.pending_maps -= 1;
            }
        }
        self.grace_waiting.retain(|w| *w != id);
        let Some(file) = op.file else { return };
        let f = self.files.get_mut(file);
        if let Some(lock) = &op.lock {
            for p in lock.first..lock.next {
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
            if let Some(p) = lock.queued_on
                && let Some(e) = f.pages.get_mut(&p)
            {
                e.queue.retain(|q| *q != id);
            }
        }
        f.ops -= 1;
        self.forget_file_if_unused(file);
    }

    /// Replies to the op's request (remembering the reply if `remember`, for
    /// a retransmission) and forgets the op.
    pub(super) fn answer_op(&mut self, id: OpId, reply: Message, remember: bool) {
        let Some(op) = self.ops.get(&id) else { return };
        let (sid, req, cancelled) = (op.session, op.req, op.cancelled);
        if !cancelled && self.sessions.contains_key(&sid) {
            if remember {
                self.remember(sid, req, reply.clone());
            }
            self.reply(sid, req, &reply);
        }
        self.release_op(id);
    }

    /// Answers the op with an error.
    pub(super) fn fail_op(&mut self, id: OpId, f: super::Failure) {
        let Some(op) = self.ops.get(&id) else { return };
        let req = op.req;
        // Requests that change something are answered the same way again.
        let remember = !matches!(op.kind, OpKind::Fetch { .. } | OpKind::Sync);
        self.answer_op(id, error_msg(req, &f), remember);
    }

    /// Every page is locked and every revocation answered: do the work.
    fn execute(&mut self, now: Instant, id: OpId) {
        let op = self.ops.get_mut(&id).expect("exists");
        if op.cancelled || !self.sessions.contains_key(&op.session) {
            return self.release_op(id);
        }
        op.executing = true;
        let kind = op.kind.clone();
        // In a cluster: the shard is still served here, by the clock.
        if let Some(file) = op.file
            && let Err(f) = self.shard_check_file(now, file, super::cluster::ShardUse::Grant)
        {
            return self.fail_op(id, f);
        }
        let writes = matches!(kind, OpKind::Atomic { .. } | OpKind::Shrink { .. });
        if writes && self.is_stopping() {
            return self.fail_op(
                id,
                super::Failure::new(
                    crate::protocol::ErrorCode::ShuttingDown,
                    "the server is shutting down; no more writes",
                ),
            );
        }
        match kind {
            OpKind::Fetch {
                exclusive,
                want_data,
                overwrite,
                ..
            } => self.execute_fetch(now, id, exclusive, want_data, overwrite),
            OpKind::Atomic { offset, .. } => self.execute_atomic(id, offset),
            OpKind::Shrink { len } => {
                let file = self.ops[&id].file.expect("known");
                self.ops.get_mut(&id).expect("exists").store_waits += 1;
                self.disk.set_len(file, len, id);
            }
            other => unreachable!("{other:?} locks no pages"),
        }
    }
}

/// What must be revoked before `session` may have `page` in the state `kind`
/// asks for.
fn needed_revocations(
    e: &super::directory::PageEntry,
    session: SessionId,
    kind: &OpKind,
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
            for &x in &e.sharers {
                if x != session {
                    out.push((x, page, RevKind::Invalidate));
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
        _ => {}
    }
}
