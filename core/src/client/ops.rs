//! Application operations: how each one makes progress, and the requests
//! it sends to get there.
//!
//! An operation is stepped whenever something it waits for changes (a page,
//! the lease, room in the request window, its mapping). A step either
//! finishes it or registers what it now waits for.

use bytes::Bytes;

use crate::Instant;
use crate::protocol::{Fetch, Map, Message, PageNo, ReqId, WireMappingId, fetch_flags, map_flags};

use super::cache::{FileId, PageState};
use super::commands::Written;
use super::requests::{ReqKind, Request};
use super::{Client, Completion, MappingId, MappingStatus, OpError, OpId, OpKind, ReadInto};

/// What a step of an operation came to: it waits on (its state changed
/// in place), or it is done.
pub(crate) enum Step {
    Pending,
    Done(Result<Completion, OpError>),
}

/// What a fetch must ask for a page.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Need {
    Shared,
    Exclusive { want_data: bool, overwrite: bool },
}

/// Whose stream [`Client::take_ahead`] runs ahead of.
#[derive(Clone, Copy)]
enum Ahead {
    /// A sequential reader: shared copies.
    Read,
    /// A sequential writer: write ownership without data.
    Write,
}

impl Client {
    pub(crate) fn step(&mut self, now: Instant, id: OpId) {
        let Some(mut op) = self.ops.take(id) else {
            return;
        };
        let r = if self.gave_up(now, &op) && !matches!(op, OpKind::Close { .. }) {
            let since = self
                .conn
                .disconnected_since()
                .expect("gave up while disconnected");
            Step::Done(Err(OpError::Disconnected(now - since)))
        } else {
            match &mut op {
                OpKind::Map { mapping } => self.step_map(id, *mapping),
                OpKind::Read {
                    mapping,
                    start,
                    len,
                    pos,
                    buf,
                    sequential,
                } => self.step_read(now, id, *mapping, (*start, *len), pos, buf, *sequential),
                OpKind::Write {
                    mapping,
                    start,
                    data,
                    pos,
                } => self.step_write(now, id, *mapping, *start, data, pos),
                OpKind::Sync {
                    mapping,
                    snapshot,
                    upto,
                    writebacks,
                    sync_req,
                    done,
                    failed,
                } => self.step_sync(
                    id, *mapping, snapshot, *upto, writebacks, sync_req, *done, failed,
                ),
                OpKind::Unmap {
                    mapping,
                    writebacks,
                    sync_req,
                    synced,
                    failed,
                    req,
                } => self.step_unmap(id, *mapping, writebacks, (sync_req, *synced, failed), req),
                OpKind::SetLen {
                    path,
                    len,
                    create,
                    req,
                } => self.step_set_len(id, path, *len, *create, req),
                OpKind::Atomic {
                    mapping,
                    offset,
                    op,
                    req,
                } => self.step_atomic(id, *mapping, *offset, *op, req),
                OpKind::Close {
                    writebacks,
                    syncs,
                    syncs_sent,
                    failed,
                    bye_sent,
                } => self.step_close(id, writebacks, syncs, syncs_sent, failed, *bye_sent),
                OpKind::Fault {
                    mapping,
                    index,
                    write,
                } => self.step_fault(now, id, *mapping, *index, *write),
                OpKind::WaitWhile {
                    mapping,
                    offset,
                    current,
                    deadline,
                } => self.step_wait_while(now, id, *mapping, *offset, *current, *deadline),
                OpKind::Connect => self.step_connect(),
            }
        };
        match r {
            Step::Pending => self.ops.put(id, op),
            Step::Done(result) => self
                .events
                .push_back(super::Event::Completed { op: id, result }),
        }
    }

    fn gave_up(&self, now: Instant, op: &OpKind) -> bool {
        matches!((self.conn.disconnected_since(), self.give_up_limit(op)), (Some(s), Some(l)) if now >= s + l)
    }

    /// How long `op` waits for a lost connection: a memory mapping's fault
    /// `give_up_after` (unless the mapping follows its file), any other
    /// operation of a cluster member's client its `member_patience` at
    /// most (see [`super::ClientConfig`]).
    pub(crate) fn give_up_limit(&self, op: &OpKind) -> Option<std::time::Duration> {
        let all = self.config.give_up_after;
        let stays = |m: &MappingId| self.mappings.get(*m).is_none_or(|m| !m.follows_file);
        match (op, self.config.member_patience) {
            (_, None) => all,
            (OpKind::Fault { mapping, .. }, _) if stays(mapping) => all,
            (_, Some(p)) => Some(all.map_or(p, |a| a.min(p))),
        }
    }

    // ---- requests ----

    /// Whether a new request may be sent now: a session exists and the
    /// oldest unanswered request is within the window.
    pub(crate) fn request_room(&self) -> bool {
        self.conn
            .window()
            .is_some_and(|w| self.requests.has_room(w))
    }

    /// Numbers, logs and (when connected) sends a request.
    pub(crate) fn send_request(
        &mut self,
        build: impl FnOnce(ReqId) -> Message,
        kind: ReqKind,
    ) -> ReqId {
        let (req, msg) = self.requests.add(build, kind);
        self.conn.transmit(msg);
        req
    }

    /// Removes an answered request and wakes whoever waited for room.
    pub(crate) fn take_request(&mut self, req: ReqId) -> Option<Request> {
        let r = self.requests.take(req)?;
        self.ops.wake_window();
        Some(r)
    }

    /// The mapping's wire id and file, or why the op cannot use it now
    /// (`Ok(None)`: wait; the op is registered as a waiter).
    pub(crate) fn ready_mapping(
        &mut self,
        id: OpId,
        mapping: MappingId,
    ) -> Result<Option<(WireMappingId, FileId)>, OpError> {
        let m = self
            .mappings
            .get_mut(mapping)
            .ok_or(OpError::UnknownMapping)?;
        match &m.status {
            MappingStatus::Ready { wire } => {
                Ok(Some((*wire, m.file.expect("ready mappings have a file"))))
            }
            MappingStatus::Lost(_) => self.report_loss(mapping).map(|()| None),
            MappingStatus::Closing => Err(OpError::MappingClosed),
            MappingStatus::Opening { .. } | MappingStatus::Reopening { .. } => {
                m.waiters.insert(id);
                Ok(None)
            }
        }
    }

    /// Registers `id` to wait for a lease renewal and makes sure one is on
    /// its way.
    pub(crate) fn wait_lease(&mut self, now: Instant, id: OpId) {
        self.ops.wait_lease(id);
        if self.conn.is_ready() {
            self.conn.send_ping(now);
        }
    }

    /// Asks for the pages from `from` up to `limit` (exclusive) that need
    /// `need`, in one fetch. `write` is the byte range a write will overwrite.
    /// Returns where the fetch it sent ends (`from` when it sent none).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn request_pages(
        &mut self,
        id: Option<OpId>,
        wire: WireMappingId,
        file: FileId,
        from: PageNo,
        limit: PageNo,
        exclusive: bool,
        write: Option<(u64, u64)>,
    ) -> PageNo {
        let ps = self.conn.params().expect("mapped").page_size;
        let max = self.conn.params().expect("mapped").max_pages as u64;
        if self
            .cache
            .get(file, from)
            .is_some_and(|p| p.fetch.is_some())
        {
            return from;
        }
        if !self.request_room() {
            if let Some(id) = id {
                self.ops.wait_window(id);
            }
            return from;
        }
        let need_of = |cache: &super::cache::PageCache, q: PageNo| -> Option<Need> {
            let pg = cache.get(file, q);
            if pg.is_some_and(|p| p.fetch.is_some()) {
                return None;
            }
            let readable = pg.is_some_and(|p| p.readable());
            if !exclusive {
                // A page we own but whose data has not come (an overwrite
                // grant): ask for the data while keeping ownership.
                if !readable && pg.is_some_and(|p| p.state == PageState::Exclusive) {
                    return Some(Need::Exclusive {
                        want_data: true,
                        overwrite: false,
                    });
                }
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
        let Some(first_need) = need_of(&self.cache, from) else {
            return from;
        };
        let mut count = 1u64;
        while from + count < limit
            && count < max
            && need_of(&self.cache, from + count) == Some(first_need)
        {
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
        for q in from..from + count {
            self.cache.page(file, q).fetch = Some(req);
        }
        from + count
    }

    /// Fetches ahead of a sequential reader, several fetches in flight.
    fn readahead(&mut self, mapping: MappingId, wire: WireMappingId, file: FileId, from: PageNo) {
        let ps = self.conn.params().expect("mapped").page_size;
        if self.cache.len() >= self.config.max_cached_pages {
            let min = self.config.readahead_pages as u64;
            self.mappings
                .get_mut(mapping)
                .expect("ready")
                .read_window
                .squeezed(min);
        }
        let m = &self.mappings[mapping];
        let (cursor, end, window) = (m.readahead_to, m.pages(ps).1, m.read_window.pages());
        let reached = self.take_ahead(Ahead::Read, wire, file, (from, window), cursor, end);
        if let Some(m) = self.mappings.get_mut(mapping) {
            m.readahead_to = reached;
        }
    }

    /// The largest window a stream may grow to: half the cache, or what it
    /// started with if that is more.
    fn window_cap(&self) -> u64 {
        (self.config.max_cached_pages as u64 / 2).max(self.config.readahead_pages as u64)
    }

    /// Takes ownership ahead of a sequential writer: overwrite grants (the
    /// server sends no data for pages the writer is expected to overwrite),
    /// several requests in flight. Its next writes then find their pages
    /// held, instead of each waiting a round trip queued behind the
    /// server's work on the write-backs before it. A page it ends up
    /// writing only in part fetches its data then (keeping ownership); one
    /// it never writes is recalled clean.
    pub(crate) fn write_ahead(&mut self, mapping: MappingId, file: FileId, from: PageNo) {
        let Some(params) = self.conn.params() else {
            return;
        };
        let ps = params.page_size;
        let Some(m) = self.mappings.get(mapping) else {
            return;
        };
        let Some(wire) = m.wire() else { return };
        if !m.writable || m.memory.is_some() {
            return;
        }
        let (cursor, end, window) = (m.writeahead_to, m.pages(ps).1, m.write_window.pages());
        let reached = self.take_ahead(Ahead::Write, wire, file, (from, window), cursor, end);
        if let Some(m) = self.mappings.get_mut(mapping) {
            m.writeahead_to = reached;
            if self.cache.len() >= self.config.max_cached_pages {
                m.write_window.squeezed(self.config.readahead_pages as u64);
            }
        }
    }

    /// Asks for the pages from `cursor` (where the last call stopped) up
    /// to `window` pages past `from` and short of `end`, a fetch at a
    /// time, skipping pages already held or asked for, while the request
    /// window has room; returns where it stopped. A writer asks only for
    /// whole fetches (but the last one of the mapping), so that a stream of
    /// small writes does not turn into a stream of small fetches.
    fn take_ahead(
        &mut self,
        ahead: Ahead,
        wire: WireMappingId,
        file: FileId,
        (from, window): (PageNo, u64),
        cursor: PageNo,
        end: PageNo,
    ) -> PageNo {
        let params = self.conn.params().expect("mapped");
        let (ps, max) = (params.page_size, params.max_pages as u64);
        let limit = from.saturating_add(window).min(end);
        let mut p = cursor.max(from);
        while p < limit && self.request_room() {
            let held = self.cache.get(file, p).is_some_and(|pg| {
                pg.fetch.is_some()
                    || match ahead {
                        Ahead::Read => pg.readable(),
                        Ahead::Write => pg.state == PageState::Exclusive,
                    }
            });
            if held {
                p += 1;
                continue;
            }
            let to = (p + max).min(limit);
            // Ask in batches (a quarter of the window, or a whole fetch),
            // not a page per step of the stream.
            if to - p < max.min(window / 4).max(1) && limit < end {
                break;
            }
            let asked = match ahead {
                Ahead::Read => self.request_pages(None, wire, file, p, to, false, None),
                Ahead::Write => {
                    self.request_pages(None, wire, file, p, to, true, Some((p * ps, to * ps)))
                }
            };
            // Past the pages just asked for (held now), not through them.
            p = asked.max(p + 1);
        }
        p
    }

    // ---- operations ----

    fn step_connect(&self) -> Step {
        if self.conn.is_ready() {
            return Step::Done(Ok(Completion::Connected));
        }
        // Woken, with every operation, by the next handshake.
        Step::Pending
    }

    fn step_map(&mut self, id: OpId, mapping: MappingId) -> Step {
        let Some(m) = self.mappings.get(mapping) else {
            return Step::Done(Err(OpError::UnknownMapping));
        };
        match &m.status {
            MappingStatus::Ready { .. } => Step::Done(Ok(Completion::Mapped {
                mapping,
                len: m.len,
                file_len: m.file_len,
            })),
            MappingStatus::Lost(_) => Step::Done(
                self.report_loss(mapping)
                    .map(|()| unreachable!("a lost mapping always has a loss to report")),
            ),
            MappingStatus::Closing => Step::Done(Err(OpError::MappingClosed)),
            MappingStatus::Opening { req: Some(_) } | MappingStatus::Reopening { req: Some(_) } => {
                self.mappings
                    .get_mut(mapping)
                    .expect("present")
                    .waiters
                    .insert(id);
                Step::Pending
            }
            MappingStatus::Opening { req: None } | MappingStatus::Reopening { req: None } => {
                if !self.request_room() {
                    // Without a session it is woken, with every operation,
                    // by the next handshake.
                    if self.conn.params().is_some() {
                        self.ops.wait_window(id);
                    }
                    return Step::Pending;
                }
                self.send_map(mapping, Some(id));
                self.mappings
                    .get_mut(mapping)
                    .expect("present")
                    .waiters
                    .insert(id);
                Step::Pending
            }
        }
    }

    pub(crate) fn send_map(&mut self, mapping: MappingId, op: Option<OpId>) {
        let m = &self.mappings[mapping];
        let reopening = m.is_reopening();
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
        self.mappings
            .get_mut(mapping)
            .expect("present")
            .map_sent(req);
    }

    /// Maps again, after a lost session, every mapping that lost nothing.
    pub(crate) fn drive_mappings(&mut self) {
        if !self.mappings.reopen_pending() {
            return;
        }
        let todo = self.mappings.to_reopen();
        let mut all = true;
        for m in todo {
            if !self.request_room() {
                all = false;
                break;
            }
            self.send_map(m, None);
        }
        if all {
            self.mappings.set_reopen_pending(false);
        }
    }

    /// A read of `len` bytes at `start` of the file, `pos` of them done.
    #[allow(clippy::too_many_arguments)]
    fn step_read(
        &mut self,
        now: Instant,
        id: OpId,
        mapping: MappingId,
        (start, len): (u64, u64),
        pos: &mut u64,
        buf: &mut ReadInto,
        sequential: bool,
    ) -> Step {
        let (wire, file) = match self.ready_mapping(id, mapping) {
            Err(e) => return Step::Done(Err(e)),
            Ok(None) => return Step::Pending,
            Ok(Some(x)) => x,
        };
        let ps = self.conn.params().expect("mapped").page_size;
        let end_page = (start + len).div_ceil(ps);
        if sequential {
            self.readahead(mapping, wire, file, (start + *pos) / ps);
        }
        while *pos < len {
            if !self.lease_valid(now) {
                self.wait_lease(now, id);
                return Step::Pending;
            }
            let abs = start + *pos;
            let (p, inp) = (abs / ps, (abs % ps) as usize);
            let n = (ps - inp as u64).min(len - *pos) as usize;
            let tick = self.cache.touch();
            let Some(mut pg) = self.cache.get_mut(file, p).filter(|pg| pg.readable()) else {
                if sequential && self.cache.get(file, p).is_some_and(|pg| pg.fetch.is_some()) {
                    // Read-ahead did not cover the round trip: widen it.
                    let max = self.window_cap();
                    self.mappings
                        .get_mut(mapping)
                        .expect("ready")
                        .read_window
                        .stalled(p, max);
                }
                self.cache.page(file, p).waiters.insert(id);
                self.request_pages(Some(id), wire, file, p, end_page, false, None);
                return Step::Pending;
            };
            pg.touched = tick;
            match (&mut *buf, &pg.data) {
                // Within one page: hand out the page's own bytes.
                (ReadInto::Buffer(None), super::cache::PageData::Shared(b))
                    if *pos == 0 && n as u64 == len =>
                {
                    let bytes = b.slice(inp..inp + n);
                    drop(pg);
                    if sequential {
                        self.drop_behind(mapping, file, start / ps);
                    }
                    return Step::Done(Ok(Completion::Read(bytes)));
                }
                (ReadInto::Slices(parts), super::cache::PageData::Shared(b)) => {
                    parts.push(b.slice(inp..inp + n));
                }
                (ReadInto::Slices(parts), data) => {
                    // A page being written: its bytes may change.
                    let d = data.as_slice().expect("readable");
                    parts.push(Bytes::copy_from_slice(&d[inp..inp + n]));
                }
                (ReadInto::Buffer(b), data) => {
                    let d = data.as_slice().expect("readable");
                    if b.is_none() {
                        match super::commands::reserve(len) {
                            Ok(fresh) => *b = Some(fresh),
                            Err(e) => return Step::Done(Err(e)),
                        }
                    }
                    b.as_mut()
                        .expect("allocated above")
                        .extend_from_slice(&d[inp..inp + n]);
                }
            }
            drop(pg);
            *pos += n as u64;
        }
        if sequential {
            self.drop_behind(mapping, file, start / ps);
        }
        Step::Done(Ok(match std::mem::replace(buf, ReadInto::Buffer(None)) {
            ReadInto::Buffer(b) => Completion::Read(b.map(Bytes::from).unwrap_or_default()),
            ReadInto::Slices(parts) => Completion::ReadPages(parts),
        }))
    }

    /// A page fault of a memory mapping: get the page in the state the
    /// access needs, then install it (done by `try_resolve_fault`).
    fn step_fault(
        &mut self,
        now: Instant,
        id: OpId,
        mapping: MappingId,
        index: u64,
        write: bool,
    ) -> Step {
        let (wire, file) = match self.ready_mapping(id, mapping) {
            Err(e) => return Step::Done(Err(e)),
            Ok(None) => return Step::Pending,
            Ok(Some(x)) => x,
        };
        let ps = self.conn.params().expect("mapped").page_size;
        let m = &self.mappings[mapping];
        let (first, end) = m.pages(ps);
        let page = first + index;
        if page >= end {
            return Step::Done(Err(OpError::OutOfRange {
                offset: index * ps,
                len: ps,
                mapping_len: m.len,
            }));
        }
        if !self.lease_valid(now) {
            self.wait_lease(now, id);
            return Step::Pending;
        }
        if self.try_resolve_fault(mapping, file, page, write).is_some() {
            return Step::Done(Ok(Completion::FaultResolved));
        }
        self.cache.page(file, page).waiters.insert(id);
        // Read faults fetch a few pages ahead: scanning memory should not
        // cost a round trip per page.
        let limit = if write {
            page + 1
        } else {
            (page + 16).min(end)
        };
        self.request_pages(Some(id), wire, file, page, limit, write, None);
        Step::Pending
    }

    fn step_write(
        &mut self,
        now: Instant,
        id: OpId,
        mapping: MappingId,
        start: u64,
        data: &Bytes,
        pos: &mut u64,
    ) -> Step {
        let (wire, file) = match self.ready_mapping(id, mapping) {
            Err(e) => return Step::Done(Err(e)),
            Ok(None) => return Step::Pending,
            Ok(Some(x)) => x,
        };
        let ps = self.conn.params().expect("mapped").page_size;
        let len = data.len() as u64;
        let end_page = (start + len).div_ceil(ps);
        while *pos < len {
            if !self.lease_valid(now) {
                self.wait_lease(now, id);
                return Step::Pending;
            }
            let abs = start + *pos;
            // The run of pages from here that the cache can take now goes
            // in at once (one write-behind and write-ahead decision for
            // the run, not one per page).
            let ready = self.writable_run(file, abs, start + len);
            if ready > abs {
                let (a, b) = ((abs - start) as usize, (ready - start) as usize);
                self.apply_write(mapping, file, abs, Written::Shared(data.slice(a..b)));
                *pos = ready - start;
                continue;
            }
            let p = abs / ps;
            let mut pg = self.cache.page(file, p);
            pg.waiters.insert(id);
            let in_flight = pg.fetch.is_some();
            drop(pg);
            if in_flight && self.mappings[mapping].last_write_end == abs {
                // Write-ahead did not cover the round trip: widen it.
                let max = self.window_cap();
                self.mappings
                    .get_mut(mapping)
                    .expect("ready")
                    .write_window
                    .stalled(p, max);
            }
            self.request_pages(
                Some(id),
                wire,
                file,
                p,
                end_page,
                true,
                Some((abs, start + len)),
            );
            return Step::Pending;
        }
        Step::Done(Ok(Completion::Written))
    }

    /// Where the run of bytes from `from` (up to `end`) that the cache can
    /// take without waiting ends: pages held exclusively, with data or
    /// written whole. Marks them used now.
    fn writable_run(&mut self, file: FileId, from: u64, end: u64) -> u64 {
        let ps = self.conn.params().expect("mapped").page_size;
        let tick = self.cache.time();
        let mut at = from;
        while at < end {
            let (p, inp) = (at / ps, at % ps);
            let n = (ps - inp).min(end - at);
            let full = inp == 0 && n == ps;
            match self.cache.get_mut(file, p) {
                Some(mut pg) if pg.state == PageState::Exclusive && (pg.data.is_some() || full) => {
                    pg.touched = tick;
                }
                _ => break,
            }
            at += n;
        }
        at
    }
}
