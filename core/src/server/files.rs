//! Requests about files and mappings: map, unmap, set length.

use crate::Instant;
use crate::path::ExportPath;
use crate::protocol::{
    ErrorCode, LenSet, Map, Mapped, Message, SessionId, SetLen, Unmap, Unmapped, map_flags,
};
use crate::store::{OpenOptions, StoreDone, StoreError};

use super::directory::FileEntry;
use super::disk::Purpose;
use super::ids::{FileId, OpId};
use super::ops::{Op, OpKind};
use super::requests::{Outcome, store_failure};
use super::session::MappingEntry;
use super::{Failure, Server, error_msg};

impl Server {
    /// Asks the store to open `path` (relative to the session's scope, if it
    /// has one) for op `id`.
    fn open_for(&mut self, sid: SessionId, path: &ExportPath, create: bool, id: OpId) {
        let options = OpenOptions {
            create,
            write: !self.config.read_only,
        };
        // A client confined to a sub-directory is confined by the store too:
        // resolved beneath that directory, a symlink cannot lead out of it.
        let scope = self.sessions[&sid].rights.scope.clone();
        self.ops.get_mut(&id).expect("registered").store_waits += 1;
        self.disk
            .open(path.clone(), scope, options, Purpose::OpenFor(id));
    }

    /// The path beneath the root that `path` of session `sid` names.
    fn full_path(&self, sid: SessionId, path: &ExportPath) -> ExportPath {
        match &self.sessions[&sid].rights.scope {
            Some(s) => path.within(s),
            None => path.clone(),
        }
    }

    /// The file of a map or set-length op is open: join the directory of a
    /// file already open under another path or by another session, and go
    /// on.
    pub(super) fn op_opened(
        &mut self,
        now: Instant,
        id: OpId,
        result: Result<StoreDone, StoreError>,
    ) {
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        op.store_waits -= 1;
        let (sid, kind) = (op.session, op.kind.clone());
        let path = match &kind {
            OpKind::Map { path, .. } | OpKind::SetLen { path, .. } => path.clone(),
            other => unreachable!("{other:?} opens nothing"),
        };
        let opened = match result {
            Ok(StoreDone::Opened(o)) => o,
            Ok(other) => {
                let e = StoreError::Io(format!("the store answered an open with {other:?}"));
                return self.fail_op(id, store_failure(&path, e));
            }
            Err(e) => return self.fail_op(id, store_failure(&path, e)),
        };
        let full = if self.sessions.contains_key(&sid) {
            self.full_path(sid, &path)
        } else {
            path.clone()
        };
        let file = match self.files.find(opened.key) {
            Some(f) => f,
            None => self.files.insert(FileEntry {
                key: opened.key,
                path: full.clone(),
                len: opened.len,
                writable: opened.writable,
                base_version: self.next_version,
                pages: Default::default(),
                mapping_ends: Default::default(),
                ops: 0,
            }),
        };
        let known = self.files.get(file).path.clone();
        self.disk.adopt(file, &opened, known.clone());
        self.op_uses_file(id, file);
        if self.ops[&id].cancelled || !self.sessions.contains_key(&sid) {
            return self.release_op(id);
        }
        if let Err(f) = self.shard_check_opened(now, &full, &known) {
            return self.fail_op(id, f);
        }
        match kind {
            OpKind::Map {
                offset,
                len,
                write,
                create,
                ..
            } => {
                let f = self.files.get(file);
                if write && !f.writable {
                    let e = Failure::new(
                        ErrorCode::ReadOnly,
                        format!("{path} is not writable on the server"),
                    );
                    return self.fail_op(id, e);
                }
                let end = offset + len;
                if end > f.len {
                    if !create {
                        let e = Failure::new(
                            ErrorCode::OutOfRange,
                            format!(
                                "bytes {offset}..{end} reach past the end of {path} ({} bytes)",
                                f.len
                            ),
                        );
                        return self.fail_op(id, e);
                    }
                    self.ops.get_mut(&id).expect("exists").store_waits += 1;
                    self.disk.set_len(file, end, id);
                    return;
                }
                self.finish_map(id);
            }
            OpKind::SetLen { len, .. } => self.set_len_of(now, id, file, &path, len),
            _ => unreachable!("matched above"),
        }
    }

    pub(super) fn do_map(&mut self, now: Instant, sid: SessionId, m: Map) -> Outcome {
        if m.flags & !(map_flags::WRITE | map_flags::CREATE) != 0 {
            return Err(Failure::new(
                ErrorCode::Protocol,
                format!("unknown map flags 0x{:02x}", m.flags),
            ));
        }
        let write = m.flags & map_flags::WRITE != 0;
        let create = m.flags & map_flags::CREATE != 0;
        let path = self.resolve(sid, &m.path)?;
        self.shard_check_path(now, self.full_path(sid, &path).as_str())?;
        if write {
            self.require_write(sid, "map read-write")?;
        }
        if create {
            self.require_write(sid, "create files")?;
        }
        let max = self.config.max_mappings as usize;
        let s = &self.sessions[&sid];
        if s.mappings.len() + s.pending_maps >= max {
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
        m.offset
            .checked_add(m.len)
            .filter(|e| *e <= i64::MAX as u64)
            .ok_or_else(|| {
                Failure::new(
                    ErrorCode::OutOfRange,
                    format!("offset {} plus length {} overflows", m.offset, m.len),
                )
            })?;
        let kind = OpKind::Map {
            path: path.clone(),
            offset: m.offset,
            len: m.len,
            write,
            create,
        };
        let id = self.register_op(Op::new(sid, m.req, None, kind));
        self.sessions.get_mut(&sid).expect("live").pending_maps += 1;
        self.open_for(sid, &path, create, id);
        Ok(None)
    }

    /// The file of a map op is open and long enough: the mapping exists.
    pub(super) fn finish_map(&mut self, id: OpId) {
        let op = &self.ops[&id];
        let (sid, req, file) = (op.session, op.req, op.file.expect("known"));
        let OpKind::Map {
            offset, len, write, ..
        } = op.kind
        else {
            unreachable!("a map op")
        };
        let Some(s) = self.sessions.get_mut(&sid) else {
            return self.release_op(id);
        };
        let mapping = s.new_mapping_id();
        let handle = s.handle_for(file);
        s.mappings.insert(
            mapping,
            MappingEntry {
                file,
                offset,
                len,
                writable: write,
            },
        );
        let f = self.files.get_mut(file);
        f.add_mapping_end(offset + len);
        let reply = Message::Mapped(Mapped {
            req,
            mapping,
            file: handle,
            file_len: f.len,
        });
        self.answer_op(id, reply, true);
    }

    pub(super) fn do_unmap(&mut self, _now: Instant, sid: SessionId, u: Unmap) -> Outcome {
        let m = self.mapping(sid, u.mapping)?;
        let ps = self.config.page_size as u64;
        let s = self.sessions.get_mut(&sid).expect("live");
        s.mappings.remove(&u.mapping);
        // Fetches and atomics of the mapping end here, even one whose read
        // is under way (it grants and writes nothing when the read comes
        // back: the session may not hold pages it has no mapping for);
        // write-backs and syncs finish and are answered.
        let cancelled: Vec<_> = s
            .in_progress
            .iter()
            .filter(|(_, op)| {
                self.ops
                    .get(op)
                    .is_some_and(|o| o.mapping == Some(u.mapping) && o.lock.is_some())
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
        self.forget_file_if_unused(m.file);
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

    /// Forgets a file nothing refers to any more (no mapping, page, op, or
    /// byte on its way to the disk), closing its handle.
    pub(super) fn forget_file_if_unused(&mut self, file: FileId) {
        if self.files.files.get(&file).is_some_and(|f| f.is_unused()) && self.disk.is_idle(file) {
            self.files.remove(file);
            self.disk.forget(file);
        }
    }

    pub(super) fn do_set_len(&mut self, now: Instant, sid: SessionId, sl: SetLen) -> Outcome {
        let path = self.resolve(sid, &sl.path)?;
        self.shard_check_path(now, self.full_path(sid, &path).as_str())?;
        self.require_write(sid, "set file lengths")?;
        if sl.len > i64::MAX as u64 {
            return Err(Failure::new(
                ErrorCode::OutOfRange,
                format!("length {} is too large", sl.len),
            ));
        }
        let kind = OpKind::SetLen {
            path: path.clone(),
            len: sl.len,
        };
        let id = self.register_op(Op::new(sid, sl.req, None, kind));
        self.open_for(sid, &path, sl.create, id);
        Ok(None)
    }

    /// The file of a set-length op is open: grow it, or shrink it once every
    /// copy of the page the new end falls in is revoked.
    fn set_len_of(&mut self, now: Instant, id: OpId, file: FileId, path: &ExportPath, len: u64) {
        let ps = self.config.page_size as u64;
        let f = self.files.get(file);
        if !f.writable {
            let e = Failure::new(
                ErrorCode::ReadOnly,
                format!("{path} is not writable on the server"),
            );
            return self.fail_op(id, e);
        }
        if len == f.len {
            let req = self.ops[&id].req;
            return self.answer_op(id, Message::LenSet(LenSet { req, len }), true);
        }
        if len > f.len {
            self.ops.get_mut(&id).expect("exists").store_waits += 1;
            self.disk.set_len(file, len, id);
            return;
        }
        let furthest = f.furthest_mapping_end();
        if furthest > len {
            let e = Failure::new(
                ErrorCode::Busy,
                format!(
                    "{path} is mapped up to byte {furthest}; unmap before shrinking it to {len} bytes"
                ),
            );
            return self.fail_op(id, e);
        }
        // The page the new end falls in changes (its tail becomes zeros):
        // revoke every copy of it before cutting. The op becomes a page op.
        let (sid, req) = (self.ops[&id].session, self.ops[&id].req);
        let page = len / ps;
        let op = Op::new(sid, req, None, OpKind::Shrink { len }).on_pages(file, page, page + 1);
        self.start_page_op(now, op);
        self.release_op(id);
    }
}
