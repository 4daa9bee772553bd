//! Requests about pages: fetch, write-back, sync, release, revalidate,
//! atomic operations.

use bytes::Bytes;

use crate::Instant;
use crate::protocol::{
    Atomic, ErrorCode, Fetch, Message, PagePatch, Refresh, Release, Revalidate, Revalidated,
    SessionId, Sync, Synced, WireMappingId, WriteAck, WriteBack, fetch_flags,
};

use crate::store::WriteRun;

use super::ids::FileId;
use super::ids::OpId;
use super::ops::{Op, OpKind};
use super::requests::{Outcome, store_failure};
use super::session::MappingEntry;
use super::{Failure, Server};

impl Server {
    pub(super) fn do_fetch(&mut self, now: Instant, sid: SessionId, f: Fetch) -> Outcome {
        if f.flags & !(fetch_flags::EXCLUSIVE | fetch_flags::WANT_DATA | fetch_flags::OVERWRITE)
            != 0
        {
            return Err(Failure::new(
                ErrorCode::Protocol,
                format!("unknown fetch flags 0x{:02x}", f.flags),
            ));
        }
        let exclusive = f.flags & fetch_flags::EXCLUSIVE != 0;
        let want_data = f.flags & fetch_flags::WANT_DATA != 0;
        let overwrite = f.flags & fetch_flags::OVERWRITE != 0;
        if overwrite && (!exclusive || want_data) {
            return Err(Failure::new(
                ErrorCode::Protocol,
                "OVERWRITE needs EXCLUSIVE and excludes WANT_DATA",
            ));
        }
        let m = self.fetchable(sid, f.mapping, f.first_page, f.count, exclusive)?;
        let kind = OpKind::Fetch {
            exclusive,
            want_data,
            overwrite,
            known: None,
        };
        let end = f.first_page + f.count as u64;
        let op = Op::new(sid, f.req, Some(f.mapping), kind).on_pages(m.file, f.first_page, end);
        self.start_page_op(now, op);
        Ok(None)
    }

    /// A shared fetch that sends only the pages whose digests differ.
    pub(super) fn do_refresh(&mut self, now: Instant, sid: SessionId, r: Refresh) -> Outcome {
        let count = u32::try_from(r.digests.len()).unwrap_or(u32::MAX);
        let m = self.fetchable(sid, r.mapping, r.first_page, count, false)?;
        let kind = OpKind::Fetch {
            exclusive: false,
            want_data: true,
            overwrite: false,
            known: Some(r.digests.into()),
        };
        let end = r.first_page + count as u64;
        let op = Op::new(sid, r.req, Some(r.mapping), kind).on_pages(m.file, r.first_page, end);
        self.start_page_op(now, op);
        Ok(None)
    }

    /// Checks that the session may fetch `count` pages from `first` through
    /// `mapping` (exclusively if `exclusive`); returns the mapping.
    fn fetchable(
        &self,
        sid: SessionId,
        mapping: WireMappingId,
        first: u64,
        count: u32,
        exclusive: bool,
    ) -> Result<MappingEntry, Failure> {
        let m = self.mapping(sid, mapping)?;
        if exclusive && !m.writable {
            return Err(Failure::new(
                ErrorCode::ReadOnly,
                format!("mapping {mapping} is read-only"),
            ));
        }
        if exclusive && self.shutdown.is_some() {
            return Err(Failure::new(
                ErrorCode::ShuttingDown,
                "the server is shutting down; no new write ownership",
            ));
        }
        let max = self.sessions[&sid].max_pages;
        if count == 0 || count > max {
            return Err(Failure::new(
                ErrorCode::OutOfRange,
                format!("a fetch asks for 1 to {max} pages, not {count}"),
            ));
        }
        let (a, b) = m.pages(self.config.page_size as u64);
        let end = first.saturating_add(count as u64);
        if first < a || end > b {
            return Err(Failure::new(
                ErrorCode::OutOfRange,
                format!("pages {first}..{end} are outside mapping {mapping} (pages {a}..{b})"),
            ));
        }
        let s = &self.sessions[&sid];
        if s.held_count + count as u64 > self.config.max_held_pages {
            return Err(Failure::new(
                ErrorCode::TooManyPages,
                format!(
                    "the session holds {} pages; the limit is {}",
                    s.held_count, self.config.max_held_pages
                ),
            ));
        }
        Ok(m)
    }

    fn check_patch(
        &self,
        m: &MappingEntry,
        mapping: crate::protocol::WireMappingId,
        p: &PagePatch,
    ) -> Result<(), Failure> {
        let ps = self.config.page_size as u64;
        let fits = (p.offset as u64)
            .checked_add(p.data.len() as u64)
            .is_some_and(|e| e <= ps);
        if !fits
            || !m.contains_bytes(
                p.page.saturating_mul(ps).saturating_add(p.offset as u64),
                p.data.len() as u64,
            )
        {
            return Err(Failure::new(
                ErrorCode::OutOfRange,
                format!(
                    "{} bytes at offset {} of page {} are outside mapping {mapping}",
                    p.data.len(),
                    p.offset,
                    p.page
                ),
            ));
        }
        Ok(())
    }

    /// Dirty data in a recall must lie in a read-write mapping of the session.
    pub(super) fn check_patch_rights(
        &self,
        sid: SessionId,
        file: FileId,
        p: &PagePatch,
    ) -> Result<(), Failure> {
        let ps = self.config.page_size as u64;
        let start = p.page.saturating_mul(ps).saturating_add(p.offset as u64);
        let ok = self.sessions[&sid]
            .mappings
            .values()
            .any(|m| m.file == file && m.writable && m.contains_bytes(start, p.data.len() as u64));
        if ok {
            Ok(())
        } else {
            Err(Failure::fatal(
                ErrorCode::Protocol,
                format!(
                    "recalled data for page {} lies outside every read-write mapping",
                    p.page
                ),
            ))
        }
    }

    pub(super) fn do_write_back(&mut self, sid: SessionId, w: WriteBack) -> Outcome {
        let m = self.mapping(sid, w.mapping)?;
        if !m.writable {
            return Err(Failure::new(
                ErrorCode::ReadOnly,
                format!("mapping {} is read-only", w.mapping),
            ));
        }
        let f = self.files.get(m.file);
        for p in &w.patches {
            self.check_patch(&m, w.mapping, p)?;
            if f.pages.get(&p.page).is_none_or(|e| e.owner != Some(sid)) {
                return Err(Failure::new(
                    ErrorCode::NotOwner,
                    format!(
                        "page {} of {} is not owned by this session; write back only pages you own",
                        p.page, f.path
                    ),
                ));
            }
        }
        // The versions change now: from here on every read gets these bytes
        // (from the disk, or from memory while they are not on it).
        let mut versions = Vec::with_capacity(w.patches.len());
        for p in &w.patches {
            let v = self.bump_version();
            self.files.get_mut(m.file).entry(p.page).version = v;
            versions.push(v);
        }
        let op = Op::new(sid, w.req, Some(w.mapping), OpKind::WriteBack { versions });
        let id = self.register_op(op);
        self.op_uses_file(id, m.file);
        self.write_patches(m.file, &w.patches, sid, Some(id));
        // Answered when its writes finish (at once if there were none).
        self.ops.get_mut(&id).expect("registered").store_waits += 1;
        self.write_back_written(id);
        Ok(None)
    }

    /// Writes patches through the disk, as one request: patches that
    /// continue one another (a write-back of consecutive whole pages) form
    /// one run, written with one vectored call and no copy to join them.
    pub(super) fn write_patches(
        &mut self,
        file: FileId,
        patches: &[PagePatch],
        writer: SessionId,
        op: Option<OpId>,
    ) {
        let ps = self.config.page_size as u64;
        let len = self.files.get(file).len;
        let mut runs: Vec<WriteRun> = Vec::new();
        // The spans of `runs`, to find an overlap in log time.
        let mut spans: std::collections::BTreeMap<u64, u64> = Default::default();
        let mut i = 0;
        while i < patches.len() {
            let at = patches[i].page * ps + patches[i].offset as u64;
            let mut end = at + patches[i].data.len() as u64;
            let mut parts = vec![patches[i].data.clone()];
            let mut j = i + 1;
            while j < patches.len() && patches[j].page * ps + patches[j].offset as u64 == end {
                end += patches[j].data.len() as u64;
                parts.push(patches[j].data.clone());
                j += 1;
            }
            i = j;
            // Bytes past the end of the file (the tail of its last page) are
            // not the file's: a write there would grow it.
            let keep = len.saturating_sub(at);
            if keep < end - at {
                parts = clip(parts, keep as usize);
            }
            if !parts.is_empty() {
                // A later patch of the same bytes wins: runs may not overlap
                // within one request, so an overlap starts a new request.
                let end = at + parts.iter().map(|p| p.len() as u64).sum::<u64>();
                let overlaps = spans.range(..end).next_back().is_some_and(|(_, e)| *e > at);
                if overlaps {
                    self.write_unsynced(file, std::mem::take(&mut runs), writer, op);
                    spans.clear();
                }
                spans.insert(at, end);
                runs.push(WriteRun { offset: at, parts });
            }
        }
        if !runs.is_empty() {
            self.write_unsynced(file, runs, writer, op);
        }
    }

    /// A write of a write-back finished; when the last has, the write-back
    /// is answered (whatever the disk said: what it refused is kept and
    /// written again, and the session hears of it at its next sync).
    pub(super) fn write_back_written(&mut self, id: OpId) {
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        op.store_waits = op.store_waits.saturating_sub(1);
        if op.store_waits > 0 {
            return;
        }
        let OpKind::WriteBack { versions } = op.kind.clone() else {
            return;
        };
        let req = op.req;
        self.answer_op(id, Message::WriteAck(WriteAck { req, versions }), true);
    }

    pub(super) fn do_sync(&mut self, sid: SessionId, s: Sync) -> Outcome {
        let m = self.mapping(sid, s.mapping)?;
        let id = self.register_op(Op::new(sid, s.req, Some(s.mapping), OpKind::Sync));
        self.op_uses_file(id, m.file);
        self.ops.get_mut(&id).expect("registered").store_waits += 1;
        self.disk.sync(m.file, Some(id));
        Ok(None)
    }

    /// The fsync of a sync finished: it succeeds when none of the session's
    /// bytes in the file are still off the disk. Bytes still on their way
    /// (a later write over the session's bytes, queued behind the fsync,
    /// now carries them) need another fsync once they are written.
    pub(super) fn sync_done(&mut self, id: OpId) {
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        op.store_waits -= 1;
        let (sid, req, file) = (op.session, op.req, op.file.expect("known"));
        // Bytes of sessions that ended (their clients come back in new
        // sessions) are every syncer's concern; so are those of a doomed
        // session, which lingers until its lease runs out but can never be
        // resumed, so its client is told only in its new session.
        let live = |s: SessionId| self.sessions.get(&s).is_some_and(|s| !s.doomed);
        let failure = self.disk.failure_of(file, sid, &live);
        let pending = self.disk.pending_for(file, sid, &live);
        match failure {
            None if pending => {
                self.ops.get_mut(&id).expect("exists").store_waits += 1;
                self.disk.sync(file, Some(id));
            }
            None => self.answer_op(id, Message::Synced(Synced { req }), false),
            Some(e) => {
                let path = self.files.get(file).path.clone();
                let mut f = store_failure(&path, e);
                f.message = format!(
                    "{}; the data is kept on the server and written again: \
                     sync again once the cause is fixed",
                    f.message
                );
                self.fail_op(id, f)
            }
        }
    }

    pub(super) fn on_release(&mut self, sid: SessionId, r: &Release) {
        let s = &self.sessions[&sid];
        let Some(&file) = s.handles.get(&r.file) else {
            return;
        };
        let end = r.first_page.saturating_add(r.count as u64);
        let pages: Vec<u64> = s
            .held
            .get(&file)
            .map(|set| set.range(r.first_page..end).copied().collect())
            .unwrap_or_default();
        for p in pages {
            let f = self.files.get_mut(file);
            if let Some(e) = f.pages.get_mut(&p) {
                e.drop_holder(sid);
            }
            f.gc_page(p);
            self.sessions
                .get_mut(&sid)
                .expect("live")
                .note_released(file, p);
        }
    }

    pub(super) fn do_revalidate(&mut self, sid: SessionId, r: Revalidate) -> Outcome {
        let m = self.mapping(sid, r.mapping)?;
        let (a, b) = m.pages(self.config.page_size as u64);
        if let Some(p) = r.pages.iter().find(|p| p.page < a || p.page >= b) {
            return Err(Failure::new(
                ErrorCode::OutOfRange,
                format!(
                    "page {} is outside mapping {} (pages {a}..{b})",
                    p.page, r.mapping
                ),
            ));
        }
        let s = &self.sessions[&sid];
        if s.held_count + r.pages.len() as u64 > self.config.max_held_pages {
            return Err(Failure::new(
                ErrorCode::TooManyPages,
                "revalidating these pages would pass the held-page limit",
            ));
        }
        let mut valid = vec![0u8; r.pages.len().div_ceil(8)];
        for (i, pv) in r.pages.iter().enumerate() {
            let f = self.files.get_mut(m.file);
            let current = f.version_of(pv.page);
            let busy = f.pages.get(&pv.page).is_some_and(|e| {
                // An owner (even this session, which has no business asking)
                // makes the page not revalidatable.
                e.lock.is_some() || !e.queue.is_empty() || e.owner.is_some()
            });
            if !busy && current == pv.version {
                f.entry(pv.page).add_sharer(sid);
                self.sessions
                    .get_mut(&sid)
                    .expect("live")
                    .note_held(m.file, pv.page);
                valid[i / 8] |= 1 << (i % 8);
            }
        }
        let reply = Revalidated {
            req: r.req,
            count: r.pages.len() as u32,
            valid: Bytes::from(valid),
        };
        Ok(Some((Message::Revalidated(reply), false)))
    }

    pub(super) fn do_atomic(&mut self, now: Instant, sid: SessionId, a: Atomic) -> Outcome {
        let m = self.mapping(sid, a.mapping)?;
        if !m.writable {
            return Err(Failure::new(
                ErrorCode::ReadOnly,
                format!("mapping {} is read-only", a.mapping),
            ));
        }
        if a.offset % 8 != 0 {
            return Err(Failure::new(
                ErrorCode::Misaligned,
                format!("offset {} is not a multiple of 8", a.offset),
            ));
        }
        if !m.contains_bytes(a.offset, 8) {
            return Err(Failure::new(
                ErrorCode::OutOfRange,
                format!("the word at {} is outside mapping {}", a.offset, a.mapping),
            ));
        }
        let page = a.offset / self.config.page_size as u64;
        let kind = OpKind::Atomic {
            offset: a.offset,
            op: a.op,
        };
        let op = Op::new(sid, a.req, Some(a.mapping), kind).on_pages(m.file, page, page + 1);
        self.start_page_op(now, op);
        Ok(None)
    }
}

/// The first `keep` bytes of `parts`.
fn clip(parts: Vec<Bytes>, mut keep: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    for p in parts {
        if keep == 0 {
            break;
        }
        let n = p.len().min(keep);
        out.push(p.slice(..n));
        keep -= n;
    }
    out
}
