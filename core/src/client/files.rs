//! The files the client has open: its own stable number for each
//! ([`FileId`]) and the handle the current session's server gave it.
//! Handles die with a session; the numbers live on, so a cached page can be
//! revalidated on the next one.

use std::collections::BTreeMap;

use crate::protocol::FileHandle;

/// A file as the client numbers it; stable across sessions (the server's
/// handle is not).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct FileId(pub(crate) u32);

/// The client's open files and their server handles.
#[derive(Debug, Default)]
pub(crate) struct OpenFiles {
    /// Every open file, with its handle on the current session (if opened
    /// on it).
    handles: BTreeMap<FileId, Option<FileHandle>>,
    by_handle: BTreeMap<FileHandle, FileId>,
    next: u32,
}

impl OpenFiles {
    /// Numbers a new file, not yet opened on this session.
    pub(crate) fn add(&mut self) -> FileId {
        self.next += 1;
        let id = FileId(self.next);
        self.handles.insert(id, None);
        id
    }

    /// The file the server calls `handle`.
    pub(crate) fn by_handle(&self, handle: FileHandle) -> Option<FileId> {
        self.by_handle.get(&handle).copied()
    }

    /// `file`'s handle on this session.
    pub(crate) fn handle(&self, file: FileId) -> Option<FileHandle> {
        self.handles.get(&file).copied().flatten()
    }

    /// Whether `file` is open but has no handle on this session yet.
    pub(crate) fn awaits_handle(&self, file: FileId) -> bool {
        matches!(self.handles.get(&file), Some(None))
    }

    /// The server opened `file` as `handle`.
    pub(crate) fn opened(&mut self, file: FileId, handle: FileHandle) {
        self.handles.insert(file, Some(handle));
        self.by_handle.insert(handle, file);
    }

    /// Forgets `file`.
    pub(crate) fn close(&mut self, file: FileId) {
        if let Some(Some(h)) = self.handles.remove(&file) {
            self.by_handle.remove(&h);
        }
    }

    /// The session is gone, and its handles with it.
    pub(crate) fn forget_handles(&mut self) {
        self.by_handle.clear();
        for h in self.handles.values_mut() {
            *h = None;
        }
    }
}
