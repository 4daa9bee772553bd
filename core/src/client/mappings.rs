//! The client's mappings: each one's range, status (opening, ready,
//! reopening after a lost session, lost, closing) and streaming state, and
//! the table that numbers them. A mapping's status changes only through
//! the methods here.

use std::collections::{BTreeMap, BTreeSet};

use crate::path::ExportPath;
use crate::protocol::{PageNo, ReqId, WireMappingId};

use super::cache::FileId;
use super::window::AheadWindow;
use super::{Access, LossCause, LostWrites, MapOptions, MappingId, OpError, OpId};

/// Most unsynced pages a mapping names in a loss report (64 Ki pages:
/// about 3 MiB of bookkeeping for 256 MiB written without a sync).
pub(crate) const MAX_NAMED_UNSYNCED: usize = 1 << 16;

/// Where a mapping is in its life.
#[derive(Clone, Debug)]
pub(crate) enum MappingStatus {
    /// A `Map` request is (or will be) in flight.
    Opening {
        req: Option<ReqId>,
    },
    Ready {
        wire: WireMappingId,
    },
    /// Mapped again after a lost session.
    Reopening {
        req: Option<ReqId>,
    },
    /// It lost writes and the application has not been told yet: the next
    /// operation (or the unmap) reports it.
    Lost(LostWrites),
    Closing,
}

/// One mapping.
#[derive(Debug)]
pub(crate) struct MappingState {
    pub(crate) path: String,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) writable: bool,
    pub(crate) create: bool,
    pub(crate) status: MappingStatus,
    pub(crate) file: Option<FileId>,
    /// Writes (and applied atomics) through the mapping so far, and how
    /// many of them a sync has made durable.
    pub(crate) write_seq: u64,
    pub(crate) synced_seq: u64,
    /// The file pages written since the last sync that covered them, with
    /// the number of their last write: what a crash of the server may have
    /// lost. `None` once more than [`MAX_NAMED_UNSYNCED`] were written
    /// without a sync (the loss is then reported without the list).
    unsynced: Option<BTreeMap<PageNo, u64>>,
    pub(crate) waiters: BTreeSet<OpId>,
    /// Where the last read ended, to spot sequential readers.
    pub(crate) last_read_end: u64,
    /// Read-ahead has been asked for up to this page.
    pub(crate) readahead_to: PageNo,
    pub(crate) file_len: u64,
    /// Drop-behind has released the pages before this one.
    pub(crate) dropped_to: PageNo,
    /// Where the last write ended, to spot sequential writers.
    pub(crate) last_write_end: u64,
    /// Write-behind has sent the dirty pages before this one.
    pub(crate) written_back_to: PageNo,
    /// Write-ahead has asked for ownership up to this page.
    pub(crate) writeahead_to: PageNo,
    /// How far ahead of a sequential reader, and writer, pages are asked for.
    pub(crate) read_window: AheadWindow,
    pub(crate) write_window: AheadWindow,
    /// The memory of a memory mapping.
    pub(crate) memory: Option<super::memory::Memory>,
    /// The adapter moves the mapping, memory and all, to the member that
    /// serves its file when this one stops ([`super::Client::follow_file`]).
    pub(crate) follows_file: bool,
}

impl MappingState {
    /// A new mapping of `len` bytes at `offset` of `path`, its `Map` not
    /// yet sent.
    pub(crate) fn new(
        path: &str,
        offset: u64,
        len: u64,
        opts: MapOptions,
        memory: Option<super::memory::Memory>,
        initial_window: u64,
    ) -> Self {
        MappingState {
            path: path.to_owned(),
            offset,
            len,
            writable: opts.access == Access::ReadWrite,
            create: opts.create,
            status: MappingStatus::Opening { req: None },
            file: None,
            write_seq: 0,
            synced_seq: 0,
            unsynced: Some(BTreeMap::new()),
            waiters: BTreeSet::new(),
            last_read_end: u64::MAX,
            readahead_to: 0,
            dropped_to: 0,
            last_write_end: u64::MAX,
            written_back_to: 0,
            writeahead_to: 0,
            read_window: AheadWindow::new(initial_window),
            write_window: AheadWindow::new(initial_window),
            file_len: 0,
            memory,
            follows_file: false,
        }
    }

    pub(crate) fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// A write (or an applied atomic) of the file pages `pages` went
    /// through the mapping.
    pub(crate) fn wrote(&mut self, pages: std::ops::Range<PageNo>) {
        self.write_seq += 1;
        let seq = self.write_seq;
        if let Some(u) = &mut self.unsynced {
            for q in pages {
                u.insert(q, seq);
            }
            if u.len() > MAX_NAMED_UNSYNCED {
                self.unsynced = None;
            }
        }
    }

    /// A sync made the writes up to number `upto` durable.
    pub(crate) fn synced(&mut self, upto: u64) {
        self.synced_seq = self.synced_seq.max(upto);
        match &mut self.unsynced {
            Some(u) => u.retain(|_, seq| *seq > upto),
            None if self.synced_seq >= self.write_seq => {
                self.unsynced = Some(BTreeMap::new());
            }
            None => {}
        }
    }

    /// Every write so far is durable (or no longer counts).
    pub(crate) fn synced_all(&mut self) {
        self.synced(self.write_seq);
    }

    /// Whether some write is not known to be durable.
    pub(crate) fn has_unsynced(&self) -> bool {
        self.write_seq > self.synced_seq
    }

    /// The file pages written since their last sync (ascending), if
    /// they were few enough to be named.
    pub(crate) fn unsynced_pages(&self) -> Option<Vec<PageNo>> {
        self.unsynced.as_ref().map(|u| u.keys().copied().collect())
    }

    pub(crate) fn pages(&self, ps: u64) -> (PageNo, PageNo) {
        (self.offset / ps, self.end().div_ceil(ps))
    }

    pub(crate) fn wire(&self) -> Option<WireMappingId> {
        match self.status {
            MappingStatus::Ready { wire } => Some(wire),
            _ => None,
        }
    }

    pub(crate) fn is_lost(&self) -> bool {
        matches!(self.status, MappingStatus::Lost(_))
    }

    pub(crate) fn is_closing(&self) -> bool {
        matches!(self.status, MappingStatus::Closing)
    }

    /// Being mapped again after a lost session.
    pub(crate) fn is_reopening(&self) -> bool {
        matches!(self.status, MappingStatus::Reopening { .. })
    }

    /// Why operations cannot use the mapping, if they cannot: it lost
    /// writes (not yet reported), or it is being unmapped.
    pub(crate) fn usable(&self) -> Result<(), OpError> {
        match &self.status {
            MappingStatus::Lost(l) => Err(OpError::SessionLost(l.clone())),
            MappingStatus::Closing => Err(OpError::MappingClosed),
            _ => Ok(()),
        }
    }

    /// Its `Map` request went out as `req`.
    pub(crate) fn map_sent(&mut self, req: ReqId) {
        self.status = if self.is_reopening() {
            MappingStatus::Reopening { req: Some(req) }
        } else {
            MappingStatus::Opening { req: Some(req) }
        };
    }

    /// The server mapped it as `wire`, on `file` of `file_len` bytes;
    /// returns the operations that waited for it.
    pub(crate) fn mapped(
        &mut self,
        wire: WireMappingId,
        file: FileId,
        file_len: u64,
    ) -> BTreeSet<OpId> {
        self.status = MappingStatus::Ready { wire };
        self.file = Some(file);
        self.file_len = file_len;
        std::mem::take(&mut self.waiters)
    }

    /// It lost writes: the next operation reports it.
    pub(crate) fn lose(&mut self, lost: LostWrites) {
        self.status = MappingStatus::Lost(lost);
    }

    /// The loss not yet reported, if any, now being reported to the
    /// application. A loss with its session is reported once: the mapping
    /// is then mapped again and goes on with the server's bytes (what was
    /// lost no longer counts as unsynced; a memory mapping faults the lost
    /// pages in again). A failed write-back keeps the mapping failed until
    /// unmapped.
    pub(crate) fn report_loss(&mut self) -> Option<LostWrites> {
        let MappingStatus::Lost(l) = &self.status else {
            return None;
        };
        let l = l.clone();
        if matches!(l.cause, LossCause::Session(_)) {
            self.status = MappingStatus::Reopening { req: None };
            self.synced_all();
        }
        Some(l)
    }

    /// Its `Unmap` went out.
    pub(crate) fn start_closing(&mut self) {
        self.status = MappingStatus::Closing;
    }

    /// The `Map` request in flight for it belonged to a lost session: it
    /// goes out again.
    pub(crate) fn map_request_lost(&mut self) {
        self.status = match self.status {
            MappingStatus::Reopening { .. } => MappingStatus::Reopening { req: None },
            _ => MappingStatus::Opening { req: None },
        };
    }

    /// The session is gone (and this mapping lost nothing): it is mapped
    /// again on the next one.
    pub(crate) fn session_lost(&mut self) {
        match self.status {
            MappingStatus::Ready { .. } | MappingStatus::Reopening { .. } => {
                self.status = MappingStatus::Reopening { req: None }
            }
            MappingStatus::Opening { .. } => self.status = MappingStatus::Opening { req: None },
            MappingStatus::Closing | MappingStatus::Lost(_) => {}
        }
    }
}

/// The client's mappings, by id.
#[derive(Debug, Default)]
pub(crate) struct Mappings {
    by_id: BTreeMap<MappingId, MappingState>,
    next: u64,
    /// Some mapping waits to be mapped again after a lost session.
    reopen_pending: bool,
}

impl Mappings {
    /// Numbers a new mapping.
    pub(crate) fn add(&mut self, m: MappingState) -> MappingId {
        self.next += 1;
        let id = MappingId(self.next);
        self.by_id.insert(id, m);
        id
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn get(&self, id: MappingId) -> Option<&MappingState> {
        self.by_id.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: MappingId) -> Option<&mut MappingState> {
        self.by_id.get_mut(&id)
    }

    /// Forgets a mapping.
    pub(crate) fn remove(&mut self, id: MappingId) -> Option<MappingState> {
        self.by_id.remove(&id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (MappingId, &MappingState)> {
        self.by_id.iter().map(|(id, m)| (*id, m))
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut MappingState> {
        self.by_id.values_mut()
    }

    pub(crate) fn ids(&self) -> Vec<MappingId> {
        self.by_id.keys().copied().collect()
    }

    /// Whether any mapping is of `file`.
    pub(crate) fn use_file(&self, file: FileId) -> bool {
        self.by_id.values().any(|m| m.file == Some(file))
    }

    /// The page ranges the mappings of `file` cover.
    /// The page ranges of `file` that open mappings cover, `except` one:
    /// the pages the server keeps this session a holder of. A mapping whose
    /// `Unmap` went out covers nothing (the server releases its pages as it
    /// reads the `Unmap`).
    pub(crate) fn page_ranges_of(
        &self,
        file: FileId,
        ps: u64,
        except: Option<MappingId>,
    ) -> Vec<(PageNo, PageNo)> {
        self.by_id
            .iter()
            .filter(|(id, m)| m.file == Some(file) && !m.is_closing() && Some(**id) != except)
            .map(|(_, m)| m.pages(ps))
            .collect()
    }

    /// A mapping of this client that a new mapping of `offset..offset+len`
    /// of `path` (into memory, with `memory`) would overlap where one of
    /// the two maps into memory (an empty range overlaps nothing). Paths
    /// are compared normalised (`./f`,
    /// `d/../f` and `f` are one file); a path that does not parse is the
    /// server's to refuse.
    pub(crate) fn memory_overlap(
        &self,
        path: &str,
        offset: u64,
        len: u64,
        memory: bool,
    ) -> Option<MappingId> {
        if len == 0 {
            // Holds no byte (a probe of the file's length).
            return None;
        }
        let name = ExportPath::parse(path.as_bytes()).ok()?;
        let end = offset.saturating_add(len);
        self.by_id.iter().find_map(|(id, m)| {
            let relevant = (memory || m.memory.is_some())
                && !m.is_closing()
                && m.len > 0
                && m.offset < end
                && offset < m.end();
            (relevant
                && ExportPath::parse(m.path.as_bytes()).is_ok_and(|p| p.as_str() == name.as_str()))
            .then_some(*id)
        })
    }

    /// Whether some mapping of `file` remains, open or being unmapped.
    pub(crate) fn maps_file(&self, file: FileId) -> bool {
        self.by_id.values().any(|m| m.file == Some(file))
    }

    /// The path some mapping of `file` was given.
    pub(crate) fn path_of(&self, file: FileId) -> Option<&str> {
        self.by_id
            .values()
            .find(|m| m.file == Some(file))
            .map(|m| m.path.as_str())
    }

    /// The memory mapping covering `page` of `file`, and the page's index in
    /// it.
    pub(crate) fn memory_covering(
        &self,
        file: FileId,
        page: PageNo,
        ps: u64,
    ) -> Option<(MappingId, u64)> {
        self.by_id.iter().find_map(|(id, m)| {
            let (a, b) = m.pages(ps);
            (m.memory.is_some() && m.file == Some(file) && (a..b).contains(&page))
                .then(|| (*id, page - a))
        })
    }

    /// Of the ready read-write mappings of `file` that contain file offset
    /// `x`, the one reaching furthest: `(id, wire, end)`.
    pub(crate) fn writable_at(
        &self,
        file: FileId,
        x: u64,
    ) -> Option<(MappingId, WireMappingId, u64)> {
        self.by_id
            .iter()
            .filter_map(|(id, m)| match m.status {
                MappingStatus::Ready { wire }
                    if m.file == Some(file) && m.writable && m.offset <= x && x < m.end() =>
                {
                    Some((*id, wire, m.end()))
                }
                _ => None,
            })
            .max_by_key(|(_, _, e)| *e)
    }

    /// Where the first read-write mapping of `file` starting in `(x, end)`
    /// starts.
    pub(crate) fn next_writable_start(&self, file: FileId, x: u64, end: u64) -> Option<u64> {
        self.by_id
            .values()
            .filter(|m| m.file == Some(file) && m.writable && m.offset > x && m.offset < end)
            .map(|m| m.offset)
            .min()
    }

    /// The mappings waiting to be mapped again (their `Map` not sent).
    pub(crate) fn to_reopen(&self) -> Vec<MappingId> {
        self.by_id
            .iter()
            .filter(|(_, m)| matches!(m.status, MappingStatus::Reopening { req: None }))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether some mapping may wait to be mapped again.
    pub(crate) fn reopen_pending(&self) -> bool {
        self.reopen_pending
    }

    pub(crate) fn set_reopen_pending(&mut self, pending: bool) {
        self.reopen_pending = pending;
    }
}

impl std::ops::Index<MappingId> for Mappings {
    type Output = MappingState;
    fn index(&self, id: MappingId) -> &MappingState {
        &self.by_id[&id]
    }
}
