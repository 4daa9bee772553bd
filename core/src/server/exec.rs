//! What page operations do once they hold their pages: a fetch reads its
//! pages and grants them, an atomic reads its word and writes the new one, a
//! shrink cuts the file.

use bytes::Bytes;

use crate::Instant;
use crate::protocol::{
    AtomicDone, AtomicOp, ErrorCode, LenSet, Message, PageDigest, PageGrant, Pages, SessionId,
};
use crate::store::{StoreError, WriteRun};

use super::ids::OpId;
use super::ops::OpKind;
use super::requests::store_failure;
use super::{Failure, Server};

impl Server {
    pub(super) fn execute_fetch(
        &mut self,
        _now: Instant,
        id: OpId,
        exclusive: bool,
        want_data: bool,
        overwrite: bool,
    ) {
        // Shutdown recalls every owned page once; an exclusive fetch
        // queued before it began gets no ownership either, so none appears
        // behind those recalls (the client asks again of the next run).
        if exclusive && self.shutdown.is_some() {
            return self.fail_op(
                id,
                Failure::new(
                    ErrorCode::ShuttingDown,
                    "the server is shutting down; no new write ownership",
                ),
            );
        }
        if exclusive && let Err(f) = self.may_accept_writes() {
            return self.fail_op(id, f);
        }
        let op = &self.ops[&id];
        let (sid, file) = (op.session, op.file.expect("known"));
        let (first, end) = (op.lock().first, op.lock().end);
        let f = self.files.get(file);
        let needs_data = (first..end)
            .any(|p| !overwrite && (want_data || f.pages.get(&p).is_none_or(|e| !e.holds(sid))));
        if !needs_data {
            return self.grant(id, exclusive, want_data, overwrite, None);
        }
        if self.output_full(sid) {
            // Wait, pages held, until the client takes its earlier replies
            // (its connection is not read meanwhile, and a client that never
            // reads loses its lease).
            self.ops.get_mut(&id).expect("exists").executing = false;
            self.sessions.get_mut(&sid).expect("live").stalled.push(id);
            return;
        }
        let len = self.ops[&id].reply_bytes(self.config.page_size);
        self.ops.get_mut(&id).expect("exists").store_waits += 1;
        self.sessions.get_mut(&sid).expect("live").reading += len;
        let ps = self.config.page_size as u64;
        self.disk.read(file, first * ps, len, id);
    }

    /// Refuses new writes while the disk holds back too much.
    pub(super) fn may_accept_writes(&self) -> Result<(), Failure> {
        let failed = self.disk.failed_bytes();
        if failed < self.config.max_unwritten_bytes {
            return Ok(());
        }
        let cause = self
            .disk
            .failing_files()
            .first()
            .and_then(|f| self.disk.any_failure(*f))
            .map_or_else(String::new, |e| format!(": {e}"));
        Err(Failure::new(
            ErrorCode::NoSpace,
            format!(
                "the server holds {failed} bytes it could not write to its disk{cause}; \
                 it takes no new writes until they are written"
            ),
        ))
    }

    /// The pages of a fetch were read (or needed no reading): grant them.
    pub(super) fn grant(
        &mut self,
        id: OpId,
        exclusive: bool,
        want_data: bool,
        overwrite: bool,
        data: Option<Bytes>,
    ) {
        let op = &self.ops[&id];
        let (sid, file, req) = (op.session, op.file.expect("known"), op.req);
        if op.cancelled || !self.sessions.contains_key(&sid) {
            return self.release_op(id);
        }
        if exclusive && self.shutdown.is_some() {
            // Shutdown began while the pages were being read: its one round
            // of recalls is over, so no ownership now either.
            return self.fail_op(
                id,
                Failure::new(
                    ErrorCode::ShuttingDown,
                    "the server is shutting down; no new write ownership",
                ),
            );
        }
        let (first, end) = (op.lock().first, op.lock().end);
        let ps = self.config.page_size as u64;
        let Some(&handle) = self.sessions[&sid].handle_of.get(&file) else {
            return self.release_op(id);
        };
        let known = match &op.kind {
            OpKind::Fetch { known, .. } => known.clone(),
            _ => None,
        };
        #[cfg(feature = "bug-injection")]
        let trust_digests = self.bug_trusts_digests();
        #[cfg(not(feature = "bug-injection"))]
        let trust_digests = false;
        let f = self.files.get_mut(file);
        let mut pages = Vec::with_capacity((end - first) as usize);
        for (i, p) in (first..end).enumerate() {
            let e = f.entry(p);
            let page = |all: &Bytes| all.slice(i * ps as usize..(i + 1) * ps as usize);
            let needs = match (&known, &data) {
                // A refresh: data only where the client's copy differs.
                (Some(known), Some(all)) => {
                    !trust_digests && PageDigest::of(&page(all)) != known[i]
                }
                _ => !overwrite && (want_data || !e.holds(sid)),
            };
            if exclusive {
                e.remove_sharer(sid);
                e.owner = Some(sid);
            } else {
                if e.owner == Some(sid) {
                    e.owner = None;
                }
                e.add_sharer(sid);
            }
            let d = match (&data, needs) {
                (Some(all), true) => Some(page(all)),
                _ => None,
            };
            pages.push(PageGrant {
                version: e.version,
                data: d,
            });
        }
        let s = self.sessions.get_mut(&sid).expect("checked");
        for p in first..end {
            s.note_held(file, p);
        }
        let reply = Message::Pages(Pages {
            req,
            file: handle,
            first_page: first,
            exclusive,
            pages,
        });
        self.answer_op(id, reply, false);
    }

    pub(super) fn execute_atomic(&mut self, id: OpId, offset: u64) {
        if let Err(f) = self.may_accept_writes() {
            return self.fail_op(id, f);
        }
        let file = self.ops[&id].file.expect("known");
        self.ops.get_mut(&id).expect("exists").store_waits += 1;
        self.disk.read(file, offset, 8, id);
    }

    /// A store read for op `id` finished.
    pub(super) fn op_read(&mut self, now: Instant, id: OpId, result: Result<Bytes, StoreError>) {
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        op.store_waits -= 1;
        if matches!(op.kind, OpKind::Fetch { .. }) {
            let len = op.reply_bytes(self.config.page_size);
            if let Some(s) = self.sessions.get_mut(&op.session) {
                s.reading -= len;
            }
        }
        let op = &self.ops[&id];
        if op.cancelled {
            return self.release_op(id);
        }
        let file = op.file.expect("known");
        let path = self.files.get(file).path.clone();
        let data = match result {
            Ok(d) => d,
            Err(e) => return self.fail_op(id, store_failure(&path, e)),
        };
        // In a cluster: the read may have outlasted the serving window.
        if let Err(f) = self.shard_check_file(now, file, super::cluster::ShardUse::Grant) {
            return self.fail_op(id, f);
        }
        match self.ops[&id].kind.clone() {
            OpKind::Fetch {
                exclusive,
                want_data,
                overwrite,
                ..
            } => {
                let ps = self.config.page_size as u64;
                let data = self
                    .disk
                    .overlay(file, self.ops[&id].lock().first * ps, data);
                self.grant(id, exclusive, want_data, overwrite, Some(data));
            }
            OpKind::Atomic { offset, op: aop } => {
                let word = self.disk.overlay(file, offset, data);
                self.apply_atomic(id, offset, aop, &word);
            }
            other => unreachable!("{other:?} reads nothing"),
        }
    }

    fn apply_atomic(&mut self, id: OpId, offset: u64, aop: AtomicOp, word: &[u8]) {
        let op = &self.ops[&id];
        let (sid, file, req, page) = (op.session, op.file.expect("known"), op.req, op.lock().first);
        let previous = u64::from_le_bytes(word[..8].try_into().expect("read exactly 8 bytes"));
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
            // From here on these are the word's bytes for everyone; the disk
            // gets them when it can, and the session hears of a failure at
            // its next sync.
            let run = WriteRun {
                offset,
                parts: vec![Bytes::copy_from_slice(&new.to_le_bytes())],
            };
            self.write_unsynced(file, vec![run], sid, None);
            let v = self.bump_version();
            self.files.get_mut(file).entry(page).version = v;
        }
        let reply = Message::AtomicDone(AtomicDone {
            req,
            previous,
            applied,
        });
        self.answer_op(id, reply, true);
    }

    /// Writes bytes of `writer` to a file through the disk; `op` (a
    /// write-back) waits for the write.
    pub(super) fn write_unsynced(
        &mut self,
        file: super::ids::FileId,
        runs: Vec<WriteRun>,
        writer: SessionId,
        op: Option<OpId>,
    ) {
        self.disk.write(file, runs, writer, op);
        if let Some(id) = op
            && let Some(o) = self.ops.get_mut(&id)
        {
            o.store_waits += 1;
        }
    }

    /// A store length change for op `id` finished.
    pub(super) fn op_len_set(&mut self, id: OpId, result: Result<(), StoreError>) {
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        op.store_waits -= 1;
        let file = op.file.expect("known");
        let (req, cancelled) = (op.req, op.cancelled);
        let path = self.files.get(file).path.clone();
        if let Err(e) = result {
            return self.fail_op(id, store_failure(&path, e));
        }
        match self.ops[&id].kind.clone() {
            OpKind::Shrink { len } => {
                self.files.get_mut(file).len = len;
                self.disk.truncated(file, len);
                let page = self.ops[&id].lock().first;
                let v = self.bump_version();
                self.files.get_mut(file).entry(page).version = v;
                self.answer_op(id, Message::LenSet(LenSet { req, len }), true);
            }
            OpKind::SetLen { len, .. } => {
                self.files.get_mut(file).len = len;
                self.answer_op(id, Message::LenSet(LenSet { req, len }), true);
            }
            OpKind::Map { offset, len, .. } => {
                self.files.get_mut(file).len = offset + len;
                if cancelled {
                    return self.release_op(id);
                }
                self.finish_map(id);
            }
            other => unreachable!("{other:?} sets no length"),
        }
    }
}
