//! A client session at the server: its mappings, holdings, lease and the
//! memory that lets it resume on a new connection with every request applied
//! exactly once.

use std::collections::{BTreeMap, BTreeSet};

use crate::Instant;
use crate::protocol::{
    FileHandle, Message, PageNo, ReqId, ResumeToken, RevId, SessionId, WireMappingId,
};

use super::ConnId;
use super::config::Rights;
use super::ids::{FileId, OpId};

/// One mapping of a session.
#[derive(Clone, Debug)]
pub(crate) struct MappingEntry {
    pub(crate) file: FileId,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) writable: bool,
}

impl MappingEntry {
    pub(crate) fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// Pages `[first, end)` the mapping touches.
    pub(crate) fn pages(&self, page_size: u64) -> (PageNo, PageNo) {
        (self.offset / page_size, self.end().div_ceil(page_size))
    }

    pub(crate) fn contains_bytes(&self, start: u64, len: u64) -> bool {
        start >= self.offset && start.checked_add(len).is_some_and(|e| e <= self.end())
    }
}

#[derive(Debug)]
pub(crate) struct Session {
    #[allow(dead_code)] // kept for debugging output
    pub(crate) id: SessionId,
    pub(crate) token: ResumeToken,
    pub(crate) name: String,
    pub(crate) rights: Rights,
    pub(crate) conn: Option<ConnId>,
    pub(crate) lease_expiry: Instant,
    /// A protocol violation ended the connection; the session only waits for
    /// its lease to run out and cannot be resumed.
    pub(crate) doomed: bool,
    pub(crate) mappings: BTreeMap<WireMappingId, MappingEntry>,
    next_mapping: u32,
    pub(crate) handles: BTreeMap<FileHandle, FileId>,
    pub(crate) handle_of: BTreeMap<FileId, FileHandle>,
    next_handle: u32,
    pub(crate) held: BTreeMap<FileId, BTreeSet<PageNo>>,
    pub(crate) held_count: u64,
    pub(crate) highest_req: ReqId,
    /// Replies to requests that must not run twice, kept so a retransmission
    /// gets the same answer. At most `max_inflight` entries.
    pub(crate) replies: BTreeMap<ReqId, Message>,
    pub(crate) in_progress: BTreeMap<ReqId, OpId>,
    /// Map requests waiting for their file to open: they count against
    /// the mapping limit already.
    pub(crate) pending_maps: usize,
    /// Bytes the disk is reading for this session's fetches: they count as
    /// output queued for its connection.
    pub(crate) reading: usize,
    /// Fetches that hold their pages but wait to read them until the
    /// connection's output drains below its limit (a client that does not
    /// read its replies makes the server hold no more than that).
    pub(crate) stalled: Vec<OpId>,
    pub(crate) next_rev: u64,
    pub(crate) rev_acked: RevId,
    pub(crate) outstanding_revs: BTreeSet<RevId>,
    /// Most pages per fetch: the server's limit, lowered so that a reply fits
    /// in the frames the client accepts.
    pub(crate) max_pages: u32,
    /// The connection each recent request was answered on. A retransmission
    /// whose answer already went out on the current connection is ignored:
    /// the ordered stream delivers that answer, and running a fetch twice
    /// would grant pages the client never asked for twice.
    pub(crate) answered: BTreeMap<ReqId, ConnId>,
}

impl Session {
    pub(crate) fn new(
        id: SessionId,
        token: ResumeToken,
        name: String,
        rights: Rights,
        lease_expiry: Instant,
    ) -> Self {
        Session {
            id,
            token,
            name,
            rights,
            conn: None,
            lease_expiry,
            doomed: false,
            mappings: BTreeMap::new(),
            next_mapping: 0,
            handles: BTreeMap::new(),
            handle_of: BTreeMap::new(),
            next_handle: 0,
            held: BTreeMap::new(),
            held_count: 0,
            highest_req: ReqId(0),
            replies: BTreeMap::new(),
            in_progress: BTreeMap::new(),
            pending_maps: 0,
            reading: 0,
            stalled: Vec::new(),
            next_rev: 0,
            rev_acked: RevId(0),
            outstanding_revs: BTreeSet::new(),
            max_pages: 1,
            answered: BTreeMap::new(),
        }
    }

    pub(crate) fn new_mapping_id(&mut self) -> WireMappingId {
        loop {
            self.next_mapping = self.next_mapping.wrapping_add(1);
            let id = WireMappingId(self.next_mapping);
            if self.next_mapping != 0 && !self.mappings.contains_key(&id) {
                return id;
            }
        }
    }

    pub(crate) fn handle_for(&mut self, file: FileId) -> FileHandle {
        if let Some(h) = self.handle_of.get(&file) {
            return *h;
        }
        loop {
            self.next_handle = self.next_handle.wrapping_add(1);
            let h = FileHandle(self.next_handle);
            if self.next_handle != 0 && !self.handles.contains_key(&h) {
                self.handles.insert(h, file);
                self.handle_of.insert(file, h);
                return h;
            }
        }
    }

    pub(crate) fn forget_handle(&mut self, file: FileId) {
        if let Some(h) = self.handle_of.remove(&file) {
            self.handles.remove(&h);
        }
    }

    pub(crate) fn next_rev_id(&mut self) -> RevId {
        self.next_rev += 1;
        RevId(self.next_rev)
    }

    pub(crate) fn note_held(&mut self, file: FileId, page: PageNo) {
        if self.held.entry(file).or_default().insert(page) {
            self.held_count += 1;
        }
    }

    pub(crate) fn note_released(&mut self, file: FileId, page: PageNo) {
        if let Some(set) = self.held.get_mut(&file) {
            if set.remove(&page) {
                self.held_count -= 1;
            }
            if set.is_empty() {
                self.held.remove(&file);
            }
        }
    }

    /// Whether any live mapping of this session on `file` covers `page`.
    pub(crate) fn covers(&self, file: FileId, page: PageNo, page_size: u64) -> bool {
        self.mappings.values().any(|m| {
            let (a, b) = m.pages(page_size);
            m.file == file && (a..b).contains(&page)
        })
    }

    pub(crate) fn note_answered(&mut self, req: ReqId, max: usize) {
        if let Some(c) = self.conn {
            self.answered.insert(req, c);
            while self.answered.len() > max {
                self.answered.pop_first();
            }
        }
    }

    pub(crate) fn remember_reply(&mut self, req: ReqId, reply: Message, max: usize) {
        self.replies.insert(req, reply);
        while self.replies.len() > max {
            self.replies.pop_first();
        }
    }

    /// Whether the lease may be renewed: never while a revocation sent to this
    /// session is unanswered, so an unresponsive client's lease runs out.
    pub(crate) fn may_renew(&self) -> bool {
        self.outstanding_revs.is_empty() && !self.doomed
    }
}
