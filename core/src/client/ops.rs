//! Application operations: how each one makes progress, and the requests
//! it sends to get there.
//!
//! An operation is stepped whenever something it waits for changes (a page,
//! the lease, room in the request window, its mapping). A step either
//! finishes it or registers what it now waits for.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};

use crate::Instant;
use crate::protocol::{
    Fetch, Map, Message, PageNo, PagePatch, Release, ReqId, SetLen, Sync, Unmap, WireMappingId,
    WriteBack, fetch_flags, map_flags,
};

use super::cache::{FileId, PageState};
use super::{
    Client, Completion, Conn, LogEntry, MappingId, MappingStatus, OpError, OpId, OpKind, ReqKind,
    Request,
};

/// What a step of an operation came to.
enum Step {
    Pending(OpKind),
    Done(Result<Completion, OpError>),
}

/// What a fetch must ask for a page.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Need {
    Shared,
    Exclusive { want_data: bool, overwrite: bool },
}

impl Client {
    pub(crate) fn step(&mut self, now: Instant, id: OpId) {
        let Some(op) = self.ops.remove(&id) else {
            return;
        };
        let r = if self.gave_up(now) && !matches!(op.kind, OpKind::Close { .. }) {
            let since = self.disconnected_since.expect("gave up while disconnected");
            Step::Done(Err(OpError::Disconnected(now - since)))
        } else {
            match op.kind {
                OpKind::Map { mapping } => self.step_map(id, mapping),
                OpKind::Read {
                    mapping,
                    start,
                    len,
                    pos,
                    buf,
                    sequential,
                } => self.step_read(now, id, mapping, start, len, pos, buf, sequential),
                OpKind::Write {
                    mapping,
                    start,
                    data,
                    pos,
                } => self.step_write(now, id, mapping, start, data, pos),
                OpKind::Sync {
                    mapping,
                    snapshot,
                    upto,
                    writebacks,
                    sync_req,
                    done,
                    failed,
                } => self.step_sync(
                    id, mapping, snapshot, upto, writebacks, sync_req, done, failed,
                ),
                OpKind::Unmap {
                    mapping,
                    writebacks,
                    req,
                } => self.step_unmap(id, mapping, writebacks, req),
                OpKind::SetLen {
                    path,
                    len,
                    create,
                    req,
                } => self.step_set_len(id, path, len, create, req),
                OpKind::Atomic {
                    mapping,
                    offset,
                    op,
                    req,
                } => self.step_atomic(id, mapping, offset, op, req),
                OpKind::Close {
                    writebacks,
                    bye_sent,
                } => self.step_close(id, writebacks, bye_sent),
            }
        };
        match r {
            Step::Pending(kind) => {
                self.ops.insert(id, super::Op { kind });
            }
            Step::Done(result) => self
                .events
                .push_back(super::Event::Completed { op: id, result }),
        }
    }

    fn gave_up(&self, now: Instant) -> bool {
        matches!((self.disconnected_since, self.config.give_up_after), (Some(s), Some(l)) if now >= s + l)
    }

    // ---- requests ----

    /// Whether a new request may be sent now: a session exists and the
    /// oldest unanswered request is within the window.
    pub(crate) fn request_room(&self) -> bool {
        let (Some(p), Some(_)) = (&self.params, &self.session) else {
            return false;
        };
        if matches!(self.conn, Conn::Failed) {
            return false;
        }
        self.requests
            .first_key_value()
            .is_none_or(|(oldest, _)| self.next_req - oldest.0 < p.window)
    }

    /// Numbers, logs and (when connected) sends a request.
    pub(crate) fn send_request(
        &mut self,
        build: impl FnOnce(ReqId) -> Message,
        kind: ReqKind,
    ) -> ReqId {
        let req = ReqId(self.next_req);
        self.next_req += 1;
        let msg = build(req);
        self.transmit(&msg);
        self.next_seq += 1;
        let seq = self.next_seq;
        self.log.insert(seq, LogEntry::Request(req));
        self.requests.insert(req, Request { seq, msg, kind });
        req
    }

    /// Removes an answered request and wakes whoever waited for room.
    pub(crate) fn take_request(&mut self, req: ReqId) -> Option<Request> {
        let r = self.requests.remove(&req)?;
        self.log.remove(&r.seq);
        let w = std::mem::take(&mut self.window_waiters);
        self.woken.extend(w);
        Some(r)
    }

    /// The mapping's wire id and file, or why the op cannot use it now
    /// (`Ok(None)`: wait; the op is registered as a waiter).
    fn ready_mapping(
        &mut self,
        id: OpId,
        mapping: MappingId,
    ) -> Result<Option<(WireMappingId, FileId)>, OpError> {
        let m = self
            .mappings
            .get_mut(&mapping)
            .ok_or(OpError::UnknownMapping)?;
        match &m.status {
            MappingStatus::Ready { wire } => {
                Ok(Some((*wire, m.file.expect("ready mappings have a file"))))
            }
            MappingStatus::Lost(l) => Err(OpError::SessionLost(l.clone())),
            MappingStatus::Closing => Err(OpError::MappingClosed),
            MappingStatus::Opening { .. } | MappingStatus::Reopening { .. } => {
                m.waiters.insert(id);
                Ok(None)
            }
        }
    }

    /// Registers `id` to wait for a lease renewal and makes sure one is on
    /// its way.
    fn wait_lease(&mut self, now: Instant, id: OpId) {
        self.lease_waiters.insert(id);
        if matches!(self.conn, Conn::Ready) {
            self.send_ping(now);
        }
    }

    /// Asks for the pages from `from` up to `limit` (exclusive) that need
    /// `need`, in one fetch. `write` is the byte range a write will overwrite.
    #[allow(clippy::too_many_arguments)]
    fn request_pages(
        &mut self,
        id: Option<OpId>,
        wire: WireMappingId,
        file: FileId,
        from: PageNo,
        limit: PageNo,
        exclusive: bool,
        write: Option<(u64, u64)>,
    ) {
        let ps = self.params.as_ref().expect("mapped").page_size;
        let max = self.params.as_ref().expect("mapped").max_pages as u64;
        if self.files[&file]
            .pages
            .get(&from)
            .is_some_and(|p| p.fetch.is_some())
        {
            return;
        }
        if !self.request_room() {
            if let Some(id) = id {
                self.window_waiters.insert(id);
            }
            return;
        }
        let need_of = |f: &super::cache::FileState, q: PageNo| -> Option<Need> {
            let pg = f.pages.get(&q);
            if pg.is_some_and(|p| p.fetch.is_some()) {
                return None;
            }
            let readable = pg.is_some_and(|p| p.readable());
            if !exclusive {
                return (!readable).then_some(Need::Shared);
            }
            if pg.is_some_and(|p| p.state == PageState::Exclusive && p.data.is_some()) {
                return None;
            }
            let full = write.is_some_and(|(s, e)| s <= q * ps && e >= (q + 1) * ps);
            if pg.is_some_and(|p| p.state == PageState::Exclusive) && full {
                return None;
            }
            Some(Need::Exclusive {
                want_data: !readable && !full,
                overwrite: !readable && full,
            })
        };
        let f = &self.files[&file];
        let Some(first_need) = need_of(f, from) else {
            return;
        };
        let mut count = 1u64;
        while from + count < limit && count < max && need_of(f, from + count) == Some(first_need) {
            count += 1;
        }
        let flags = match first_need {
            Need::Shared => fetch_flags::WANT_DATA,
            Need::Exclusive {
                want_data,
                overwrite,
            } => {
                fetch_flags::EXCLUSIVE
                    | if want_data { fetch_flags::WANT_DATA } else { 0 }
                    | if overwrite { fetch_flags::OVERWRITE } else { 0 }
            }
        };
        let count32 = count as u32;
        let req = self.send_request(
            |req| {
                Message::Fetch(Fetch {
                    req,
                    mapping: wire,
                    first_page: from,
                    count: count32,
                    flags,
                })
            },
            ReqKind::Fetch {
                file,
                first: from,
                count: count32,
            },
        );
        let f = self.files.get_mut(&file).expect("mapped");
        for q in from..from + count {
            f.page(q).fetch = Some(req);
        }
    }

    /// Fetches ahead of a sequential reader, several fetches in flight.
    fn readahead(&mut self, mapping: MappingId, wire: WireMappingId, file: FileId, from: PageNo) {
        let ps = self.params.as_ref().expect("mapped").page_size;
        let max = self.params.as_ref().expect("mapped").max_pages as u64;
        let m = &self.mappings[&mapping];
        let end = m.pages(ps).1;
        let limit = (from + self.config.readahead_pages as u64).min(end);
        let mut p = m.readahead_to.max(from);
        while p < limit && self.request_room() {
            let f = &self.files[&file];
            let busy = f
                .pages
                .get(&p)
                .is_some_and(|pg| pg.fetch.is_some() || pg.readable());
            if busy {
                p += 1;
                continue;
            }
            let to = (p + max).min(limit);
            self.request_pages(None, wire, file, p, to, false, None);
            p += 1;
        }
        if let Some(m) = self.mappings.get_mut(&mapping) {
            m.readahead_to = p;
        }
    }

    // ---- operations ----

    fn step_map(&mut self, id: OpId, mapping: MappingId) -> Step {
        let Some(m) = self.mappings.get(&mapping) else {
            return Step::Done(Err(OpError::UnknownMapping));
        };
        match &m.status {
            MappingStatus::Ready { .. } => Step::Done(Ok(Completion::Mapped {
                mapping,
                file_len: m.file_len,
            })),
            MappingStatus::Lost(l) => Step::Done(Err(OpError::SessionLost(l.clone()))),
            MappingStatus::Closing => Step::Done(Err(OpError::MappingClosed)),
            MappingStatus::Opening { req: Some(_) } | MappingStatus::Reopening { req: Some(_) } => {
                self.mappings
                    .get_mut(&mapping)
                    .expect("present")
                    .waiters
                    .insert(id);
                Step::Pending(OpKind::Map { mapping })
            }
            MappingStatus::Opening { req: None } | MappingStatus::Reopening { req: None } => {
                if !self.request_room() {
                    if self.params.is_none() {
                        self.session_waiters.insert(id);
                    } else {
                        self.window_waiters.insert(id);
                    }
                    return Step::Pending(OpKind::Map { mapping });
                }
                self.send_map(mapping, Some(id));
                self.mappings
                    .get_mut(&mapping)
                    .expect("present")
                    .waiters
                    .insert(id);
                Step::Pending(OpKind::Map { mapping })
            }
        }
    }

    pub(crate) fn send_map(&mut self, mapping: MappingId, op: Option<OpId>) {
        let m = &self.mappings[&mapping];
        let reopening = matches!(m.status, MappingStatus::Reopening { .. });
        let mut flags = if m.writable { map_flags::WRITE } else { 0 };
        if m.create && !reopening {
            flags |= map_flags::CREATE;
        }
        let (offset, len, path) = (m.offset, m.len, Bytes::from(m.path.clone().into_bytes()));
        let req = self.send_request(
            |req| {
                Message::Map(Map {
                    req,
                    flags,
                    offset,
                    len,
                    path,
                })
            },
            ReqKind::Map { mapping, op },
        );
        let m = self.mappings.get_mut(&mapping).expect("present");
        m.status = if reopening {
            MappingStatus::Reopening { req: Some(req) }
        } else {
            MappingStatus::Opening { req: Some(req) }
        };
    }

    /// Maps again, after a lost session, every mapping that lost nothing.
    pub(crate) fn drive_mappings(&mut self) {
        let todo: Vec<MappingId> = self
            .mappings
            .iter()
            .filter(|(_, m)| matches!(m.status, MappingStatus::Reopening { req: None }))
            .map(|(id, _)| *id)
            .collect();
        for m in todo {
            if !self.request_room() {
                break;
            }
            self.send_map(m, None);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn step_read(
        &mut self,
        now: Instant,
        id: OpId,
        mapping: MappingId,
        start: u64,
        len: u64,
        mut pos: u64,
        mut buf: Option<BytesMut>,
        sequential: bool,
    ) -> Step {
        let pending = |pos, buf| OpKind::Read {
            mapping,
            start,
            len,
            pos,
            buf,
            sequential,
        };
        let (wire, file) = match self.ready_mapping(id, mapping) {
            Err(e) => return Step::Done(Err(e)),
            Ok(None) => return Step::Pending(pending(pos, buf)),
            Ok(Some(x)) => x,
        };
        let ps = self.params.as_ref().expect("mapped").page_size;
        let end_page = (start + len).div_ceil(ps);
        if sequential {
            self.readahead(mapping, wire, file, (start + pos) / ps);
        }
        while pos < len {
            if !self.lease_valid(now) {
                self.wait_lease(now, id);
                return Step::Pending(pending(pos, buf));
            }
            let abs = start + pos;
            let (p, inp) = (abs / ps, (abs % ps) as usize);
            let n = (ps - inp as u64).min(len - pos) as usize;
            self.tick += 1;
            let tick = self.tick;
            let f = self.files.get_mut(&file).expect("mapped");
            match f.pages.get_mut(&p) {
                Some(pg) if pg.readable() => {
                    pg.touched = tick;
                    if pos == 0 && n as u64 == len {
                        // Within one page: hand out the page's own bytes.
                        if let super::cache::PageData::Shared(b) = &pg.data {
                            return Step::Done(Ok(Completion::Read(b.slice(inp..inp + n))));
                        }
                    }
                    let d = pg.data.as_slice().expect("readable");
                    buf.get_or_insert_with(|| BytesMut::with_capacity(len as usize))
                        .extend_from_slice(&d[inp..inp + n]);
                    pos += n as u64;
                }
                _ => {
                    f.page(p).waiters.insert(id);
                    self.request_pages(Some(id), wire, file, p, end_page, false, None);
                    return Step::Pending(pending(pos, buf));
                }
            }
        }
        Step::Done(Ok(Completion::Read(
            buf.map(|b| b.freeze()).unwrap_or_default(),
        )))
    }

    fn step_write(
        &mut self,
        now: Instant,
        id: OpId,
        mapping: MappingId,
        start: u64,
        data: Bytes,
        mut pos: u64,
    ) -> Step {
        let (wire, file) = match self.ready_mapping(id, mapping) {
            Err(e) => return Step::Done(Err(e)),
            Ok(None) => {
                return Step::Pending(OpKind::Write {
                    mapping,
                    start,
                    data,
                    pos,
                });
            }
            Ok(Some(x)) => x,
        };
        let ps = self.params.as_ref().expect("mapped").page_size;
        let len = data.len() as u64;
        let end_page = (start + len).div_ceil(ps);
        while pos < len {
            if !self.lease_valid(now) {
                self.wait_lease(now, id);
                return Step::Pending(OpKind::Write {
                    mapping,
                    start,
                    data,
                    pos,
                });
            }
            let abs = start + pos;
            let (p, inp) = (abs / ps, abs % ps);
            let n = (ps - inp).min(len - pos);
            let full = inp == 0 && n == ps;
            let pg = self.files.get_mut(&file).expect("mapped").page(p);
            if pg.state == PageState::Exclusive && (pg.data.is_some() || full) {
                pg.touched = self.tick;
                self.apply_write(mapping, file, abs, &data[pos as usize..(pos + n) as usize]);
                pos += n;
                continue;
            }
            pg.waiters.insert(id);
            self.request_pages(
                Some(id),
                wire,
                file,
                p,
                end_page,
                true,
                Some((abs, start + len)),
            );
            return Step::Pending(OpKind::Write {
                mapping,
                start,
                data,
                pos,
            });
        }
        Step::Done(Ok(Completion::Written))
    }

    /// Sends write-backs for `pages` that are still dirty. Returns false if
    /// the request window filled up first (the op waits for room).
    pub(crate) fn flush_pages(
        &mut self,
        id: Option<OpId>,
        file: FileId,
        pages: &[PageNo],
        writebacks: &mut BTreeSet<ReqId>,
    ) -> bool {
        let ps = self.params.as_ref().expect("mapped").page_size;
        let budget =
            (self.params.as_ref().expect("mapped").max_frame as usize / 2).max(ps as usize + 64);
        // Batches per mapping: patches must lie inside the mapping they name.
        let mut batches: std::collections::BTreeMap<
            MappingId,
            (WireMappingId, Vec<PagePatch>, usize),
        > = Default::default();
        let mut complete = true;
        let mut i = 0;
        while i < pages.len() {
            let p = pages[i];
            let Some(pg) = self.files[&file].pages.get(&p) else {
                i += 1;
                continue;
            };
            let Some((lo, hi)) = pg.dirty else {
                i += 1;
                continue;
            };
            let pieces = self.split_dirty(file, p, lo, hi);
            let pg = self
                .files
                .get_mut(&file)
                .expect("mapped")
                .pages
                .get_mut(&p)
                .expect("present");
            let data = pg.data.as_slice().expect("dirty pages have data");
            for (m, wire, off, len) in &pieces {
                let patch = PagePatch {
                    page: p,
                    offset: *off,
                    data: Bytes::copy_from_slice(&data[*off as usize..(*off + *len) as usize]),
                };
                let e = batches.entry(*m).or_insert_with(|| (*wire, Vec::new(), 0));
                e.2 += patch.data.len() + 16;
                e.1.push(patch);
            }
            pg.dirty = None;
            i += 1;
            // Emit full batches.
            let full: Vec<MappingId> = batches
                .iter()
                .filter(|(_, b)| b.2 >= budget || b.1.len() >= 4096)
                .map(|(m, _)| *m)
                .collect();
            for m in full {
                if !self.request_room() {
                    complete = false;
                    break;
                }
                let (wire, patches, _) = batches.remove(&m).expect("listed");
                writebacks.insert(self.send_write_back(id, file, m, wire, patches));
            }
            if !complete {
                break;
            }
        }
        for (m, (wire, patches, _)) in std::mem::take(&mut batches) {
            if !self.request_room() {
                // Put the data back as dirty; it goes out when there is room.
                complete = false;
                let f = self.files.get_mut(&file).expect("mapped");
                for pt in patches {
                    let pg = f.page(pt.page);
                    pg.mark_dirty(pt.offset, pt.offset + pt.data.len() as u32);
                }
                let _ = m;
                continue;
            }
            writebacks.insert(self.send_write_back(id, file, m, wire, patches));
        }
        if !complete && let Some(id) = id {
            self.window_waiters.insert(id);
        }
        complete
    }

    fn send_write_back(
        &mut self,
        op: Option<OpId>,
        file: FileId,
        mapping: MappingId,
        wire: WireMappingId,
        patches: Vec<PagePatch>,
    ) -> ReqId {
        let pages: Vec<PageNo> = patches.iter().map(|p| p.page).collect();
        let f = self.files.get_mut(&file).expect("mapped");
        for p in &pages {
            f.page(*p).writebacks += 1;
        }
        self.send_request(
            |req| {
                Message::WriteBack(WriteBack {
                    req,
                    mapping: wire,
                    patches,
                })
            },
            ReqKind::WriteBack {
                file,
                pages,
                op,
                mapping,
            },
        )
    }

    /// Splits the dirty bytes `[lo, hi)` of a page into pieces that each lie
    /// inside one ready read-write mapping: `(mapping, wire, offset, len)`.
    pub(crate) fn split_dirty(
        &self,
        file: FileId,
        page: PageNo,
        lo: u32,
        hi: u32,
    ) -> Vec<(MappingId, WireMappingId, u32, u32)> {
        let ps = self.params.as_ref().expect("mapped").page_size;
        let base = page * ps;
        let (mut x, end) = (base + lo as u64, base + hi as u64);
        let mut out = Vec::new();
        while x < end {
            let best = self
                .mappings
                .iter()
                .filter_map(|(id, m)| match m.status {
                    MappingStatus::Ready { wire }
                        if m.file == Some(file) && m.writable && m.offset <= x && x < m.end() =>
                    {
                        Some((*id, wire, m.end()))
                    }
                    _ => None,
                })
                .max_by_key(|(_, _, e)| *e);
            match best {
                Some((id, wire, e)) => {
                    let to = e.min(end);
                    out.push((id, wire, (x - base) as u32, (to - x) as u32));
                    x = to;
                }
                None => {
                    // Not covered by a writable mapping: cannot have been
                    // written through this client; skip to the next one.
                    let next = self
                        .mappings
                        .values()
                        .filter(|m| {
                            m.file == Some(file) && m.writable && m.offset > x && m.offset < end
                        })
                        .map(|m| m.offset)
                        .min();
                    match next {
                        Some(n) => x = n,
                        None => break,
                    }
                }
            }
        }
        out
    }

    fn dirty_pages_in(&self, file: FileId, from: PageNo, to: PageNo) -> Vec<PageNo> {
        self.files[&file]
            .pages
            .range(from..to)
            .filter(|(_, p)| p.dirty.is_some())
            .map(|(q, _)| *q)
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn step_sync(
        &mut self,
        id: OpId,
        mapping: MappingId,
        mut snapshot: Option<Vec<PageNo>>,
        upto: u64,
        mut writebacks: BTreeSet<ReqId>,
        mut sync_req: Option<ReqId>,
        done: bool,
        failed: Option<OpError>,
    ) -> Step {
        if let Some(e) = failed {
            return Step::Done(Err(e));
        }
        if done {
            if let Some(m) = self.mappings.get_mut(&mapping) {
                m.synced_seq = m.synced_seq.max(upto);
            }
            return Step::Done(Ok(Completion::Synced));
        }
        let (wire, file) = match self.ready_mapping(id, mapping) {
            Err(e) => return Step::Done(Err(e)),
            Ok(None) => {
                return Step::Pending(OpKind::Sync {
                    mapping,
                    snapshot,
                    upto,
                    writebacks,
                    sync_req,
                    done,
                    failed: None,
                });
            }
            Ok(Some(x)) => x,
        };
        let ps = self.params.as_ref().expect("mapped").page_size;
        let (a, b) = self.mappings[&mapping].pages(ps);
        let pages = snapshot
            .get_or_insert_with(|| self.dirty_pages_in(file, a, b))
            .clone();
        let flushed = self.flush_pages(Some(id), file, &pages, &mut writebacks);
        if flushed && writebacks.is_empty() && sync_req.is_none() {
            if self.request_room() {
                sync_req = Some(self.send_request(
                    |req| Message::Sync(Sync { req, mapping: wire }),
                    ReqKind::Sync { op: id },
                ));
            } else {
                self.window_waiters.insert(id);
            }
        }
        Step::Pending(OpKind::Sync {
            mapping,
            snapshot,
            upto,
            writebacks,
            sync_req,
            done,
            failed: None,
        })
    }

    fn step_unmap(
        &mut self,
        id: OpId,
        mapping: MappingId,
        mut writebacks: BTreeSet<ReqId>,
        req: Option<ReqId>,
    ) -> Step {
        let Some(m) = self.mappings.get(&mapping) else {
            return Step::Done(Ok(Completion::Unmapped));
        };
        match m.status.clone() {
            MappingStatus::Lost(_) => {
                self.finalize_unmap(mapping);
                Step::Done(Ok(Completion::Unmapped))
            }
            MappingStatus::Opening { .. } | MappingStatus::Reopening { .. } => {
                self.mappings
                    .get_mut(&mapping)
                    .expect("present")
                    .waiters
                    .insert(id);
                Step::Pending(OpKind::Unmap {
                    mapping,
                    writebacks,
                    req,
                })
            }
            MappingStatus::Closing => Step::Pending(OpKind::Unmap {
                mapping,
                writebacks,
                req,
            }),
            MappingStatus::Ready { wire } => {
                let file = m.file.expect("ready");
                let ps = self.params.as_ref().expect("mapped").page_size;
                let (a, b) = m.pages(ps);
                let pages = self.dirty_pages_in(file, a, b);
                if !self.flush_pages(Some(id), file, &pages, &mut writebacks)
                    || !writebacks.is_empty()
                {
                    return Step::Pending(OpKind::Unmap {
                        mapping,
                        writebacks,
                        req,
                    });
                }
                if !self.request_room() {
                    self.window_waiters.insert(id);
                    return Step::Pending(OpKind::Unmap {
                        mapping,
                        writebacks,
                        req,
                    });
                }
                let r = self.send_request(
                    |req| Message::Unmap(Unmap { req, mapping: wire }),
                    ReqKind::Unmap { mapping, op: id },
                );
                self.mappings.get_mut(&mapping).expect("present").status = MappingStatus::Closing;
                Step::Pending(OpKind::Unmap {
                    mapping,
                    writebacks,
                    req: Some(r),
                })
            }
        }
    }

    /// Forgets a mapping and the cached pages no other mapping covers.
    pub(crate) fn finalize_unmap(&mut self, mapping: MappingId) {
        let Some(m) = self.mappings.remove(&mapping) else {
            return;
        };
        let waiters: Vec<OpId> = m.waiters.iter().copied().collect();
        self.woken.extend(waiters);
        let Some(file) = m.file else { return };
        let Some(ps) = self.params.as_ref().map(|p| p.page_size) else {
            return;
        };
        let (a, b) = m.pages(ps);
        let others: Vec<(u64, u64)> = self
            .mappings
            .values()
            .filter(|o| o.file == Some(file))
            .map(|o| o.pages(ps))
            .collect();
        let f = self.files.get_mut(&file).expect("mapped");
        let doomed: Vec<PageNo> = f
            .pages
            .range(a..b)
            .filter(|(q, _)| !others.iter().any(|(x, y)| (*x..*y).contains(*q)))
            .map(|(q, _)| *q)
            .collect();
        for q in doomed {
            if let Some(pg) = f.pages.remove(&q) {
                if pg.data.is_some() {
                    self.cached -= 1;
                }
                self.woken.extend(pg.waiters);
            }
        }
        if others.is_empty() {
            let f = self.files.remove(&file).expect("mapped");
            self.cached -= f.pages.values().filter(|p| p.data.is_some()).count();
            if let Some(h) = f.handle {
                self.by_handle.remove(&h);
            }
        }
    }

    fn step_set_len(
        &mut self,
        id: OpId,
        path: String,
        len: u64,
        create: bool,
        req: Option<ReqId>,
    ) -> Step {
        if req.is_none() {
            if !self.request_room() {
                if self.params.is_none() {
                    self.session_waiters.insert(id);
                } else {
                    self.window_waiters.insert(id);
                }
                return Step::Pending(OpKind::SetLen {
                    path,
                    len,
                    create,
                    req,
                });
            }
            let p = Bytes::from(path.clone().into_bytes());
            let r = self.send_request(
                |req| {
                    Message::SetLen(SetLen {
                        req,
                        create,
                        len,
                        path: p,
                    })
                },
                ReqKind::SetLen { op: id },
            );
            return Step::Pending(OpKind::SetLen {
                path,
                len,
                create,
                req: Some(r),
            });
        }
        Step::Pending(OpKind::SetLen {
            path,
            len,
            create,
            req,
        })
    }

    fn step_atomic(
        &mut self,
        id: OpId,
        mapping: MappingId,
        offset: u64,
        op: crate::protocol::AtomicOp,
        req: Option<ReqId>,
    ) -> Step {
        if req.is_some() {
            return Step::Pending(OpKind::Atomic {
                mapping,
                offset,
                op,
                req,
            });
        }
        let (wire, _) = match self.ready_mapping(id, mapping) {
            Err(e) => return Step::Done(Err(e)),
            Ok(None) => {
                return Step::Pending(OpKind::Atomic {
                    mapping,
                    offset,
                    op,
                    req,
                });
            }
            Ok(Some(x)) => x,
        };
        if !self.request_room() {
            self.window_waiters.insert(id);
            return Step::Pending(OpKind::Atomic {
                mapping,
                offset,
                op,
                req,
            });
        }
        let r = self.send_request(
            |req| {
                Message::Atomic(crate::protocol::Atomic {
                    req,
                    mapping: wire,
                    offset,
                    op,
                })
            },
            ReqKind::Atomic { op: id },
        );
        Step::Pending(OpKind::Atomic {
            mapping,
            offset,
            op,
            req: Some(r),
        })
    }

    fn step_close(&mut self, id: OpId, mut writebacks: BTreeSet<ReqId>, bye_sent: bool) -> Step {
        if bye_sent {
            return Step::Done(Ok(Completion::Closed));
        }
        if self.params.is_none() || !matches!(self.conn, Conn::Ready) {
            // Nothing to flush without a session; wait for one otherwise.
            if self.session.is_none() {
                self.conn = Conn::Failed;
                self.failed = Some("closed".into());
                self.events.push_back(super::Event::Disconnect);
                return Step::Done(Ok(Completion::Closed));
            }
            self.session_waiters.insert(id);
            return Step::Pending(OpKind::Close {
                writebacks,
                bye_sent,
            });
        }
        let files: Vec<FileId> = self.files.keys().copied().collect();
        let mut all = true;
        for f in files {
            let pages = self.dirty_pages_in(f, 0, PageNo::MAX);
            all &= self.flush_pages(Some(id), f, &pages, &mut writebacks);
        }
        if !all || !writebacks.is_empty() {
            return Step::Pending(OpKind::Close {
                writebacks,
                bye_sent,
            });
        }
        self.out.push_message(&Message::Bye);
        self.conn = Conn::Failed;
        self.failed = Some("the client was closed".into());
        self.events.push_back(super::Event::Disconnect);
        let others: Vec<OpId> = self.ops.keys().copied().collect();
        for o in others {
            self.complete(o, Err(OpError::Closed("the client was closed".into())));
        }
        Step::Done(Ok(Completion::Closed))
    }

    /// Keeps the cache under its limit: releases the least recently used
    /// clean pages to the server, writes back dirty ones first.
    pub(crate) fn evict(&mut self, _now: Instant) {
        let limit = self.config.max_cached_pages;
        if self.cached <= limit {
            return;
        }
        let want = self.cached - limit + limit / 16 + 1;
        let mut cands: Vec<(u64, FileId, PageNo)> = Vec::new();
        let mut dirty: Vec<(u64, FileId, PageNo)> = Vec::new();
        for (fid, f) in &self.files {
            for (q, p) in &f.pages {
                if !p.data.is_some() {
                    continue;
                }
                if p.evictable() {
                    cands.push((p.touched, *fid, *q));
                } else if p.dirty.is_some() && p.writebacks == 0 {
                    dirty.push((p.touched, *fid, *q));
                }
            }
        }
        cands.sort();
        cands.truncate(want);
        let mut released: std::collections::BTreeMap<FileId, Vec<PageNo>> = Default::default();
        for (_, fid, q) in &cands {
            let f = self.files.get_mut(fid).expect("listed");
            let pg = f.pages.remove(q).expect("listed");
            self.cached -= 1;
            if pg.state != PageState::Invalid && !pg.stale {
                released.entry(*fid).or_default().push(*q);
            }
        }
        for (fid, pages) in released {
            let Some(h) = self.files[&fid].handle else {
                continue;
            };
            let mut i = 0;
            while i < pages.len() {
                let mut j = i + 1;
                while j < pages.len() && pages[j] == pages[j - 1] + 1 {
                    j += 1;
                }
                let msg = Message::Release(Release {
                    file: h,
                    first_page: pages[i],
                    count: (j - i) as u32,
                });
                self.transmit(&msg);
                i = j;
            }
        }
        if cands.len() < want && !dirty.is_empty() {
            dirty.sort();
            dirty.truncate(want - cands.len());
            let mut by_file: std::collections::BTreeMap<FileId, Vec<PageNo>> = Default::default();
            for (_, f, q) in dirty {
                by_file.entry(f).or_default().push(q);
            }
            for (f, mut pages) in by_file {
                pages.sort();
                let mut sink = BTreeSet::new();
                self.flush_pages(None, f, &pages, &mut sink);
            }
        }
    }
}
