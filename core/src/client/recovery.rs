//! When a session cannot be resumed: say exactly what was lost, keep what
//! can be vouched for, and carry on with everything else.

use std::collections::BTreeMap;

use crate::Instant;
use crate::protocol::{Message, PageVersion, Revalidate};

use super::cache::{FileId, PageState};
use super::error::{LossCause, LostWrites, SessionLossReason};
use super::requests::ReqKind;
use super::{Client, ClientEvent, Completion, Event, MappingId, OpError, OpKind};

impl Client {
    /// The server no longer has our session (`reason`). Dirty pages are gone
    /// and the mappings they belong to are marked lost; after a restart, so
    /// are mappings written since their last sync. Clean pages are kept to be
    /// revalidated by version (unless the server restarted, when versions
    /// mean nothing). Every other mapping is mapped again and its operations
    /// continue.
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
        // The cache: keep clean copies to revalidate, unless versions of
        // the old epoch mean nothing.
        let keep = reason == SessionLossReason::LeaseExpired && !drop_cache;
        self.files.forget_handles();
        let mut gone = Vec::new();
        self.cache.update_all(|fid, q, pg| {
            pg.fetch = None;
            // Valid copies, and copies already waiting for revalidation
            // since an earlier loss, are kept when versions still count.
            if keep && pg.data.is_some() && (pg.state != PageState::Invalid || pg.stale) {
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

    /// Asks the new session to vouch for the stale copies in a mapping.
    pub(crate) fn revalidate(&mut self, mapping: MappingId, file: FileId) {
        let Some(ps) = self.conn.page_size() else {
            return;
        };
        let m = &self.mappings[mapping];
        let Some(wire) = m.wire() else { return };
        let (a, b) = m.pages(ps);
        let stale: Vec<(u64, u64)> = self
            .cache
            .range(file, a..b)
            .filter(|(_, p)| p.stale && p.fetch.is_none())
            .map(|(q, p)| (q, p.version))
            .collect();
        let per_request =
            ((self.conn.params().expect("set").max_frame as usize).saturating_sub(64) / 16).max(1);
        for chunk in stale.chunks(per_request) {
            if !self.request_room() {
                // No room: drop what cannot be checked now; it is fetched
                // again on use.
                for (q, _) in chunk {
                    if let Some(mut pg) = self.cache.get_mut(file, *q) {
                        pg.invalidate();
                    }
                }
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
    }
}
