//! When a session cannot be resumed: say exactly what was lost, keep what
//! can be vouched for, and carry on with everything else.

use std::collections::BTreeMap;

use crate::Instant;
use crate::protocol::{Message, PageDigest, PageVersion, Refresh, Revalidate};

use super::cache::{FileId, PageState};
use super::error::{LossCause, LostWrites, SessionLossReason};
use super::requests::ReqKind;
use super::{Client, ClientEvent, Completion, Event, MappingId, OpError, OpKind};

impl Client {
    /// The server no longer has our session (`reason`). Dirty pages are gone
    /// and the mappings they belong to are marked lost; after a restart, so
    /// are mappings written since their last sync. Clean pages are kept to be
    /// vouched for again: by version, or by their bytes when the server
    /// restarted (versions of its earlier run mean nothing to it). Every other
    /// mapping is mapped again and its operations continue.
    pub(crate) fn on_session_lost(
        &mut self,
        _now: Instant,
        reason: SessionLossReason,
        drop_cache: bool,
    ) {
        let ps = self.conn.params().map_or(4096, |p| p.page_size);
        // Pages in memory come back into the cache (with their changes) first.
        self.withdraw_all_memory();
        let mut lost: BTreeMap<MappingId, LostWrites> = BTreeMap::new();
        let cause = LossCause::Session(reason);
        let entry = |lost: &mut BTreeMap<MappingId, LostWrites>, id: MappingId, path: &str| {
            lost.entry(id)
                .or_insert_with(|| LostWrites {
                    path: path.to_owned(),
                    cause: cause.clone(),
                    dirty_pages: 0,
                    unsynced_writes: false,
                    remap_error: None,
                    pages: Vec::new(),
                    unsynced_pages: Box::default(),
                })
                .dirty_pages += 0;
        };
        // Dirty pages, and pages whose write-back was never confirmed.
        let mappings = &self.mappings;
        self.cache.update_all(|fid, q, pg| {
            if pg.dirty.is_none() && pg.writebacks == 0 {
                return;
            }
            for (mid, m) in mappings.iter() {
                let (a, b) = m.pages(ps);
                if m.file == Some(fid) && m.writable && (a..b).contains(&q) && !m.is_lost() {
                    entry(&mut lost, mid, &m.path);
                    let l = lost.get_mut(&mid).expect("just added");
                    if !l.pages.contains(&q) {
                        l.dirty_pages += 1;
                        l.pages.push(q);
                    }
                }
            }
            pg.dirty = None;
            pg.writebacks = 0;
            pg.state = PageState::Invalid;
            pg.data = super::cache::PageData::None;
        });
        // Dirty data handed back in recall acknowledgements the server never
        // confirmed: it may not have arrived.
        for (fid, q) in self.requests.unconfirmed_recalled_pages() {
            for (mid, m) in self.mappings.iter() {
                let (a, b) = m.pages(ps);
                if m.file == Some(fid) && m.writable && (a..b).contains(&q) && !m.is_lost() {
                    entry(&mut lost, mid, &m.path);
                    let l = lost.get_mut(&mid).expect("just added");
                    if !l.pages.contains(&q) {
                        l.dirty_pages += 1;
                        l.pages.push(q);
                    }
                }
            }
        }
        if reason == SessionLossReason::ServerRestarted {
            for (mid, m) in self.mappings.iter() {
                if m.has_unsynced() && !m.is_lost() {
                    entry(&mut lost, mid, &m.path);
                    let l = lost.get_mut(&mid).expect("just added");
                    l.unsynced_writes = true;
                    l.unsynced_pages = m.unsynced_pages().unwrap_or_default().into();
                }
            }
        }
        // Requests of the old session.
        for r in self.requests.end_session() {
            match r.kind {
                ReqKind::Map { mapping, .. } => {
                    if let Some(m) = self.mappings.get_mut(mapping) {
                        m.map_request_lost();
                    }
                }
                ReqKind::Unmap { mapping, op } => {
                    self.finalize_unmap(mapping);
                    self.complete(op, Ok(Completion::Unmapped));
                }
                ReqKind::Atomic { op } => self.complete(op, Err(OpError::OutcomeUnknown)),
                ReqKind::Fetch { .. }
                | ReqKind::WriteBack { .. }
                | ReqKind::Sync { .. }
                | ReqKind::Revalidate { .. }
                | ReqKind::Refresh { .. }
                | ReqKind::SetLen { .. } => {}
            }
        }
        // Operations forget the requests they waited for and start over.
        for o in self.ops.kinds_mut() {
            match o {
                OpKind::Sync {
                    snapshot,
                    writebacks,
                    sync_req,
                    ..
                } => {
                    *snapshot = None;
                    writebacks.clear();
                    *sync_req = None;
                }
                OpKind::Unmap {
                    writebacks,
                    sync_req,
                    req,
                    ..
                } => {
                    writebacks.clear();
                    *sync_req = None;
                    *req = None;
                }
                OpKind::Close {
                    writebacks,
                    syncs,
                    syncs_sent,
                    ..
                } => {
                    writebacks.clear();
                    syncs.clear();
                    *syncs_sent = false;
                }
                OpKind::SetLen { req, .. } => *req = None,
                _ => {}
            }
        }
        // The cache: keep clean copies to have them vouched for again, by
        // version in the same server run, by their bytes after a restart
        // (versions of an earlier run mean nothing to the new one).
        let restarted = reason == SessionLossReason::ServerRestarted;
        let keep = !drop_cache;
        self.files.forget_handles();
        let mut gone = Vec::new();
        self.cache.update_all(|fid, q, pg| {
            pg.fetch = None;
            // Valid copies, and copies already waiting to be vouched for
            // since an earlier loss, are kept.
            if keep && pg.data.is_some() && (pg.state != PageState::Invalid || pg.stale) {
                pg.carried = restarted || (pg.stale && pg.carried);
                pg.state = PageState::Invalid;
                pg.stale = true;
            } else {
                gone.push((fid, q));
            }
        });
        for (fid, q) in gone {
            if let Some(pg) = self.cache.remove(fid, q) {
                self.ops.wake_all_of(pg.waiters);
            }
        }
        // Mappings: the lost ones report it once (to the operations waiting
        // on them now, or else to the next one, or at unmap), the rest are
        // mapped again.
        for l in lost.values_mut() {
            l.pages.sort_unstable();
        }
        for id in self.mappings.ids() {
            if let Some(l) = lost.get(&id) {
                self.mappings.get_mut(id).expect("listed").lose(l.clone());
                // A memory mapping's memory is not failed: its pages left
                // memory above, and its threads fault them in again once
                // the loss has been reported (to a blocked fault, or the
                // next one).
                if self.fail_mapping_ops(id, OpError::SessionLost(l.clone())) > 0 {
                    let _reported = self.report_loss(id);
                }
                continue;
            }
            self.mappings.get_mut(id).expect("listed").session_lost();
        }
        self.conn.forget_lease();
        self.mappings.set_reopen_pending(true);
        self.events
            .push_back(Event::Connection(ClientEvent::SessionLost {
                reason,
                lost: lost.into_iter().collect(),
            }));
        self.ops.wake_all();
    }

    /// Asks the new session to vouch for the stale copies in a mapping: by
    /// version (`Revalidate`) for copies of this server run, by digest
    /// (`Refresh`, which sends what changed) for copies carried over a
    /// restart.
    pub(crate) fn revalidate(&mut self, mapping: MappingId, file: FileId) {
        let Some(ps) = self.conn.page_size() else {
            return;
        };
        let m = &self.mappings[mapping];
        let Some(wire) = m.wire() else { return };
        let (a, b) = m.pages(ps);
        let stale = |carried: bool| -> Vec<(u64, u64)> {
            self.cache
                .range(file, a..b)
                .filter(|(_, p)| p.stale && p.fetch.is_none() && p.carried == carried)
                .map(|(q, p)| (q, p.version))
                .collect()
        };
        let (same_run, carried) = (stale(false), stale(true));
        let max_frame = self.conn.params().expect("set").max_frame as usize;
        let per_request = (max_frame.saturating_sub(64) / 16).max(1);
        for chunk in same_run.chunks(per_request) {
            if !self.request_room() {
                self.drop_unchecked(file, chunk.iter().map(|(q, _)| *q));
                continue;
            }
            let pages: Vec<PageVersion> = chunk
                .iter()
                .map(|(p, v)| PageVersion {
                    page: *p,
                    version: *v,
                })
                .collect();
            let req = self.send_request(
                |req| {
                    Message::Revalidate(Revalidate {
                        req,
                        mapping: wire,
                        pages,
                    })
                },
                ReqKind::Revalidate {
                    file,
                    pages: chunk.to_vec(),
                },
            );
            for (q, _) in chunk {
                self.cache.page(file, *q).fetch = Some(req);
            }
        }
        // Carried copies go in runs of consecutive pages, as fetches do.
        let max_pages = (self.conn.params().expect("set").max_pages as usize)
            .min(per_request)
            .max(1);
        let mut runs: Vec<(u64, u32)> = Vec::new();
        for (q, _) in carried {
            match runs.last_mut() {
                Some((first, n)) if *first + *n as u64 == q && (*n as usize) < max_pages => *n += 1,
                _ => runs.push((q, 1)),
            }
        }
        for (first, count) in runs {
            let pages = first..first + count as u64;
            if !self.request_room() {
                self.drop_unchecked(file, pages);
                continue;
            }
            let digests: Vec<PageDigest> = self
                .cache
                .range(file, pages.clone())
                .map(|(_, p)| PageDigest::of(p.data.as_slice().unwrap_or_default()))
                .collect();
            let req = self.send_request(
                |req| {
                    Message::Refresh(Refresh {
                        req,
                        mapping: wire,
                        first_page: first,
                        digests,
                    })
                },
                ReqKind::Refresh { file, first, count },
            );
            for q in pages {
                self.cache.page(file, q).fetch = Some(req);
            }
        }
    }

    /// No room for more requests: copies that cannot be checked now are
    /// dropped; they are fetched again on use.
    fn drop_unchecked(&mut self, file: FileId, pages: impl IntoIterator<Item = u64>) {
        for q in pages {
            if let Some(mut pg) = self.cache.get_mut(file, q) {
                pg.invalidate();
            }
        }
    }
}
