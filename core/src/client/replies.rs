//! Replies to requests, and the revocations the server pushes.

use crate::Instant;
use crate::protocol::{
    AtomicDone, ErrorCode, ErrorMsg, Invalidate, InvalidateAck, LenSet, Mapped, Message, PageNo,
    PagePatch, Pages, Recall, RecallAck, ReqId, Revalidated, Unmapped, WriteAck,
};

use super::cache::{FileId, PageData, PageState};
use super::error::{LossCause, LostWrites};
use super::requests::ReqKind;
use super::{Client, Completion, MappingStatus, OpError, OpKind};

impl Client {
    pub(crate) fn on_reply(&mut self, now: Instant, msg: Message) {
        let ok = match msg {
            Message::Pages(p) => self.on_pages(p),
            Message::WriteAck(a) => self.on_write_ack(a),
            Message::Mapped(m) => self.on_mapped(m),
            Message::Unmapped(u) => self.on_unmapped(u),
            Message::Synced(s) => self.on_synced(s.req),
            Message::Revalidated(r) => self.on_revalidated(r),
            Message::LenSet(l) => self.on_len_set(l),
            Message::AtomicDone(a) => self.on_atomic_done(a),
            Message::Error(e) => self.on_request_error(e),
            Message::Invalidate(i) => self.on_invalidate(i),
            Message::Recall(r) => self.on_recall(r),
            _ => false,
        };
        if !ok {
            // The server broke the protocol; a new connection starts clean.
            self.lost_connection(now, true);
        }
    }

    fn on_pages(&mut self, p: Pages) -> bool {
        let Some(r) = self.requests.get(p.req) else {
            return true;
        };
        let (file, first, count, refresh) = match r.kind {
            ReqKind::Fetch { file, first, count } => (file, first, count, false),
            ReqKind::Refresh { file, first, count } => (file, first, count, true),
            _ => return false,
        };
        let ps = self.conn.params().expect("connected").page_size;
        if refresh && p.exclusive {
            return false;
        }
        if p.first_page != first
            || p.pages.len() != count as usize
            || self.files.handle(file) != Some(p.file)
        {
            return false;
        }
        if p.pages
            .iter()
            .any(|g| g.data.as_ref().is_some_and(|d| d.len() as u64 != ps))
        {
            return false;
        }
        self.take_request(p.req);
        let mut woken = Vec::new();
        let open = self.mappings.page_ranges_of(file, ps, None);
        // Pages arriving count as used now: read-ahead that has not been
        // read yet is newer, for eviction, than the pages read behind it.
        let tick = self.cache.time();
        for (i, g) in p.pages.into_iter().enumerate() {
            let q = first + i as u64;
            if !open.iter().any(|(a, b)| (*a..*b).contains(&q)) {
                // Granted before the server read our `Unmap` of the only
                // mapping that covered it, and released with that `Unmap`:
                // it is no longer ours to hold.
                if let Some(pg) = self.cache.remove(file, q) {
                    woken.extend(pg.waiters);
                }
                continue;
            }
            let mut pg = self.cache.page(file, q);
            pg.touched = pg.touched.max(tick);
            if pg.fetch == Some(p.req) {
                pg.fetch = None;
            }
            match g.data {
                // A page we own and already have contents for (filled by a
                // full overwrite while this fetch was in flight) is newer than
                // the server's copy: keep ours.
                Some(_) if p.exclusive && pg.state == PageState::Exclusive && pg.data.is_some() => {
                }
                // Never let a grant's data replace bytes not yet written back.
                Some(_) if pg.dirty.is_some() => {}
                Some(d) => {
                    pg.data = PageData::Shared(d);
                    pg.dirty = None;
                }
                // A copy carried over a restart whose digest went out with
                // this refresh (it has not changed since: a stale copy is
                // neither written nor refilled while its check is in
                // flight): the server vouches for it.
                None if refresh && pg.stale && pg.carried => {}
                None if pg.stale => {
                    // A copy kept from a lost session is not trusted without
                    // a revalidation.
                    pg.data = PageData::None;
                }
                None => {}
            }
            pg.stale = false;
            pg.carried = false;
            pg.state = if p.exclusive {
                PageState::Exclusive
            } else {
                PageState::Shared
            };
            if !pg.data.is_some() && !p.exclusive {
                pg.state = PageState::Invalid;
            }
            pg.version = g.version;
            woken.extend(std::mem::take(&mut pg.waiters));
        }
        self.ops.wake_all_of(woken);
        true
    }

    fn on_write_ack(&mut self, a: WriteAck) -> bool {
        let Some(r) = self.requests.get(a.req) else {
            return true;
        };
        let ReqKind::WriteBack { pages, .. } = &r.kind else {
            return false;
        };
        if pages.len() != a.versions.len() {
            return false;
        }
        let Some(r) = self.take_request(a.req) else {
            return true;
        };
        let ReqKind::WriteBack {
            file, pages, op, ..
        } = r.kind
        else {
            return false;
        };
        for (q, v) in pages.iter().zip(&a.versions) {
            if let Some(mut pg) = self.cache.get_mut(file, *q) {
                pg.writebacks = pg.writebacks.saturating_sub(1);
                if pg.dirty.is_none() {
                    pg.version = *v;
                }
                let waiters: Vec<_> = pg.waiters.iter().copied().collect();
                drop(pg);
                self.ops.wake_all_of(waiters);
            }
        }
        if let Some(op) = op {
            self.writeback_done(op, a.req, None);
        }
        true
    }

    /// A write-back of `op` finished (`err`: it failed).
    fn writeback_done(
        &mut self,
        op: super::OpId,
        req: crate::protocol::ReqId,
        err: Option<OpError>,
    ) {
        let Some(o) = self.ops.get_mut(op) else {
            return;
        };
        match o {
            OpKind::Sync {
                writebacks, failed, ..
            } => {
                writebacks.remove(&req);
                if err.is_some() && failed.is_none() {
                    *failed = err;
                }
            }
            OpKind::Unmap { writebacks, .. } | OpKind::Close { writebacks, .. } => {
                writebacks.remove(&req);
            }
            _ => {}
        }
        self.ops.wake(op);
    }

    fn on_mapped(&mut self, m: Mapped) -> bool {
        let Some(r) = self.requests.get(m.req) else {
            return true;
        };
        let ReqKind::Map { mapping, op } = r.kind else {
            return false;
        };
        self.take_request(m.req);
        let Some(ms) = self.mappings.get(mapping) else {
            return true;
        };
        let reopening = ms.is_reopening();
        let old = ms.file;
        let file = match self.files.by_handle(m.file) {
            Some(f) => f,
            None => {
                let f = match old {
                    Some(f) if self.files.awaits_handle(f) => f,
                    _ => self.new_file(),
                };
                self.files.opened(f, m.file);
                f
            }
        };
        let ms = self.mappings.get_mut(mapping).expect("present");
        let waiters = ms.mapped(m.mapping, file, m.file_len);
        self.ops.wake_all_of(waiters);
        if let Some(op) = op {
            self.ops.wake(op);
        }
        if reopening {
            if let Some(old) = old
                && old != file
            {
                self.drop_file_if_unused(old);
            }
            self.revalidate(mapping, file);
        }
        true
    }

    fn drop_file_if_unused(&mut self, file: super::cache::FileId) {
        if self.mappings.use_file(file) {
            return;
        }
        self.drop_file(file);
    }

    fn on_unmapped(&mut self, u: Unmapped) -> bool {
        let Some(r) = self.requests.get(u.req) else {
            return true;
        };
        let ReqKind::Unmap { mapping, op } = r.kind else {
            return false;
        };
        self.take_request(u.req);
        self.finalize_unmap(mapping);
        self.complete(op, Ok(Completion::Unmapped));
        true
    }

    fn on_synced(&mut self, req: crate::protocol::ReqId) -> bool {
        let Some(r) = self.requests.get(req) else {
            return true;
        };
        let ReqKind::Sync { op } = r.kind else {
            return false;
        };
        self.take_request(req);
        match self.ops.get_mut(op) {
            Some(OpKind::Sync { done, .. }) => *done = true,
            Some(OpKind::Unmap { synced, .. }) => *synced = true,
            Some(OpKind::Close { syncs, .. }) => {
                if let Some(mapping) = syncs.remove(&req)
                    && let Some(m) = self.mappings.get_mut(mapping)
                {
                    m.synced_all();
                }
            }
            _ => return true,
        }
        self.ops.wake(op);
        true
    }

    fn on_revalidated(&mut self, r: Revalidated) -> bool {
        let Some(rq) = self.requests.get(r.req) else {
            return true;
        };
        let ReqKind::Revalidate { pages, .. } = &rq.kind else {
            return false;
        };
        if r.count as usize != pages.len() {
            return false;
        }
        let Some(rq) = self.take_request(r.req) else {
            return true;
        };
        let ReqKind::Revalidate { file, pages } = rq.kind else {
            return false;
        };
        for (i, (q, v)) in pages.iter().enumerate() {
            let Some(mut pg) = self.cache.get_mut(file, *q) else {
                continue;
            };
            if pg.fetch == Some(r.req) {
                pg.fetch = None;
            }
            if r.is_valid(i) && pg.stale && pg.version == *v && pg.data.is_some() {
                pg.stale = false;
                pg.state = PageState::Shared;
            } else if pg.stale {
                pg.invalidate();
            }
            let w: Vec<_> = pg.waiters.iter().copied().collect();
            drop(pg);
            self.ops.wake_all_of(w);
        }
        true
    }

    /// Revalidation or refresh `req` failed: its stale copies are dropped,
    /// and whoever waited for its pages (stale or not: an `Invalidate` may
    /// have dropped a copy while the request was out) fetches them again.
    fn drop_unvouched(
        &mut self,
        req: ReqId,
        file: FileId,
        pages: impl IntoIterator<Item = PageNo>,
    ) {
        for q in pages {
            if let Some(mut pg) = self.cache.get_mut(file, q) {
                let ours = pg.fetch == Some(req);
                if !pg.stale && !ours {
                    continue;
                }
                if pg.stale {
                    pg.invalidate();
                }
                pg.fetch = None;
                let w: Vec<_> = pg.waiters.iter().copied().collect();
                drop(pg);
                self.ops.wake_all_of(w);
            }
        }
    }

    fn on_len_set(&mut self, l: LenSet) -> bool {
        let Some(r) = self.requests.get(l.req) else {
            return true;
        };
        let ReqKind::SetLen { op } = r.kind else {
            return false;
        };
        self.take_request(l.req);
        self.complete(op, Ok(Completion::LenSet { len: l.len }));
        true
    }

    fn on_atomic_done(&mut self, a: AtomicDone) -> bool {
        let Some(r) = self.requests.get(a.req) else {
            return true;
        };
        let ReqKind::Atomic { op } = r.kind else {
            return false;
        };
        self.take_request(a.req);
        // An applied atomic is a write of its mapping: not durable until synced.
        if a.applied
            && let Some(OpKind::Atomic {
                mapping, offset, ..
            }) = self.ops.get(op)
            && let Some(ps) = self.conn.page_size()
            && let Some(m) = self.mappings.get_mut(*mapping)
        {
            m.wrote(offset / ps..offset / ps + 1);
        }
        self.complete(
            op,
            Ok(Completion::Atomic {
                previous: a.previous,
                applied: a.applied,
            }),
        );
        true
    }

    fn on_request_error(&mut self, e: ErrorMsg) -> bool {
        let Some(r) = self.take_request(e.req) else {
            return true;
        };
        let message = String::from_utf8_lossy(&e.message).into_owned();
        let err = OpError::server(e.code, message.clone());
        match r.kind {
            ReqKind::Map { mapping, op } => {
                let reopening = self.mappings.get(mapping).is_some_and(|m| m.is_reopening());
                if reopening {
                    let m = self.mappings.get_mut(mapping).expect("present");
                    let lost = LostWrites {
                        path: m.path.clone(),
                        cause: LossCause::Session(super::SessionLossReason::LeaseExpired),
                        dirty_pages: 0,
                        unsynced_writes: false,
                        remap_error: Some(format!("{}: {message}", e.code).into()),
                        pages: Vec::new(),
                        unsynced_pages: Box::default(),
                    };
                    m.lose(lost.clone());
                    let w = std::mem::take(&mut m.waiters);
                    self.ops.wake_all_of(w);
                    if self.fail_mapping_ops(mapping, OpError::SessionLost(lost)) > 0 {
                        // Told: it is mapped again at its next use.
                        let _reported = self.report_loss(mapping);
                    }
                } else {
                    if let Some(m) = self.mappings.remove(mapping) {
                        self.ops.wake_all_of(m.waiters);
                    }
                    if let Some(op) = op {
                        self.complete(op, Err(err));
                    }
                }
            }
            ReqKind::Unmap { mapping, op } => {
                self.finalize_unmap(mapping);
                self.complete(op, Ok(Completion::Unmapped));
            }
            ReqKind::Fetch { file, first, count } => {
                let mut waiters = Vec::new();
                self.cache
                    .update_range(file, first..first + count as u64, |_, pg| {
                        if pg.fetch == Some(e.req) {
                            pg.fetch = None;
                        }
                        waiters.extend(pg.waiters.iter().copied());
                    });
                if e.code == ErrorCode::Cancelled {
                    self.ops.wake_all_of(waiters);
                } else if e.code == ErrorCode::ShuttingDown {
                    // The server grants no ownership until its next run:
                    // the waiters sleep until the next handshake wakes every
                    // operation, then fetch again.
                } else {
                    for w in waiters {
                        self.complete(w, Err(err.clone()));
                    }
                }
            }
            ReqKind::WriteBack {
                file,
                pages,
                op,
                mapping,
            } => {
                for q in &pages {
                    if let Some(mut pg) = self.cache.get_mut(file, *q) {
                        pg.writebacks = pg.writebacks.saturating_sub(1);
                    }
                }
                let mut distinct = pages.clone();
                distinct.dedup();
                self.lose_writes(
                    mapping,
                    LossCause::WriteBackFailed(format!("{}: {message}", e.code)),
                    distinct.len() as u64,
                );
                if let Some(op) = op {
                    self.writeback_done(op, e.req, Some(err));
                }
            }
            ReqKind::Sync { op } => {
                match self.ops.get_mut(op) {
                    Some(OpKind::Sync { failed, .. }) => *failed = Some(err),
                    Some(OpKind::Unmap {
                        failed, sync_req, ..
                    }) => {
                        *failed = Some(err);
                        *sync_req = None;
                    }
                    Some(OpKind::Close { failed, syncs, .. }) => {
                        syncs.remove(&e.req);
                        failed.get_or_insert(err);
                    }
                    _ => return true,
                }
                self.ops.wake(op);
            }
            ReqKind::Refresh { file, first, count } => {
                self.drop_unvouched(e.req, file, first..first + count as u64)
            }
            ReqKind::Revalidate { file, pages } => {
                self.drop_unvouched(e.req, file, pages.into_iter().map(|(q, _)| q))
            }
            ReqKind::Atomic { op } if e.code == ErrorCode::ShuttingDown => {
                // Not applied: asked again of the next run, after the next
                // handshake wakes every operation.
                if let Some(OpKind::Atomic { req, .. }) = self.ops.get_mut(op) {
                    *req = None;
                }
            }
            ReqKind::SetLen { op } | ReqKind::Atomic { op } => self.complete(op, Err(err)),
        }
        true
    }

    /// Marks a mapping as having lost writes: its operations fail from now on.
    pub(crate) fn lose_writes(&mut self, mapping: super::MappingId, cause: LossCause, pages: u64) {
        let Some(m) = self.mappings.get_mut(mapping) else {
            return;
        };
        let lost = match &mut m.status {
            MappingStatus::Lost(l) => {
                l.dirty_pages += pages;
                l.clone()
            }
            _ => {
                let l = LostWrites {
                    path: m.path.clone(),
                    cause,
                    dirty_pages: pages,
                    unsynced_writes: false,
                    remap_error: None,
                    pages: Vec::new(),
                    unsynced_pages: Box::default(),
                };
                if !m.is_closing() {
                    m.lose(l.clone());
                }
                l
            }
        };
        self.fail_mapping_ops(mapping, OpError::SessionLost(lost.clone()));
        self.fail_memory(mapping, &OpError::SessionLost(lost));
    }

    fn on_invalidate(&mut self, i: Invalidate) -> bool {
        if let Some(file) = self.files.by_handle(i.file) {
            let end = i.first_page.saturating_add(i.count as u64);
            self.withdraw_range(file, i.first_page, end, |p| p.state != PageState::Exclusive);
            let mut woken = Vec::new();
            self.cache.update_range(file, i.first_page..end, |_, pg| {
                if pg.dirty.is_some() || pg.state == PageState::Exclusive {
                    // The server thinks we share what we own: keep the data
                    // (the protocol never does this; see docs/CONSISTENCY.md).
                    return;
                }
                pg.invalidate();
                woken.extend(pg.waiters.iter().copied());
            });
            self.ops.wake_all_of(woken);
        }
        self.conn
            .transmit(&Message::InvalidateAck(InvalidateAck { rev: i.rev }));
        true
    }

    fn on_recall(&mut self, r: Recall) -> bool {
        let mut patches: Vec<PagePatch> = Vec::new();
        if let Some(file) = self.files.by_handle(r.file) {
            let end = r.first_page.saturating_add(r.count as u64);
            let pages: Vec<u64> = self
                .cache
                .range(file, r.first_page..end)
                .map(|(q, _)| q)
                .collect();
            for q in pages {
                // A page in memory: write-protect it and take its changes.
                self.capture_page(file, q);
                let (state, dirty) = {
                    let pg = self.cache.get(file, q).expect("listed");
                    (pg.state, pg.dirty)
                };
                if state == PageState::Shared && !r.downgrade {
                    // The server thinks we own the page (a grant we never saw):
                    // once we acknowledge, it counts us out entirely.
                    let mut pg = self.cache.get_mut(file, q).expect("listed");
                    pg.invalidate();
                    let w: Vec<_> = pg.waiters.iter().copied().collect();
                    drop(pg);
                    self.ops.wake_all_of(w);
                    self.zap_if_gone(file, q);
                    continue;
                }
                if state != PageState::Exclusive {
                    continue;
                }
                if let Some((lo, hi)) = dirty {
                    let pieces = self.split_dirty(file, q, lo, hi);
                    let pg = self.cache.get(file, q).expect("listed");
                    let data = pg.data.as_slice().expect("dirty pages have data");
                    for (_, _, off, len) in pieces {
                        patches.push(PagePatch {
                            page: q,
                            offset: off,
                            data: bytes::Bytes::copy_from_slice(
                                &data[off as usize..(off + len) as usize],
                            ),
                        });
                    }
                }
                let mut pg = self.cache.get_mut(file, q).expect("listed");
                pg.dirty = None;
                if r.downgrade && pg.data.is_some() {
                    pg.state = PageState::Shared;
                    if dirty.is_some() {
                        // The server bumps the version when it applies our
                        // data; we do not learn it: this copy can never be
                        // revalidated.
                        pg.version = super::VERSION_UNKNOWN;
                    }
                    // Shared bytes stay as they are; owned ones are frozen.
                    pg.freeze_data();
                } else {
                    pg.invalidate();
                }
                let w: Vec<_> = pg.waiters.iter().copied().collect();
                drop(pg);
                self.ops.wake_all_of(w);
                self.zap_if_gone(file, q);
            }
        }
        let ack = Message::RecallAck(RecallAck {
            rev: r.rev,
            patches,
        });
        self.conn.transmit(&ack);
        if let Message::RecallAck(a) = &ack
            && !a.patches.is_empty()
        {
            let file = self
                .files
                .by_handle(r.file)
                .expect("patches only come from known files");
            self.requests.log_recall_ack(r.rev, file, ack);
        }
        true
    }
}
