//! Operations on whole mappings and files: sync, unmap, set length,
//! atomics, close.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::protocol::{Message, PageNo, ReqId, SetLen, Sync, Unmap};

use super::cache::FileId;
use super::ops::Step;
use super::requests::ReqKind;
use super::{Client, Completion, MappingId, MappingStatus, OpError, OpId};

impl Client {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn step_sync(
        &mut self,
        id: OpId,
        mapping: MappingId,
        snapshot: &mut Option<Vec<PageNo>>,
        upto: u64,
        writebacks: &mut BTreeSet<ReqId>,
        sync_req: &mut Option<ReqId>,
        done: bool,
        failed: &mut Option<OpError>,
    ) -> Step {
        if let Some(e) = failed.take() {
            return Step::Done(Err(e));
        }
        if done {
            if let Some(m) = self.mappings.get_mut(mapping) {
                m.synced(upto);
            }
            return Step::Done(Ok(Completion::Synced));
        }
        let (wire, file) = match self.ready_mapping(id, mapping) {
            Err(e) => return Step::Done(Err(e)),
            Ok(None) => return Step::Pending,
            Ok(Some(x)) => x,
        };
        let ps = self.conn.params().expect("mapped").page_size;
        let (a, b) = self.mappings[mapping].pages(ps);
        // One pass over the dirty pages sends as much as the request window
        // takes; the next pass waits until those are acknowledged, so the op
        // costs O(pages) however many acknowledgements wake it.
        let mut flushed = false;
        if writebacks.is_empty() {
            let pages = snapshot
                .take()
                .unwrap_or_else(|| self.dirty_pages_in(file, a, b));
            flushed = self.flush_pages(Some(id), file, &pages, &mut 0, writebacks);
            *snapshot = Some(pages);
        }
        if flushed && writebacks.is_empty() && sync_req.is_none() {
            if self.request_room() {
                *sync_req = Some(self.send_request(
                    |req| Message::Sync(Sync { req, mapping: wire }),
                    ReqKind::Sync { op: id },
                ));
            } else {
                self.ops.wait_window(id);
            }
        }
        Step::Pending
    }

    /// `sync`: the `Sync` sent, whether it succeeded, how it (or a
    /// write-back) failed.
    pub(crate) fn step_unmap(
        &mut self,
        id: OpId,
        mapping: MappingId,
        writebacks: &mut BTreeSet<ReqId>,
        sync: (&mut Option<ReqId>, bool, &mut Option<OpError>),
        req: &mut Option<ReqId>,
    ) -> Step {
        let (sync_req, synced, failed) = sync;
        let Some(m) = self.mappings.get(mapping) else {
            return Step::Done(Ok(Completion::Unmapped));
        };
        match m.status.clone() {
            MappingStatus::Lost(lost) => {
                // Gone either way; the application hears what was lost.
                self.finalize_unmap(mapping);
                Step::Done(Err(OpError::SessionLost(lost)))
            }
            MappingStatus::Opening { .. } | MappingStatus::Reopening { .. } => {
                self.mappings
                    .get_mut(mapping)
                    .expect("present")
                    .waiters
                    .insert(id);
                Step::Pending
            }
            MappingStatus::Closing => Step::Pending,
            MappingStatus::Ready { wire } => {
                let file = m.file.expect("ready");
                let unsynced = m.writable && m.has_unsynced();
                let ps = self.conn.params().expect("mapped").page_size;
                let (a, b) = m.pages(ps);
                // As for sync: a pass only once the last one's write-backs are
                // acknowledged.
                if !writebacks.is_empty() {
                    return Step::Pending;
                }
                let pages = self.dirty_pages_in(file, a, b);
                if !self.flush_pages(Some(id), file, &pages, &mut 0, writebacks)
                    || !writebacks.is_empty()
                {
                    return Step::Pending;
                }
                if let Some(e) = failed.take() {
                    // Its data stays on the server; the mapping stays too.
                    *sync_req = None;
                    return Step::Done(Err(e));
                }
                // What it wrote is made durable before it goes: a disk that
                // refused it is reported here, not lost in silence.
                if unsynced && !synced {
                    if sync_req.is_none() {
                        if !self.request_room() {
                            self.ops.wait_window(id);
                            return Step::Pending;
                        }
                        *sync_req = Some(self.send_request(
                            |req| Message::Sync(Sync { req, mapping: wire }),
                            ReqKind::Sync { op: id },
                        ));
                    }
                    return Step::Pending;
                }
                if !self.request_room() {
                    self.ops.wait_window(id);
                    return Step::Pending;
                }
                *req = Some(self.send_request(
                    |req| Message::Unmap(Unmap { req, mapping: wire }),
                    ReqKind::Unmap { mapping, op: id },
                ));
                self.release_pages_of(mapping);
                self.mappings
                    .get_mut(mapping)
                    .expect("present")
                    .start_closing();
                Step::Pending
            }
        }
    }

    /// Forgets a mapping and the cached pages no other mapping covers.
    pub(crate) fn finalize_unmap(&mut self, mapping: MappingId) {
        self.release_pages_of(mapping);
        let Some(m) = self.mappings.remove(mapping) else {
            return;
        };
        let waiters: Vec<OpId> = m.waiters.iter().copied().collect();
        self.ops.wake_all_of(waiters);
        let Some(file) = m.file else { return };
        // Not while a mapping of the file still waits for its `Unmapped`:
        // answers to its requests still name the file's handle.
        if !self.mappings.maps_file(file) {
            self.drop_file(file);
        }
    }

    /// Drops the cached pages of `mapping` that no other open mapping
    /// covers (a memory mapping's leave its memory first). Done when its
    /// `Unmap` goes out, not when the answer comes back: the server stops
    /// counting this client as a holder of those pages as it reads the
    /// `Unmap`, and may grant them to another client for writing at once,
    /// so a copy kept until `Unmapped` arrives would be a reader beside a
    /// writer.
    fn release_pages_of(&mut self, mapping: MappingId) {
        let Some(m) = self.mappings.get(mapping) else {
            return;
        };
        let (Some(file), Some(ps)) = (m.file, self.conn.page_size()) else {
            return;
        };
        let (a, b) = m.pages(ps);
        if m.memory.is_some() {
            let installed: Vec<PageNo> = self
                .cache
                .range(file, a..b)
                .filter(|(_, p)| p.installed.is_some())
                .map(|(q, _)| q)
                .collect();
            for q in installed {
                self.zap_page(file, q);
            }
        }
        let others = self.mappings.page_ranges_of(file, ps, Some(mapping));
        let doomed = self.cache.remove_where(file, |q, _| {
            (a..b).contains(&q) && !others.iter().any(|(x, y)| (*x..*y).contains(&q))
        });
        for pg in doomed {
            self.ops.wake_all_of(pg.waiters);
        }
    }

    pub(crate) fn step_set_len(
        &mut self,
        id: OpId,
        path: &str,
        len: u64,
        create: bool,
        req: &mut Option<ReqId>,
    ) -> Step {
        if req.is_none() {
            if !self.request_room() {
                // Without a session it is woken, with every operation, by
                // the next handshake.
                if self.conn.params().is_some() {
                    self.ops.wait_window(id);
                }
                return Step::Pending;
            }
            let p = Bytes::from(path.as_bytes().to_vec());
            *req = Some(self.send_request(
                |req| {
                    Message::SetLen(SetLen {
                        req,
                        create,
                        len,
                        path: p,
                    })
                },
                ReqKind::SetLen { op: id },
            ));
        }
        Step::Pending
    }

    pub(crate) fn step_atomic(
        &mut self,
        id: OpId,
        mapping: MappingId,
        offset: u64,
        op: crate::protocol::AtomicOp,
        req: &mut Option<ReqId>,
    ) -> Step {
        if req.is_some() {
            return Step::Pending;
        }
        let (wire, _) = match self.ready_mapping(id, mapping) {
            Err(e) => return Step::Done(Err(e)),
            Ok(None) => return Step::Pending,
            Ok(Some(x)) => x,
        };
        if !self.request_room() {
            self.ops.wait_window(id);
            return Step::Pending;
        }
        *req = Some(self.send_request(
            |req| {
                Message::Atomic(crate::protocol::Atomic {
                    req,
                    mapping: wire,
                    offset,
                    op,
                })
            },
            ReqKind::Atomic { op: id },
        ));
        Step::Pending
    }

    pub(crate) fn step_close(
        &mut self,
        id: OpId,
        writebacks: &mut BTreeSet<ReqId>,
        syncs: &mut BTreeMap<ReqId, MappingId>,
        syncs_sent: &mut bool,
        failed: &mut Option<OpError>,
        bye_sent: bool,
    ) -> Step {
        if bye_sent {
            return Step::Done(Ok(Completion::Closed));
        }
        if self.conn.params().is_none() || !self.conn.is_ready() {
            // Nothing to flush without a session; wait for one otherwise.
            if !self.conn.has_session() {
                self.conn.end("closed", None);
                self.events.push_back(super::Event::Disconnect);
                return Step::Done(Ok(Completion::Closed));
            }
            // Woken, with every operation, by the next handshake.
            return Step::Pending;
        }
        if !writebacks.is_empty() {
            return Step::Pending;
        }
        let files: Vec<FileId> = self.cache.file_ids();
        let mut all = true;
        for f in files {
            let pages = self.dirty_pages_in(f, 0, PageNo::MAX);
            all &= self.flush_pages(Some(id), f, &pages, &mut 0, writebacks);
        }
        if !all || !writebacks.is_empty() {
            return Step::Pending;
        }
        // Every mapping written since its last sync is synced, so that a
        // disk that refused its data is reported by the close.
        if !*syncs_sent {
            let unsynced: Vec<(MappingId, crate::protocol::WireMappingId)> = self
                .mappings
                .iter()
                .filter(|(_, m)| m.writable && m.has_unsynced())
                .filter(|(mid, _)| !syncs.values().any(|x| x == mid))
                .filter_map(|(mid, m)| Some((mid, m.wire()?)))
                .collect();
            for (mid, wire) in unsynced {
                if !self.request_room() {
                    self.ops.wait_window(id);
                    return Step::Pending;
                }
                let req = self.send_request(
                    |req| Message::Sync(Sync { req, mapping: wire }),
                    ReqKind::Sync { op: id },
                );
                syncs.insert(req, mid);
            }
            *syncs_sent = true;
        }
        if !syncs.is_empty() {
            return Step::Pending;
        }
        let lost = self.mappings.iter().find_map(|(_, m)| match &m.status {
            MappingStatus::Lost(l) => Some(l.clone()),
            _ => None,
        });
        let result = match (failed.take(), lost) {
            (Some(e), _) => Err(e),
            (None, Some(l)) => Err(OpError::SessionLost(l)),
            (None, None) => Ok(Completion::Closed),
        };
        self.conn.push(&Message::Bye);
        self.conn.end("the client was closed", None);
        self.events.push_back(super::Event::Disconnect);
        let others: Vec<OpId> = self.ops.ids();
        for o in others {
            self.complete(o, Err(OpError::Closed("the client was closed".into())));
        }
        Step::Done(result)
    }
}
