//! Requests about files and mappings: map, unmap, set length.

use crate::Instant;
use crate::path::ExportPath;
use crate::protocol::{
    ErrorCode, Map, Mapped, Message, ReqId, SessionId, SetLen, Unmap, Unmapped, map_flags,
};
use crate::store::{OpenOptions, Store};

use super::directory::{FileEntry, FileId};
use super::ops::{Op, OpKind};
use super::requests::{Outcome, store_failure};
use super::session::MappingEntry;
use super::{Failure, Server, error_msg};

impl<S: Store> Server<S> {
    /// Opens a file, reusing the directory of a file already open under
    /// another path or by another session.
    fn open_file(
        &mut self,
        sid: SessionId,
        path: &ExportPath,
        create: bool,
    ) -> Result<FileId, Failure> {
        let opts = OpenOptions {
            create,
            write: !self.config.read_only,
        };
        if self.files.files.len() >= self.config.max_open_files as usize {
            return Err(Failure::new(
                ErrorCode::Busy,
                format!(
                    "the server has {} files open, its limit; try again later",
                    self.files.files.len()
                ),
            ));
        }
        // A client confined to a sub-directory is confined by the store too:
        // resolved beneath that directory, a symlink cannot lead out of it.
        let scope = self.sessions[&sid].rights.scope.clone();
        let opened = match &scope {
            Some(s) => self.store.open_scoped(s, path, opts),
            None => self.store.open(path, opts),
        }
        .map_err(|e| store_failure(path, e))?;
        let full = scope
            .as_ref()
            .map_or_else(|| path.clone(), |s| path.within(s));
        if let Some(id) = self.files.find(opened.key) {
            self.store.close(opened.file);
            return Ok(id);
        }
        Ok(self.files.insert(FileEntry {
            key: opened.key,
            store: opened.file,
            path: full,
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

    pub(super) fn do_map(&mut self, _now: Instant, sid: SessionId, m: Map) -> Outcome {
        if m.flags & !(map_flags::WRITE | map_flags::CREATE) != 0 {
            return Err(Failure::new(
                ErrorCode::Protocol,
                format!("unknown map flags 0x{:02x}", m.flags),
            ));
        }
        let write = m.flags & map_flags::WRITE != 0;
        let create = m.flags & map_flags::CREATE != 0;
        let path = self.resolve(&m.path)?;
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
        let file = self.open_file(sid, &path, create)?;
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

    pub(super) fn do_unmap(&mut self, _now: Instant, sid: SessionId, u: Unmap) -> Outcome {
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
            self.reply(sid, req, &error_msg(req, &f));
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

    pub(super) fn do_set_len(&mut self, now: Instant, sid: SessionId, sl: SetLen) -> Outcome {
        let path = self.resolve(&sl.path)?;
        self.require_write(sid, "set file lengths")?;
        if sl.len > i64::MAX as u64 {
            return Err(Failure::new(
                ErrorCode::OutOfRange,
                format!("length {} is too large", sl.len),
            ));
        }
        let file = self.open_file(sid, &path, sl.create)?;
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
}
