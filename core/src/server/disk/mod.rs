//! The server's disk, as the state machine sees it: store requests going out
//! and results coming back, the order they may run in, the open files, and
//! the bytes not yet known to be durable.
//!
//! Every store request the server makes goes through [`Disk`], which numbers
//! it, remembers what it is for ([`Purpose`]), and lets it out as a
//! `ServerEvent::Store` only when it commutes with everything outstanding on
//! its file ([`queue`]). File handles are a cache: at most
//! `max_open_files` are open; the least recently used idle one is closed to
//! make room and reopened, by path, when it is needed again, its identity
//! checked so that a file replaced on disk is noticed. Written bytes stay
//! in memory ([`unsynced`]) until an fsync covers them, so that a failed
//! write or fsync loses nothing: the bytes are served from memory and
//! written again. A file this run may write is fsynced once before it is
//! first read, so that bytes an earlier run left unsynced are either on the
//! disk or gone before anyone sees them.

mod queue;
mod unsynced;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::path::ExportPath;
use crate::protocol::SessionId;
use crate::store::{
    FileKey, OpenOptions, OpenedFile, StoreDone, StoreError, StoreFile, StoreId, StoreOp,
    StoreRequest, WriteRun,
};

use super::ids::{FileId, OpId};
use queue::{FileOp, FileQueue};
use unsynced::Unsynced;

/// Start an fsync of a file on its own once this many of its written bytes
/// wait for one (so that memory holds little that is already on its way).
const SYNC_BEHIND: u64 = 64 << 20;

/// What a store request is for: where its result goes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Opening a path for an operation (map, set length).
    OpenFor(OpId),
    /// Reading for an operation (a fetch's pages, an atomic's word).
    ReadFor(OpId),
    /// Changing a file's length for an operation.
    SetLenFor(OpId),
    /// Writing unsynced pieces; `op`, a write-back waiting for it.
    Write { file: FileId, op: Option<OpId> },
    /// An fsync; `op`, a sync waiting for it. `mark` says which written
    /// pieces it covers, set when it starts.
    Sync {
        file: FileId,
        mark: u64,
        op: Option<OpId>,
    },
    /// Reopening a file whose handle was closed to make room.
    Reopen(FileId),
    /// Closing a handle.
    Close,
    /// Recording the run state.
    SaveRunState,
}

/// A finished store request, for the server to act on.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) purpose: Purpose,
    pub(crate) result: Result<StoreDone, StoreError>,
}

/// One open file, as the disk knows it.
#[derive(Debug)]
struct DiskFile {
    key: FileKey,
    /// The full path beneath the root, to reopen it.
    path: ExportPath,
    writable: bool,
    handle: Option<StoreFile>,
    reopening: bool,
    queue: FileQueue,
    unsynced: Unsynced,
    /// For least-recently-used eviction of handles.
    last_use: u64,
    /// The file can no longer be reached (replaced or removed on disk).
    gone: Option<StoreError>,
}

/// The store requests of a server. See the module documentation.
#[derive(Debug)]
pub(crate) struct Disk {
    next_id: u64,
    purposes: BTreeMap<StoreId, Purpose>,
    /// The file of each request in a file's queue.
    queued_in: BTreeMap<StoreId, FileId>,
    /// Files whose queue may let requests out.
    marked: BTreeSet<FileId>,
    files: BTreeMap<FileId, DiskFile>,
    out: VecDeque<StoreRequest>,
    /// Opens waiting for room under the open-file limit.
    opens: VecDeque<(StoreId, StoreOp)>,
    /// Handles open plus opens in flight.
    handles: u32,
    max_handles: u32,
    tick: u64,
    /// Results of requests that never left (their file could not be
    /// reopened, or a write was written again before it ran), delivered as
    /// if the store had answered.
    early: VecDeque<(StoreId, Result<StoreDone, StoreError>)>,
}

impl Disk {
    pub(crate) fn new(max_open_files: u32) -> Self {
        Disk {
            next_id: 0,
            purposes: BTreeMap::new(),
            queued_in: BTreeMap::new(),
            marked: BTreeSet::new(),
            files: BTreeMap::new(),
            out: VecDeque::new(),
            opens: VecDeque::new(),
            handles: 0,
            max_handles: max_open_files.max(1),
            tick: 0,
            early: VecDeque::new(),
        }
    }

    fn new_id(&mut self) -> StoreId {
        self.next_id += 1;
        StoreId(self.next_id)
    }

    /// The next request for the adapter.
    pub(crate) fn poll_request(&mut self) -> Option<StoreRequest> {
        debug_assert!(
            self.marked.is_empty(),
            "start_marked runs before requests leave"
        );
        self.out.pop_front()
    }

    /// Results decided without the store (requests of a file that is gone,
    /// writes that were written again before they ran).
    pub(crate) fn poll_early(&mut self) -> Option<(StoreId, Result<StoreDone, StoreError>)> {
        self.early.pop_front()
    }

    /// What request `id` is for (only a deliberate bug asks).
    #[cfg(feature = "bug-injection")]
    pub(crate) fn purpose_of(&self, id: StoreId) -> Option<Purpose> {
        self.purposes.get(&id).copied()
    }

    /// Records the run state (not a file request: it runs at once).
    pub(crate) fn save_run_state(&mut self, state: Bytes) {
        let id = self.new_id();
        self.purposes.insert(id, Purpose::SaveRunState);
        self.out.push_back(StoreRequest {
            id,
            op: StoreOp::SaveRunState { state },
        });
    }

    /// Requests issued and not yet finished.
    pub(crate) fn outstanding(&self) -> usize {
        self.purposes.len()
    }

    // ---- opening and closing ----

    /// Opens a path (a map or set-length request).
    pub(crate) fn open(
        &mut self,
        path: ExportPath,
        scope: Option<ExportPath>,
        options: OpenOptions,
        purpose: Purpose,
    ) -> StoreId {
        let id = self.new_id();
        self.purposes.insert(id, purpose);
        self.opens.push_back((
            id,
            StoreOp::Open {
                path,
                scope,
                options,
            },
        ));
        self.pump_opens();
        id
    }

    /// Lets opens out while there is room, closing idle handles to make it.
    fn pump_opens(&mut self) {
        while !self.opens.is_empty() {
            if self.handles >= self.max_handles && !self.evict_one() {
                return;
            }
            let (id, op) = self.opens.pop_front().expect("not empty");
            self.handles += 1;
            self.out.push_back(StoreRequest { id, op });
        }
    }

    /// Closes the least recently used handle of a file with nothing queued
    /// or running; says whether there was one.
    fn evict_one(&mut self) -> bool {
        let victim = self
            .files
            .iter()
            .filter(|(_, f)| f.handle.is_some() && f.queue.is_idle() && !f.reopening)
            .min_by_key(|(_, f)| f.last_use)
            .map(|(id, _)| *id);
        let Some(v) = victim else { return false };
        let f = self.files.get_mut(&v).expect("found");
        let handle = f.handle.take().expect("filtered");
        self.close_handle(handle);
        true
    }

    fn close_handle(&mut self, file: StoreFile) {
        let id = self.new_id();
        self.purposes.insert(id, Purpose::Close);
        // The handle stops counting now: closing never waits, and its
        // descriptor is gone by the time anything else runs after it.
        self.handles -= 1;
        self.out.push_back(StoreRequest {
            id,
            op: StoreOp::Close { file },
        });
    }

    /// Takes over a freshly opened file under `id`. If the disk already knows
    /// the file, the new handle replaces a closed one or is closed itself.
    pub(crate) fn adopt(&mut self, id: FileId, opened: &OpenedFile, path: ExportPath) {
        self.tick += 1;
        let tick = self.tick;
        match self.files.get_mut(&id) {
            Some(f) => {
                if f.handle.is_none() && !f.reopening {
                    f.handle = Some(opened.file);
                    f.last_use = tick;
                } else {
                    self.close_handle(opened.file);
                }
            }
            None => {
                self.files.insert(
                    id,
                    DiskFile {
                        key: opened.key,
                        path,
                        writable: opened.writable,
                        handle: Some(opened.file),
                        reopening: false,
                        queue: FileQueue::default(),
                        unsynced: Unsynced::default(),
                        last_use: tick,
                        gone: None,
                    },
                );
                // The kernel may still hold bytes nobody fsynced (written by
                // an earlier run that was killed, or half a short write),
                // and drops them if an fsync fails: reads would then go back
                // to older bytes after serving newer ones. One fsync before
                // the first read settles what the file holds (files this run
                // may write; a read-only export leaves its disk alone).
                if opened.writable {
                    let settle = self.new_id();
                    let purpose = Purpose::Sync {
                        file: id,
                        mark: 0,
                        op: None,
                    };
                    self.enqueue(settle, id, FileOp::Settle, purpose);
                }
            }
        }
        self.mark(id);
    }

    /// Nothing of the file is queued, running or unsynced: it may be
    /// forgotten.
    pub(crate) fn is_idle(&self, id: FileId) -> bool {
        // The pieces of a file that can no longer be reached are lost; they
        // do not keep it open (their writers were told at their syncs).
        self.files.get(&id).is_none_or(|f| {
            f.queue.is_idle() && !f.reopening && (f.unsynced.is_empty() || f.gone.is_some())
        })
    }

    /// Every session with bytes of the file not yet durable.
    pub(crate) fn unsynced_writers(&self, id: FileId) -> Vec<SessionId> {
        self.files
            .get(&id)
            .map_or_else(Vec::new, |f| f.unsynced.writers())
    }

    /// Gives the file up (a cluster member lost its shard): nothing more of
    /// it is written, what waits to be is answered `error`, and its bytes not
    /// yet durable are lost (they no longer keep it open).
    pub(crate) fn abandon(&mut self, id: FileId, error: StoreError) {
        let Some(f) = self.files.get_mut(&id) else {
            return;
        };
        f.gone = Some(error.clone());
        for r in f.queue.drain_waiting() {
            self.early.push_back((r, Err(error.clone())));
        }
        self.mark(id);
    }

    /// Forgets an idle file (closing its handle).
    pub(crate) fn forget(&mut self, id: FileId) {
        if let Some(f) = self.files.remove(&id)
            && let Some(h) = f.handle
        {
            self.close_handle(h);
        }
        self.pump_opens();
    }

    // ---- file requests ----

    fn submit(&mut self, file: FileId, op: FileOp, purpose: Purpose) -> StoreId {
        let id = self.new_id();
        self.enqueue(id, file, op, purpose);
        self.mark(file);
        id
    }

    fn enqueue(&mut self, id: StoreId, file: FileId, op: FileOp, purpose: Purpose) {
        self.purposes.insert(id, purpose);
        match self.files.get_mut(&file) {
            Some(f) if f.gone.is_none() => {
                f.queue.push(id, op);
                self.queued_in.insert(id, file);
            }
            Some(f) => {
                let e = f.gone.clone().expect("checked");
                self.early.push_back((id, Err(e)));
            }
            None => self
                .early
                .push_back((id, Err(StoreError::Io("the file is no longer open".into())))),
        }
    }

    /// Notes that the file's queue may let requests out: done in one go by
    /// [`Disk::start_marked`], so that a write-back of many patches queues
    /// them all before the queue is looked at once.
    fn mark(&mut self, file: FileId) {
        self.marked.insert(file);
    }

    /// Lets out what may run of every marked file's queue. Says whether
    /// anything was finished early (see [`Disk::poll_early`]).
    pub(crate) fn start_marked(&mut self) -> bool {
        for f in std::mem::take(&mut self.marked) {
            self.start_now(f);
        }
        !self.early.is_empty()
    }

    /// Lets out what may run of the file's queue, reopening it first if its
    /// handle was closed.
    fn start_now(&mut self, file: FileId) {
        self.tick += 1;
        let tick = self.tick;
        let Some(f) = self.files.get_mut(&file) else {
            return;
        };
        if !f.queue.has_waiting() {
            return;
        }
        let Some(handle) = f.handle else {
            if !f.reopening {
                f.reopening = true;
                let op = StoreOp::Open {
                    path: f.path.clone(),
                    scope: None,
                    options: OpenOptions {
                        create: false,
                        write: f.writable,
                    },
                };
                let id = self.new_id();
                self.purposes.insert(id, Purpose::Reopen(file));
                self.opens.push_back((id, op));
                self.pump_opens();
            }
            return;
        };
        f.last_use = tick;
        let unsynced = &f.unsynced;
        let (started, skipped) = f.queue.start(handle, |id| !unsynced.is_writing(id));
        // An fsync covers every piece written before it starts, including
        // those of writes queued ahead of it after it was asked for (a
        // sync's rewrite of what failed): no write runs beside an fsync, so
        // all of them are done now. Had the mark been taken when the fsync
        // was asked for, a failure of it would leave the rewritten pieces
        // counted as written while the kernel dropped them.
        let mark = f.unsynced.sync_mark();
        for (id, op) in started {
            if let StoreOp::Sync { .. } = op
                && let Some(Purpose::Sync { mark: m, .. }) = self.purposes.get_mut(&id)
            {
                *m = mark;
            }
            self.out.push_back(StoreRequest { id, op });
        }
        for id in skipped {
            self.early.push_back((id, Ok(StoreDone::Done)));
        }
    }

    /// Reads `len` bytes at `offset` for an operation.
    pub(crate) fn read(&mut self, file: FileId, offset: u64, len: usize, op: OpId) -> StoreId {
        self.submit(file, FileOp::Read { offset, len }, Purpose::ReadFor(op))
    }

    /// Changes the file's length for an operation.
    pub(crate) fn set_len(&mut self, file: FileId, len: u64, op: OpId) -> StoreId {
        self.submit(file, FileOp::SetLen { len }, Purpose::SetLenFor(op))
    }

    /// Writes `runs` (which do not overlap) on behalf of `writer`, as one
    /// request: from now on they are the file's bytes there, whatever the
    /// disk says.
    pub(crate) fn write(
        &mut self,
        file: FileId,
        runs: Vec<WriteRun>,
        writer: SessionId,
        op: Option<OpId>,
    ) -> StoreId {
        let id = self.new_id();
        if let Some(f) = self.files.get_mut(&file) {
            for run in &runs {
                let mut at = run.offset;
                for p in &run.parts {
                    f.unsynced.insert(at, p.clone(), writer, id);
                    at += p.len() as u64;
                }
            }
        }
        self.enqueue(
            id,
            file,
            FileOp::Write { runs },
            Purpose::Write { file, op },
        );
        self.mark(file);
        id
    }

    /// Writes again every piece of the file whose write or fsync failed.
    pub(crate) fn retry(&mut self, file: FileId) {
        let id = self.new_id();
        let Some(f) = self.files.get_mut(&file) else {
            return;
        };
        if f.gone.is_some() {
            return;
        }
        let runs = f.unsynced.retry(id);
        if !runs.is_empty() {
            self.enqueue(
                id,
                file,
                FileOp::Write { runs },
                Purpose::Write { file, op: None },
            );
            self.mark(file);
        }
    }

    /// Files with bytes whose write or fsync failed.
    pub(crate) fn failing_files(&self) -> Vec<FileId> {
        self.files
            .iter()
            .filter(|(_, f)| f.unsynced.failed_bytes() > 0)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Files with unsynced bytes that can still be synced (not those that
    /// can no longer be reached: a sync of one fails at once, and a
    /// shutdown asking again would never finish).
    pub(crate) fn unsynced_files(&self) -> Vec<FileId> {
        self.files
            .iter()
            .filter(|(_, f)| !f.unsynced.is_empty() && f.gone.is_none())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Writes again what failed, then fsyncs; `op` waits for the fsync.
    pub(crate) fn sync(&mut self, file: FileId, op: Option<OpId>) -> StoreId {
        self.retry(file);
        // The mark is set when the fsync starts.
        self.submit(file, FileOp::Sync, Purpose::Sync { file, mark: 0, op })
    }

    /// Bytes whose write or fsync failed, over every file.
    pub(crate) fn failed_bytes(&self) -> u64 {
        self.files.values().map(|f| f.unsynced.failed_bytes()).sum()
    }

    /// Bytes not yet known durable, over every file.
    pub(crate) fn unsynced_bytes(&self) -> u64 {
        self.files.values().map(|f| f.unsynced.bytes()).sum()
    }

    /// The file's bytes at `offset` as the server must serve them: what the
    /// disk returned with every unsynced piece laid over it.
    pub(crate) fn overlay(&self, file: FileId, offset: u64, data: Bytes) -> Bytes {
        match self.files.get(&file) {
            Some(f) => f.unsynced.overlay(offset, data),
            None => data,
        }
    }

    /// The file was cut to `len`.
    pub(crate) fn truncated(&mut self, file: FileId, len: u64) {
        if let Some(f) = self.files.get_mut(&file) {
            f.unsynced.truncate(len);
        }
    }

    /// Why `writer`'s bytes in `file` are not durable, if they are not
    /// (`live` says which sessions still exist: failed bytes of ended ones
    /// are reported to whoever syncs the file).
    pub(crate) fn failure_of(
        &self,
        file: FileId,
        writer: SessionId,
        live: &dyn Fn(SessionId) -> bool,
    ) -> Option<StoreError> {
        let f = self.files.get(&file)?;
        f.unsynced
            .failure_of(writer, live)
            .cloned()
            .or_else(|| match &f.gone {
                Some(e) if f.unsynced.holds_from(writer, live) => Some(e.clone()),
                _ => None,
            })
    }

    /// Whether some of `writer`'s writes in `file` are on their way to the
    /// disk: in pieces whose write has not finished, or has finished after
    /// the last fsync began.
    pub(crate) fn pending_for(
        &self,
        file: FileId,
        writer: SessionId,
        live: &dyn Fn(SessionId) -> bool,
    ) -> bool {
        self.files
            .get(&file)
            .is_some_and(|f| f.gone.is_none() && f.unsynced.holds_from(writer, live))
    }

    /// The first failure among the file's pieces, for messages.
    pub(crate) fn any_failure(&self, file: FileId) -> Option<StoreError> {
        self.files
            .get(&file)
            .and_then(|f| f.unsynced.any_failure().cloned().or(f.gone.clone()))
    }

    // ---- results ----

    /// A request finished: updates what the disk knows, lets more requests
    /// out, and says what the request was for.
    pub(crate) fn complete(
        &mut self,
        id: StoreId,
        result: Result<StoreDone, StoreError>,
    ) -> Option<Completion> {
        let purpose = self.purposes.remove(&id)?;
        let queued_in = self.queued_in.remove(&id);
        if let Some(file) = queued_in
            && let Some(f) = self.files.get_mut(&file)
        {
            f.queue.finish(id);
        }
        let outcome = result.as_ref().map(|_| ()).map_err(Clone::clone);
        match purpose {
            Purpose::OpenFor(_) => {
                if result.is_err() {
                    self.handles -= 1;
                }
            }
            Purpose::Reopen(f) => self.reopened(f, &result),
            Purpose::Close | Purpose::SaveRunState => {}
            Purpose::ReadFor(_) | Purpose::SetLenFor(_) => {}
            Purpose::Write { file, .. } => {
                if let Some(f) = self.files.get_mut(&file) {
                    f.unsynced.write_done(id, &outcome);
                    if f.unsynced.written_bytes() >= SYNC_BEHIND && !f.queue.syncing() {
                        self.sync(file, None);
                    }
                }
            }
            Purpose::Sync { file, mark, .. } => {
                if let Some(f) = self.files.get_mut(&file) {
                    f.unsynced.sync_done(mark, &outcome);
                }
            }
        }
        if let Some(f) = queued_in {
            self.mark(f);
        }
        self.pump_opens();
        Some(Completion { purpose, result })
    }

    fn reopened(&mut self, file: FileId, result: &Result<StoreDone, StoreError>) {
        let Some(f) = self.files.get_mut(&file) else {
            // Forgotten meanwhile: close what was opened.
            if let Ok(StoreDone::Opened(o)) = result {
                self.close_handle(o.file);
            } else {
                self.handles -= 1;
            }
            return;
        };
        f.reopening = false;
        let error = match result {
            Ok(StoreDone::Opened(o)) if o.key == f.key => {
                f.handle = Some(o.file);
                None
            }
            Ok(StoreDone::Opened(o)) => {
                let handle = o.file;
                let e = StoreError::Io(format!(
                    "{} was replaced or moved on the server since it was opened",
                    f.path
                ));
                self.close_handle(handle);
                Some(e)
            }
            Ok(_) => Some(StoreError::Io("the store answered an open oddly".into())),
            Err(e) => {
                self.handles -= 1;
                Some(e.clone())
            }
        };
        if let Some(e) = error {
            let f = self.files.get_mut(&file).expect("checked");
            f.gone = Some(e.clone());
            for id in f.queue.drain_waiting() {
                self.early.push_back((id, Err(e.clone())));
            }
        }
        self.mark(file);
    }
}
