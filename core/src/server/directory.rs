//! The coherence directory: per file, per page, who holds what.
//!
//! A page is held by at most one exclusive owner, or by any number of
//! sharers, never both. An operation that needs a page in a new state takes
//! the page's lock (pages are locked in ascending order, so operations never
//! deadlock), revokes what conflicts, and only then changes the state.
//! Entries exist only while a page is held, locked, waited for, or carries a
//! version newer than its file's base version; an entry without any of these
//! is dropped and folded into the base version, so the directory grows with
//! what clients hold, not with file size.

use std::collections::{BTreeMap, VecDeque};

use smallvec::SmallVec;

use crate::path::ExportPath;
use crate::protocol::{PageNo, SessionId, Version};
use crate::store::FileKey;

use super::ids::{FileId, OpId};

/// One page's coherence state.
#[derive(Debug)]
pub(crate) struct PageEntry {
    pub(crate) version: Version,
    pub(crate) owner: Option<SessionId>,
    /// Sorted, without duplicates. Inline up to two: a page in the
    /// directory costs no allocation for its holders (a streaming read puts
    /// thousands of pages a second through it).
    pub(crate) sharers: SmallVec<[SessionId; 2]>,
    pub(crate) lock: Option<OpId>,
    pub(crate) queue: VecDeque<OpId>,
}

impl PageEntry {
    pub(crate) fn new(version: Version) -> Self {
        PageEntry {
            version,
            owner: None,
            sharers: SmallVec::new(),
            lock: None,
            queue: VecDeque::new(),
        }
    }

    pub(crate) fn holds(&self, s: SessionId) -> bool {
        self.owner == Some(s) || self.sharers.binary_search(&s).is_ok()
    }

    pub(crate) fn add_sharer(&mut self, s: SessionId) {
        if let Err(i) = self.sharers.binary_search(&s) {
            self.sharers.insert(i, s);
        }
    }

    pub(crate) fn remove_sharer(&mut self, s: SessionId) -> bool {
        match self.sharers.binary_search(&s) {
            Ok(i) => {
                self.sharers.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Removes `s` as owner or sharer; says whether it held the page.
    pub(crate) fn drop_holder(&mut self, s: SessionId) -> bool {
        if self.owner == Some(s) {
            self.owner = None;
            true
        } else {
            self.remove_sharer(s)
        }
    }

    fn is_idle(&self) -> bool {
        self.owner.is_none()
            && self.sharers.is_empty()
            && self.lock.is_none()
            && self.queue.is_empty()
    }
}

/// One open file.
#[derive(Debug)]
pub(crate) struct FileEntry {
    pub(crate) key: FileKey,
    /// The full path beneath the root.
    pub(crate) path: ExportPath,
    pub(crate) len: u64,
    pub(crate) writable: bool,
    /// The version of every page without an entry.
    pub(crate) base_version: Version,
    pub(crate) pages: BTreeMap<PageNo, PageEntry>,
    /// End offsets of live mappings of any session (a multiset), to refuse
    /// shrinking a file under a mapping.
    pub(crate) mapping_ends: BTreeMap<u64, u32>,
    /// Operations not yet finished on this file.
    pub(crate) ops: u32,
}

impl FileEntry {
    pub(crate) fn version_of(&self, page: PageNo) -> Version {
        self.pages
            .get(&page)
            .map_or(self.base_version, |e| e.version)
    }

    pub(crate) fn entry(&mut self, page: PageNo) -> &mut PageEntry {
        let base = self.base_version;
        self.pages
            .entry(page)
            .or_insert_with(|| PageEntry::new(base))
    }

    /// Drops the entry of `page` if nothing refers to it any more.
    pub(crate) fn gc_page(&mut self, page: PageNo) {
        if let Some(e) = self.pages.get(&page)
            && e.is_idle()
        {
            self.base_version = self.base_version.max(e.version);
            self.pages.remove(&page);
        }
    }

    pub(crate) fn add_mapping_end(&mut self, end: u64) {
        *self.mapping_ends.entry(end).or_default() += 1;
    }

    pub(crate) fn remove_mapping_end(&mut self, end: u64) {
        if let Some(n) = self.mapping_ends.get_mut(&end) {
            *n -= 1;
            if *n == 0 {
                self.mapping_ends.remove(&end);
            }
        }
    }

    /// The furthest byte any live mapping reaches.
    pub(crate) fn furthest_mapping_end(&self) -> u64 {
        self.mapping_ends.keys().next_back().copied().unwrap_or(0)
    }

    pub(crate) fn is_unused(&self) -> bool {
        self.mapping_ends.is_empty() && self.pages.is_empty() && self.ops == 0
    }
}

/// Every open file.
#[derive(Debug, Default)]
pub(crate) struct FileTable {
    pub(crate) files: BTreeMap<FileId, FileEntry>,
    pub(crate) by_key: BTreeMap<FileKey, FileId>,
    next: u32,
}

impl FileTable {
    pub(crate) fn get(&self, id: FileId) -> &FileEntry {
        &self.files[&id]
    }

    pub(crate) fn get_mut(&mut self, id: FileId) -> &mut FileEntry {
        self.files
            .get_mut(&id)
            .expect("file ids held by sessions and ops stay open")
    }

    pub(crate) fn find(&self, key: FileKey) -> Option<FileId> {
        self.by_key.get(&key).copied()
    }

    pub(crate) fn insert(&mut self, entry: FileEntry) -> FileId {
        self.next = self.next.wrapping_add(1);
        while self.files.contains_key(&FileId(self.next)) || self.next == 0 {
            self.next = self.next.wrapping_add(1);
        }
        let id = FileId(self.next);
        self.by_key.insert(entry.key, id);
        self.files.insert(id, entry);
        id
    }

    /// Removes the file.
    pub(crate) fn remove(&mut self, id: FileId) {
        if let Some(f) = self.files.remove(&id) {
            self.detach_key(f.key, id);
        }
    }

    /// The file stays until it is unused, but is no longer found by its
    /// key: the next open of it gets a fresh entry (a cluster member that
    /// lost the file's shard must not serve it from what it knew before).
    pub(crate) fn detach(&mut self, id: FileId) {
        if let Some(key) = self.files.get(&id).map(|f| f.key) {
            self.detach_key(key, id);
        }
    }

    fn detach_key(&mut self, key: FileKey, id: FileId) {
        if self.by_key.get(&key) == Some(&id) {
            self.by_key.remove(&key);
        }
    }
}
