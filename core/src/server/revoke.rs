//! Revocations: invalidations and recalls the server pushes to clients, and
//! what happens when they are answered or their holder's lease runs out.

use crate::Instant;
use crate::protocol::{
    ErrorCode, Invalidate, Message, PageNo, PagePatch, Recall, RevId, SessionId,
};

pub(crate) use super::cluster::RevWaiter;
use super::ids::{FileId, OpId, RevKind};
use super::{Failure, Server, ServerEvent, error_msg};

/// Revocations an operation needs: `(holder, page, kind)`.
pub(crate) type Wanted = Vec<(SessionId, PageNo, RevKind)>;

#[derive(Debug)]
pub(crate) struct Revocation {
    pub(crate) file: FileId,
    pub(crate) first: PageNo,
    pub(crate) count: u32,
    pub(crate) kind: RevKind,
    /// Who waits for it.
    pub(crate) waiter: RevWaiter,
}

impl Server {
    /// Sends revocations, one message per run of consecutive pages with the
    /// same holder and kind.
    pub(super) fn send_revocations(
        &mut self,
        _now: Instant,
        waiter: RevWaiter,
        file: FileId,
        mut wanted: Vec<(SessionId, PageNo, RevKind)>,
    ) {
        wanted.sort_by_key(|(s, p, k)| (*s, matches!(k, RevKind::Invalidate), *p));
        let mut i = 0;
        while i < wanted.len() {
            let (target, first, kind) = wanted[i];
            let mut j = i + 1;
            while j < wanted.len()
                && wanted[j].0 == target
                && wanted[j].2 == kind
                && wanted[j].1 == first + (j - i) as u64
                && j - i < u32::MAX as usize
            {
                j += 1;
            }
            let count = (j - i) as u32;
            i = j;
            let Some(s) = self.sessions.get_mut(&target) else {
                continue;
            };
            let rev = s.next_rev_id();
            s.outstanding_revs.insert(rev);
            let handle = *s
                .handle_of
                .get(&file)
                .expect("a holder has a handle for the file");
            self.revocations.insert(
                (target, rev),
                Revocation {
                    file,
                    first,
                    count,
                    kind,
                    waiter,
                },
            );
            match waiter {
                RevWaiter::Op(id) => {
                    if let Some(l) = self.ops.get_mut(&id).and_then(|o| o.lock.as_mut()) {
                        l.pending_revs += 1;
                    }
                }
                RevWaiter::Shutdown => self.shutdown_recall_sent(),
                RevWaiter::Drain(shard) => self.drain_revocation_sent(shard),
            }
            self.send(target, &revocation_msg(rev, handle, first, count, kind));
        }
    }

    /// After a resume: send again everything the session has not answered.
    pub(super) fn resend_revocations(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let msgs: Vec<Message> = s
            .outstanding_revs
            .iter()
            .filter_map(|rev| {
                let r = self.revocations.get(&(sid, *rev))?;
                let h = s.handle_of.get(&r.file)?;
                Some(revocation_msg(*rev, *h, r.first, r.count, r.kind))
            })
            .collect();
        for m in msgs {
            self.send(sid, &m);
        }
    }

    /// An acknowledgement arrived (`patches` is the dirty data of a recall).
    pub(super) fn on_revocation_ack(
        &mut self,
        now: Instant,
        sid: SessionId,
        rev: RevId,
        patches: &[PagePatch],
        is_recall: bool,
    ) -> Result<(), Failure> {
        let s = &self.sessions[&sid];
        if rev.0 == 0 || rev.0 > s.next_rev {
            return Err(Failure::fatal(
                ErrorCode::Protocol,
                format!("acknowledgement for revocation {rev}, never sent"),
            ));
        }
        let Some(r) = self.revocations.get(&(sid, rev)) else {
            // Answered before (a duplicate after a resume).
            return Ok(());
        };
        if is_recall != matches!(r.kind, RevKind::Recall { .. }) {
            return Err(Failure::fatal(
                ErrorCode::Protocol,
                format!("revocation {rev} acknowledged with the wrong message type"),
            ));
        }
        let (file, first, count) = (r.file, r.first, r.count);
        for p in patches {
            let ok = p.page >= first
                && p.page < first + count as u64
                && (p.offset as u64)
                    .checked_add(p.data.len() as u64)
                    .is_some_and(|e| e <= self.config.page_size as u64);
            if !ok {
                return Err(Failure::fatal(
                    ErrorCode::Protocol,
                    format!(
                        "recall {rev} carries data for page {} outside its pages or page bounds",
                        p.page
                    ),
                ));
            }
            self.check_patch_rights(sid, file, p)?;
        }
        let s = self.sessions.get_mut(&sid).expect("checked");
        s.rev_acked = s.rev_acked.max(rev);
        self.complete_revocation(now, sid, rev, patches);
        Ok(())
    }

    /// Applies the state change of a revocation that was answered, or whose
    /// holder is gone, and tells the waiting operation.
    pub(super) fn complete_revocation(
        &mut self,
        _now: Instant,
        sid: SessionId,
        rev: RevId,
        patches: &[PagePatch],
    ) {
        let Some(r) = self.revocations.remove(&(sid, rev)) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.outstanding_revs.remove(&rev);
        }
        let mut returned = Vec::new();
        for page in r.first..r.first + r.count as u64 {
            let Some(f) = self.files.files.get_mut(&r.file) else {
                break;
            };
            let Some(e) = f.pages.get_mut(&page) else {
                continue;
            };
            // A revocation takes its holder down to the state it asks for,
            // whatever the holder has now: another revocation of the same
            // page (a shutdown's recall, which takes no lock) may have been
            // answered first and already lowered it. "No copy" means none,
            // shared or owned (the client drops a shared copy on such a
            // recall too); lowering only an owner left a sharer beside the
            // next owner (fuzz finding owner-beside-sharer).
            let mut released = false;
            match r.kind {
                RevKind::Invalidate => {
                    released = e.remove_sharer(sid);
                }
                RevKind::Recall { downgrade: false } if e.owner != Some(sid) => {
                    released = e.remove_sharer(sid);
                }
                RevKind::Recall { downgrade } => {
                    if e.owner == Some(sid) {
                        e.owner = None;
                        if downgrade {
                            e.add_sharer(sid);
                        } else {
                            released = true;
                        }
                        // Only an owner has data to give back.
                        returned.extend(patches.iter().filter(|p| p.page == page).cloned());
                    }
                }
            }
            if released && let Some(s) = self.sessions.get_mut(&sid) {
                s.note_released(r.file, page);
            }
        }
        if !returned.is_empty() {
            // The returned bytes are the pages' bytes from now on, for every
            // reader (from memory until the disk has them).
            let mut pages: Vec<u64> = returned.iter().map(|p| p.page).collect();
            pages.dedup();
            self.write_patches(r.file, &returned, sid, None);
            for page in pages {
                let v = self.bump_version();
                if let Some(e) = self.files.get_mut(r.file).pages.get_mut(&page) {
                    e.version = v;
                }
            }
        }
        if self.files.files.contains_key(&r.file) {
            let f = self.files.get_mut(r.file);
            for page in r.first..r.first + r.count as u64 {
                f.gc_page(page);
            }
        }
        self.maybe_forget_handle(sid, r.file);
        match r.waiter {
            RevWaiter::Op(id) => self.revocation_done_for(id),
            RevWaiter::Shutdown => self.shutdown_recall_done(),
            RevWaiter::Drain(shard) => self.drain_revocation_done(shard),
        }
        self.forget_file_if_unused(r.file);
    }

    /// Recalls every owned page (graceful shutdown).
    pub(super) fn recall_all_owned(&mut self, now: Instant) {
        let mut per_file: Vec<(FileId, Wanted)> = Vec::new();
        for (fid, f) in &self.files.files {
            let w: Vec<_> = f
                .pages
                .iter()
                .filter_map(|(p, e)| {
                    e.owner
                        .map(|o| (o, *p, RevKind::Recall { downgrade: true }))
                })
                .collect();
            if !w.is_empty() {
                per_file.push((*fid, w));
            }
        }
        for (fid, w) in per_file {
            self.send_revocations(now, RevWaiter::Shutdown, fid, w);
        }
    }

    /// Ends a session: everything it held is released (dirty data it never
    /// wrote back is lost, which its client learns when it tries to resume),
    /// everything waiting for it proceeds.
    pub(super) fn end_session(&mut self, now: Instant, sid: SessionId, reason: &str) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let revs: Vec<RevId> = s.outstanding_revs.iter().copied().collect();
        let ops: Vec<OpId> = s.in_progress.values().copied().collect();
        let conn = s.conn;
        for rev in revs {
            self.complete_revocation(now, sid, rev, &[]);
        }
        for id in ops {
            self.cancel_op(id);
        }
        let s = self.sessions.remove(&sid).expect("checked");
        for (file, pages) in &s.held {
            let f = self.files.get_mut(*file);
            for p in pages {
                if let Some(e) = f.pages.get_mut(p) {
                    e.drop_holder(sid);
                }
                f.gc_page(*p);
            }
        }
        let mut files: Vec<FileId> = Vec::new();
        for m in s.mappings.values() {
            self.files.get_mut(m.file).remove_mapping_end(m.end());
            files.push(m.file);
        }
        files.sort();
        files.dedup();
        for f in files {
            self.forget_file_if_unused(f);
        }
        if let Some(c) = conn {
            let f = Failure::fatal(
                ErrorCode::SessionLost,
                format!("the session ended: {reason}"),
            );
            self.push(c, &error_msg(crate::protocol::ReqId(0), &f));
            self.close_conn(c);
        }
        self.events.push_back(ServerEvent::SessionEnded {
            session: sid,
            reason: reason.to_owned(),
        });
    }
}

fn revocation_msg(
    rev: RevId,
    file: crate::protocol::FileHandle,
    first: PageNo,
    count: u32,
    kind: RevKind,
) -> Message {
    match kind {
        RevKind::Invalidate => Message::Invalidate(Invalidate {
            rev,
            file,
            first_page: first,
            count,
        }),
        RevKind::Recall { downgrade } => Message::Recall(Recall {
            rev,
            file,
            first_page: first,
            count,
            downgrade,
        }),
    }
}
