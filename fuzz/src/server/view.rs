//! What a client knows of its session: mappings, handles, pages it owns,
//! revocations to answer. It outlives connections, so a resumed session goes
//! on where it was.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use rmmap_core::protocol::*;

/// A mapping as the client learned it from `Mapped`.
#[derive(Clone, Debug)]
pub(super) struct MappingView {
    pub(super) id: WireMappingId,
    pub(super) file: FileHandle,
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) writable: bool,
}

/// What a client knows of one session; it outlives connections, so a
/// resumed session goes on where it was.
#[derive(Debug, Default)]
pub(super) struct SessionView {
    pub(super) id: SessionId,
    pub(super) token: ResumeToken,
    pub(super) epoch: u64,
    pub(super) name: Vec<u8>,
    pub(super) next_req: u64,
    pub(super) mappings: Vec<MappingView>,
    pub(super) handles: BTreeSet<FileHandle>,
    /// Requests in flight whose reply teaches something.
    pub(super) pending: BTreeMap<ReqId, Pending>,
    /// Revocations received and not yet answered: `(handle, first, count,
    /// recall)`.
    pub(super) revs: BTreeMap<RevId, (FileHandle, PageNo, u32, bool)>,
    /// Pages held exclusively (from `Pages`), to write back and to recall.
    pub(super) owned: BTreeSet<(FileHandle, PageNo)>,
    /// The version of each page seen in `Pages` / `WriteAck`.
    pub(super) versions: BTreeMap<(FileHandle, PageNo), Version>,
}

#[derive(Debug)]
pub(super) enum Pending {
    Map {
        offset: u64,
        len: u64,
        writable: bool,
    },
    Unmap(WireMappingId),
    WriteBack(FileHandle, Vec<PageNo>),
}

impl MappingView {
    /// Pages `[a, b)` the mapping touches.
    pub(super) fn pages(&self, ps: u64) -> (PageNo, PageNo) {
        (self.offset / ps, (self.offset + self.len).div_ceil(ps))
    }
}

impl SessionView {
    /// The request number for the next request: usually the next one;
    /// sometimes the last one again (a retransmission), 0, or a jump.
    pub(super) fn req_id(&mut self, mode: u8) -> ReqId {
        let next = self.next_req.max(1);
        match mode {
            0..=223 => {
                self.next_req = next + 1;
                ReqId(next)
            }
            224..=239 => ReqId(next.saturating_sub(1 + (mode as u64 & 3))),
            240..=243 => ReqId(0),
            _ => {
                self.next_req = next + mode as u64;
                ReqId(next + mode as u64 - 1)
            }
        }
    }

    pub(super) fn mapping(&self, i: u8) -> Option<&MappingView> {
        if self.mappings.is_empty() {
            None
        } else {
            self.mappings.get(i as usize % self.mappings.len())
        }
    }

    /// Learns from one server message; a good client's answers go to `out`.
    pub(super) fn learn(&mut self, msg: Message, ps: u64, answers: bool, out: &mut Vec<Bytes>) {
        match msg {
            Message::Mapped(m) => {
                if let Some(Pending::Map {
                    offset,
                    len,
                    writable,
                }) = self.pending.remove(&m.req)
                {
                    self.handles.insert(m.file);
                    self.mappings.retain(|x| x.id != m.mapping);
                    self.mappings.push(MappingView {
                        id: m.mapping,
                        file: m.file,
                        offset,
                        len,
                        writable,
                    });
                }
            }
            Message::Unmapped(u) => {
                if let Some(Pending::Unmap(id)) = self.pending.remove(&u.req) {
                    self.mappings.retain(|x| x.id != id);
                }
            }
            Message::Pages(p) => {
                for (i, g) in p.pages.iter().enumerate() {
                    let key = (p.file, p.first_page + i as u64);
                    self.versions.insert(key, g.version);
                    if p.exclusive {
                        self.owned.insert(key);
                    } else {
                        self.owned.remove(&key);
                    }
                }
            }
            Message::WriteAck(a) => {
                if let Some(Pending::WriteBack(file, pages)) = self.pending.remove(&a.req) {
                    for (p, v) in pages.iter().zip(&a.versions) {
                        self.versions.insert((file, *p), *v);
                    }
                }
            }
            Message::Error(e) => {
                self.pending.remove(&e.req);
            }
            Message::Invalidate(r) => {
                self.revs
                    .insert(r.rev, (r.file, r.first_page, r.count, false));
                if answers && let Some(f) = self.answer(r.rev, ps) {
                    out.push(f);
                }
            }
            Message::Recall(r) => {
                self.revs
                    .insert(r.rev, (r.file, r.first_page, r.count, true));
                if answers && let Some(f) = self.answer(r.rev, ps) {
                    out.push(f);
                }
            }
            _ => {}
        }
    }

    /// A good client's acknowledgement of revocation `rev`: a recall gives
    /// back dirty data for the owned pages, within a read-write mapping.
    pub(super) fn answer(&mut self, rev: RevId, ps: u64) -> Option<Bytes> {
        let (file, first, count, recall) = self.revs.remove(&rev)?;
        let end = first.saturating_add(count as u64);
        if !recall {
            return Some(Message::InvalidateAck(InvalidateAck { rev }).to_bytes());
        }
        let mut patches = Vec::new();
        let owned: Vec<PageNo> = self
            .owned
            .range((file, first)..(file, end))
            .map(|(_, p)| *p)
            .collect();
        for page in owned {
            self.owned.remove(&(file, page));
            let (lo, hi) = (page * ps, page * ps + ps);
            let m = self
                .mappings
                .iter()
                .find(|m| m.file == file && m.writable && m.offset < hi && m.offset + m.len > lo);
            if let Some(m) = m {
                let (s, e) = (lo.max(m.offset), hi.min(m.offset + m.len));
                let data = Bytes::from(vec![rev.0 as u8; (e - s) as usize]);
                patches.push(PagePatch {
                    page,
                    offset: (s - lo) as u32,
                    data,
                });
            }
        }
        Some(Message::RecallAck(RecallAck { rev, patches }).to_bytes())
    }
}
