//! Everything a session may send after the handshake.

use bytes::Bytes;

use crate::Instant;
use crate::path::ExportPath;
use crate::protocol::{
    Atomic, ErrorCode, Fetch, Map, Mapped, Message, PagePatch, Pong, Release, ReqId, Revalidate,
    Revalidated, SessionId, SetLen, Sync, Synced, Unmap, Unmapped, WriteAck, WriteBack,
    fetch_flags, map_flags,
};
use crate::store::{OpenOptions, Store, StoreError};

use super::directory::{FileEntry, FileId};
use super::ops::{Op, OpKind};
use super::session::MappingEntry;
use super::{ConnId, Failure, Server, error_msg};

/// A request's outcome: a reply now (and whether to remember it for
/// retransmissions), or later (an operation was started).
type Outcome = Result<Option<(Message, bool)>, Failure>;

impl<S: Store> Server<S> {
    pub(super) fn on_session_message(
        &mut self,
        now: Instant,
        conn: ConnId,
        sid: SessionId,
        msg: Message,
    ) {
        let r = match msg {
            Message::Ping(p) => {
                let s = &self.sessions[&sid];
                let pong = Pong {
                    nonce: p.nonce,
                    renewed: s.may_renew(),
                    rev_acked: s.rev_acked,
                };
                self.push(conn, &Message::Pong(pong));
                Ok(())
            }
            Message::Bye => {
                self.end_session_quietly(now, sid);
                Ok(())
            }
            Message::InvalidateAck(a) => self.on_revocation_ack(now, sid, a.rev, &[], false),
            Message::RecallAck(a) => self.on_revocation_ack(now, sid, a.rev, &a.patches, true),
            Message::Release(r) => {
                self.on_release(sid, &r);
                Ok(())
            }
            Message::Map(m) => {
                self.on_request(now, sid, m.req, false, |s, now| s.do_map(now, sid, m))
            }
            Message::Unmap(m) => {
                self.on_request(now, sid, m.req, false, |s, now| s.do_unmap(now, sid, m))
            }
            Message::Fetch(m) => {
                self.on_request(now, sid, m.req, true, |s, now| s.do_fetch(now, sid, m))
            }
            Message::WriteBack(m) => {
                self.on_request(now, sid, m.req, false, |s, _| s.do_write_back(sid, m))
            }
            Message::Sync(m) => self.on_request(now, sid, m.req, true, |s, _| s.do_sync(sid, m)),
            Message::Revalidate(m) => {
                self.on_request(now, sid, m.req, true, |s, _| s.do_revalidate(sid, m))
            }
            Message::SetLen(m) => {
                self.on_request(now, sid, m.req, false, |s, now| s.do_set_len(now, sid, m))
            }
            Message::Atomic(m) => {
                self.on_request(now, sid, m.req, false, |s, now| s.do_atomic(now, sid, m))
            }
            other => Err(Failure::fatal(
                ErrorCode::Protocol,
                format!(
                    "{} is not a message a client may send after the handshake",
                    other.name()
                ),
            )),
        };
        if let Err(f) = r {
            self.fail_conn(conn, f);
        }
    }

    /// Exactly-once handling of numbered requests. `idempotent` requests are
    /// run again when retransmitted; the others get their remembered reply.
    fn on_request(
        &mut self,
        now: Instant,
        sid: SessionId,
        req: ReqId,
        idempotent: bool,
        run: impl FnOnce(&mut Self, Instant) -> Outcome,
    ) -> Result<(), Failure> {
        if req.0 == 0 {
            return Err(Failure::fatal(
                ErrorCode::Protocol,
                "request number 0 is reserved",
            ));
        }
        let max = self.config.max_inflight as usize;
        let s = self
            .sessions
            .get_mut(&sid)
            .expect("established sessions exist");
        if req <= s.highest_req {
            if let Some(reply) = s.replies.get(&req).cloned() {
                self.send(sid, &reply);
                return Ok(());
            }
            if s.in_progress.contains_key(&req) {
                return Ok(());
            }
            if !idempotent {
                return Err(Failure::fatal(
                    ErrorCode::Protocol,
                    format!(
                        "request {req} was sent again after its reply was forgotten \
                         (more than {max} requests were outstanding)"
                    ),
                ));
            }
        } else {
            s.highest_req = req;
        }
        if s.in_progress.len() >= max {
            let f = Failure::new(
                ErrorCode::TooManyRequests,
                format!("more than {max} requests in flight"),
            );
            self.send(sid, &error_msg(req, &f));
            return Ok(());
        }
        match run(self, now) {
            Ok(Some((reply, cache))) => {
                if cache {
                    self.remember(sid, req, reply.clone());
                }
                self.send(sid, &reply);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(f) if f.fatal => Err(f),
            Err(f) => {
                let m = error_msg(req, &f);
                if !idempotent {
                    self.remember(sid, req, m.clone());
                }
                self.send(sid, &m);
                Ok(())
            }
        }
    }

    pub(super) fn remember(&mut self, sid: SessionId, req: ReqId, reply: Message) {
        let max = self.config.max_inflight as usize;
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.remember_reply(req, reply, max);
        }
    }

    fn mapping(
        &self,
        sid: SessionId,
        id: crate::protocol::WireMappingId,
    ) -> Result<MappingEntry, Failure> {
        self.sessions[&sid]
            .mappings
            .get(&id)
            .cloned()
            .ok_or_else(|| {
                Failure::new(
                    ErrorCode::UnknownMapping,
                    format!("mapping {id} does not exist in this session"),
                )
            })
    }

    fn require_write(&self, sid: SessionId, what: &str) -> Result<(), Failure> {
        if self.sessions[&sid].rights.write {
            Ok(())
        } else if self.config.read_only {
            Err(Failure::new(
                ErrorCode::ReadOnly,
                format!("the server exports read-only; cannot {what}"),
            ))
        } else {
            Err(Failure::new(
                ErrorCode::ReadOnly,
                format!("this client may only read; cannot {what}"),
            ))
        }
    }

    /// Validates a path from the wire and places it in the session's scope.
    fn resolve(&self, sid: SessionId, raw: &Bytes) -> Result<ExportPath, Failure> {
        let p =
            ExportPath::parse(raw).map_err(|e| Failure::new(ErrorCode::BadPath, e.to_string()))?;
        Ok(match &self.sessions[&sid].rights.scope {
            Some(scope) => p.within(scope),
            None => p,
        })
    }

    /// Opens a file, reusing the directory of a file already open under
    /// another path or by another session.
    fn open_file(&mut self, path: &ExportPath, create: bool) -> Result<FileId, Failure> {
        let opts = OpenOptions {
            create,
            write: !self.config.read_only,
        };
        let opened = self
            .store
            .open(path, opts)
            .map_err(|e| store_failure(path, e))?;
        if let Some(id) = self.files.find(opened.key) {
            self.store.close(opened.file);
            return Ok(id);
        }
        Ok(self.files.insert(FileEntry {
            key: opened.key,
            store: opened.file,
            path: path.clone(),
            len: opened.len,
            writable: opened.writable,
            base_version: self.next_version,
            pages: Default::default(),
            mapping_ends: Default::default(),
            ops: 0,
        }))
    }

    fn close_if_unused(&mut self, file: FileId) {
        if let Some(sf) = self.files.remove_if_unused(file) {
            self.store.close(sf);
        }
    }

    fn do_map(&mut self, _now: Instant, sid: SessionId, m: Map) -> Outcome {
        if m.flags & !(map_flags::WRITE | map_flags::CREATE) != 0 {
            return Err(Failure::new(
                ErrorCode::Protocol,
                format!("unknown map flags 0x{:02x}", m.flags),
            ));
        }
        let write = m.flags & map_flags::WRITE != 0;
        let create = m.flags & map_flags::CREATE != 0;
        let path = self.resolve(sid, &m.path)?;
        if write {
            self.require_write(sid, "map read-write")?;
        }
        if create {
            self.require_write(sid, "create files")?;
        }
        let max = self.config.max_mappings as usize;
        if self.sessions[&sid].mappings.len() >= max {
            return Err(Failure::new(
                ErrorCode::TooManyMappings,
                format!("the session already has {max} mappings"),
            ));
        }
        if m.len == 0 {
            return Err(Failure::new(
                ErrorCode::OutOfRange,
                "a mapping must be at least one byte long",
            ));
        }
        let end = m
            .offset
            .checked_add(m.len)
            .filter(|e| *e <= i64::MAX as u64)
            .ok_or_else(|| {
                Failure::new(
                    ErrorCode::OutOfRange,
                    format!("offset {} plus length {} overflows", m.offset, m.len),
                )
            })?;
        let file = self.open_file(&path, create)?;
        let r = self.finish_map(sid, file, &path, m.req, m.offset, m.len, end, write, create);
        self.close_if_unused(file);
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_map(
        &mut self,
        sid: SessionId,
        file: FileId,
        path: &ExportPath,
        req: ReqId,
        offset: u64,
        len: u64,
        end: u64,
        write: bool,
        create: bool,
    ) -> Outcome {
        let f = self.files.get(file);
        if write && !f.writable {
            return Err(Failure::new(
                ErrorCode::ReadOnly,
                format!("{path} is not writable on the server"),
            ));
        }
        if end > f.len {
            if !create {
                return Err(Failure::new(
                    ErrorCode::OutOfRange,
                    format!(
                        "bytes {offset}..{end} reach past the end of {path} ({} bytes)",
                        f.len
                    ),
                ));
            }
            self.apply_set_len(file, end)?;
        }
        let s = self.sessions.get_mut(&sid).expect("live");
        let id = s.new_mapping_id();
        let handle = s.handle_for(file);
        s.mappings.insert(
            id,
            MappingEntry {
                file,
                offset,
                len,
                writable: write,
            },
        );
        let f = self.files.get_mut(file);
        f.add_mapping_end(end);
        let reply = Message::Mapped(Mapped {
            req,
            mapping: id,
            file: handle,
            file_len: f.len,
        });
        Ok(Some((reply, true)))
    }

    pub(super) fn apply_set_len(&mut self, file: FileId, len: u64) -> Result<(), Failure> {
        let f = self.files.get(file);
        let (store, path) = (f.store, f.path.clone());
        self.store
            .set_len(store, len)
            .map_err(|e| store_failure(&path, e))?;
        self.files.get_mut(file).len = len;
        Ok(())
    }

    fn do_unmap(&mut self, _now: Instant, sid: SessionId, u: Unmap) -> Outcome {
        let m = self.mapping(sid, u.mapping)?;
        let ps = self.config.page_size as u64;
        let s = self.sessions.get_mut(&sid).expect("live");
        s.mappings.remove(&u.mapping);
        let cancelled: Vec<_> = s
            .in_progress
            .iter()
            .filter(|(_, op)| {
                self.ops
                    .get(op)
                    .is_some_and(|o| o.mapping == Some(u.mapping))
            })
            .map(|(r, op)| (*r, *op))
            .collect();
        for (req, op) in cancelled {
            self.cancel_op(op);
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.in_progress.remove(&req);
            }
            let f = Failure::new(
                ErrorCode::Cancelled,
                format!("mapping {} was unmapped", u.mapping),
            );
            self.send(sid, &error_msg(req, &f));
        }
        let (a, b) = m.pages(ps);
        let s = self.sessions.get_mut(&sid).expect("live");
        let held: Vec<u64> = s
            .held
            .get(&m.file)
            .map(|set| set.range(a..b).copied().collect())
            .unwrap_or_default();
        for p in held {
            let s = self.sessions.get_mut(&sid).expect("live");
            if s.covers(m.file, p, ps) {
                continue;
            }
            s.note_released(m.file, p);
            let f = self.files.get_mut(m.file);
            if let Some(e) = f.pages.get_mut(&p) {
                e.drop_holder(sid);
            }
            f.gc_page(p);
        }
        self.files.get_mut(m.file).remove_mapping_end(m.end());
        self.maybe_forget_handle(sid, m.file);
        self.close_if_unused(m.file);
        Ok(Some((Message::Unmapped(Unmapped { req: u.req }), true)))
    }

    /// A session keeps its handle for a file while it maps it or still has
    /// revocations for it to answer.
    pub(super) fn maybe_forget_handle(&mut self, sid: SessionId, file: FileId) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let mapped = s.mappings.values().any(|m| m.file == file);
        let revoking = s.outstanding_revs.iter().any(|r| {
            self.revocations
                .get(&(sid, *r))
                .is_some_and(|x| x.file == file)
        });
        if !mapped && !revoking {
            self.sessions
                .get_mut(&sid)
                .expect("live")
                .forget_handle(file);
        }
    }

    fn do_fetch(&mut self, now: Instant, sid: SessionId, f: Fetch) -> Outcome {
        let m = self.mapping(sid, f.mapping)?;
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
        if exclusive && !m.writable {
            return Err(Failure::new(
                ErrorCode::ReadOnly,
                format!("mapping {} is read-only", f.mapping),
            ));
        }
        if exclusive && self.shutdown.is_some() {
            return Err(Failure::new(
                ErrorCode::ShuttingDown,
                "the server is shutting down; no new write ownership",
            ));
        }
        let max = self.config.max_pages_per_request;
        if f.count == 0 || f.count > max {
            return Err(Failure::new(
                ErrorCode::OutOfRange,
                format!("a fetch asks for 1 to {max} pages, not {}", f.count),
            ));
        }
        let (a, b) = m.pages(self.config.page_size as u64);
        let end = f.first_page.saturating_add(f.count as u64);
        if f.first_page < a || end > b {
            return Err(Failure::new(
                ErrorCode::OutOfRange,
                format!(
                    "pages {}..{end} are outside mapping {} (pages {a}..{b})",
                    f.first_page, f.mapping
                ),
            ));
        }
        let s = &self.sessions[&sid];
        if s.held_count + f.count as u64 > self.config.max_held_pages {
            return Err(Failure::new(
                ErrorCode::TooManyPages,
                format!(
                    "the session holds {} pages; the limit is {}",
                    s.held_count, self.config.max_held_pages
                ),
            ));
        }
        self.start_op(
            now,
            Op {
                session: sid,
                req: f.req,
                mapping: Some(f.mapping),
                file: m.file,
                first: f.first_page,
                end,
                next: f.first_page,
                pending_revs: 0,
                kind: OpKind::Fetch {
                    exclusive,
                    want_data,
                    overwrite,
                },
                cancelled: false,
                queued_on: None,
            },
        );
        Ok(None)
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

    fn do_write_back(&mut self, sid: SessionId, w: WriteBack) -> Outcome {
        let m = self.mapping(sid, w.mapping)?;
        if !m.writable {
            return Err(Failure::new(
                ErrorCode::ReadOnly,
                format!("mapping {} is read-only", w.mapping),
            ));
        }
        let ps = self.config.page_size as u64;
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
        let (store, path) = (f.store, f.path.clone());
        let mut versions = Vec::with_capacity(w.patches.len());
        for p in &w.patches {
            self.store
                .write(store, p.page * ps + p.offset as u64, &p.data)
                .map_err(|e| store_failure(&path, e))?;
            let v = self.bump_version();
            self.files.get_mut(m.file).entry(p.page).version = v;
            versions.push(v);
        }
        Ok(Some((
            Message::WriteAck(WriteAck {
                req: w.req,
                versions,
            }),
            true,
        )))
    }

    fn do_sync(&mut self, sid: SessionId, s: Sync) -> Outcome {
        let m = self.mapping(sid, s.mapping)?;
        let f = self.files.get(m.file);
        let (store, path) = (f.store, f.path.clone());
        self.store
            .sync(store)
            .map_err(|e| store_failure(&path, e))?;
        Ok(Some((Message::Synced(Synced { req: s.req }), false)))
    }

    fn on_release(&mut self, sid: SessionId, r: &Release) {
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

    fn do_revalidate(&mut self, sid: SessionId, r: Revalidate) -> Outcome {
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
                e.lock.is_some() || !e.queue.is_empty() || e.owner.is_some_and(|o| o != sid)
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

    fn do_set_len(&mut self, now: Instant, sid: SessionId, sl: SetLen) -> Outcome {
        let path = self.resolve(sid, &sl.path)?;
        self.require_write(sid, "set file lengths")?;
        if sl.len > i64::MAX as u64 {
            return Err(Failure::new(
                ErrorCode::OutOfRange,
                format!("length {} is too large", sl.len),
            ));
        }
        let file = self.open_file(&path, sl.create)?;
        let r = self.set_len_of(now, sid, file, &path, sl.req, sl.len);
        self.close_if_unused(file);
        r
    }

    fn set_len_of(
        &mut self,
        now: Instant,
        sid: SessionId,
        file: FileId,
        path: &ExportPath,
        req: ReqId,
        len: u64,
    ) -> Outcome {
        let ps = self.config.page_size as u64;
        let f = self.files.get(file);
        if !f.writable {
            return Err(Failure::new(
                ErrorCode::ReadOnly,
                format!("{path} is not writable on the server"),
            ));
        }
        if len >= f.len {
            self.apply_set_len(file, len)?;
            return Ok(Some((
                Message::LenSet(crate::protocol::LenSet { req, len }),
                true,
            )));
        }
        let furthest = f.furthest_mapping_end();
        if furthest > len {
            return Err(Failure::new(
                ErrorCode::Busy,
                format!(
                    "{path} is mapped up to byte {furthest}; unmap before shrinking it to {len} bytes"
                ),
            ));
        }
        // The page the new end falls in changes (its tail becomes zeros):
        // revoke every copy of it before cutting.
        let page = len / ps;
        self.start_op(
            now,
            Op {
                session: sid,
                req,
                mapping: None,
                file,
                first: page,
                end: page + 1,
                next: page,
                pending_revs: 0,
                kind: OpKind::Shrink { len },
                cancelled: false,
                queued_on: None,
            },
        );
        Ok(None)
    }

    fn do_atomic(&mut self, now: Instant, sid: SessionId, a: Atomic) -> Outcome {
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
        self.start_op(
            now,
            Op {
                session: sid,
                req: a.req,
                mapping: Some(a.mapping),
                file: m.file,
                first: page,
                end: page + 1,
                next: page,
                pending_revs: 0,
                kind: OpKind::Atomic {
                    offset: a.offset,
                    op: a.op,
                },
                cancelled: false,
                queued_on: None,
            },
        );
        Ok(None)
    }

    /// The client said goodbye after writing back everything: release what it
    /// holds at once.
    fn end_session_quietly(&mut self, now: Instant, sid: SessionId) {
        let conn = self.sessions.get_mut(&sid).and_then(|s| s.conn.take());
        self.end_session(now, sid, "the client said goodbye");
        if let Some(c) = conn {
            self.close_conn(c);
        }
    }
}

fn store_failure(path: &ExportPath, e: StoreError) -> Failure {
    let code = match e {
        StoreError::NotFound(_) => ErrorCode::NotFound,
        StoreError::Denied(_) => ErrorCode::Denied,
        StoreError::NotAFile(_) => ErrorCode::NotAFile,
        StoreError::ReadOnly(_) => ErrorCode::ReadOnly,
        StoreError::Io(_) => ErrorCode::Io,
    };
    let detail = match &e {
        StoreError::NotFound(_) => format!("no such file: {path}"),
        other => format!("{path}: {other}"),
    };
    Failure::new(code, detail)
}
