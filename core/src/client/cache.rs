//! The client's page cache: pages of files, with their coherence state.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};

use crate::protocol::{FileHandle, PageNo, ReqId, Version};

use super::OpId;

/// A file as the client numbers it; stable across sessions (the server's
/// handle is not).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct FileId(pub(crate) u32);

/// The coherence state of a cached page.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum PageState {
    /// Not usable (data, if any, is only kept to be revalidated).
    Invalid,
    /// A read-only copy; others may hold copies too.
    Shared,
    /// The only copy; may be written (dirty when `Page::dirty` is set).
    Exclusive,
}

#[derive(Debug)]
pub(crate) enum PageData {
    None,
    Shared(Bytes),
    Owned(BytesMut),
}

impl PageData {
    pub(crate) fn as_slice(&self) -> Option<&[u8]> {
        match self {
            PageData::None => None,
            PageData::Shared(b) => Some(b),
            PageData::Owned(b) => Some(b),
        }
    }

    pub(crate) fn is_some(&self) -> bool {
        !matches!(self, PageData::None)
    }

    /// The bytes as `Bytes` without copying: an owned buffer is frozen (the
    /// page keeps the frozen bytes; a later write copies them once).
    pub(crate) fn freeze(&mut self) -> Bytes {
        match std::mem::replace(self, PageData::None) {
            PageData::Owned(b) => {
                let b = b.freeze();
                *self = PageData::Shared(b.clone());
                b
            }
            PageData::Shared(b) => {
                *self = PageData::Shared(b.clone());
                b
            }
            PageData::None => Bytes::new(),
        }
    }

    /// A mutable buffer, copying shared bytes once.
    pub(crate) fn make_mut(&mut self, page_size: usize) -> &mut BytesMut {
        if !matches!(self, PageData::Owned(_)) {
            let b = match std::mem::replace(self, PageData::None) {
                // No copy when nobody else holds the bytes (a write-back
                // that carried them has been acknowledged and dropped).
                PageData::Shared(b) => b.try_into_mut().unwrap_or_else(|b| BytesMut::from(&b[..])),
                _ => BytesMut::zeroed(page_size),
            };
            *self = PageData::Owned(b);
        }
        match self {
            PageData::Owned(b) => b,
            _ => unreachable!("made owned above"),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) state: PageState,
    pub(crate) version: Version,
    pub(crate) data: PageData,
    /// Bytes `[lo, hi)` changed since the last write-back.
    pub(crate) dirty: Option<(u32, u32)>,
    /// A fetch or revalidation in flight for this page.
    pub(crate) fetch: Option<ReqId>,
    /// Write-backs in flight that carry data of this page.
    pub(crate) writebacks: u32,
    /// Kept after a lost session, to be revalidated by version.
    pub(crate) stale: bool,
    pub(crate) waiters: BTreeSet<OpId>,
    pub(crate) touched: u64,
    /// In a memory mapping's memory: `Some(true)` writable (possibly
    /// changed there), `Some(false)` write-protected.
    pub(crate) installed: Option<bool>,
}

impl Page {
    pub(crate) fn new() -> Self {
        Page {
            state: PageState::Invalid,
            version: 0,
            data: PageData::None,
            dirty: None,
            fetch: None,
            writebacks: 0,
            stale: false,
            waiters: BTreeSet::new(),
            touched: 0,
            installed: None,
        }
    }

    /// Whether reads may be served from this page (lease permitting).
    pub(crate) fn readable(&self) -> bool {
        self.state != PageState::Invalid && self.data.is_some()
    }

    pub(crate) fn mark_dirty(&mut self, lo: u32, hi: u32) {
        self.dirty = Some(match self.dirty {
            None => (lo, hi),
            Some((a, b)) => (a.min(lo), b.max(hi)),
        });
    }

    /// Whether the entry can be dropped without losing anything.
    pub(crate) fn evictable(&self) -> bool {
        self.dirty.is_none()
            && self.installed != Some(true)
            && self.fetch.is_none()
            && self.writebacks == 0
            && self.waiters.is_empty()
    }

    /// Dirty, or writable in a memory mapping (possibly changed there).
    pub(crate) fn maybe_dirty(&self) -> bool {
        self.dirty.is_some() || self.installed == Some(true)
    }

    pub(crate) fn invalidate(&mut self) {
        self.state = PageState::Invalid;
        self.data = PageData::None;
        self.dirty = None;
        self.stale = false;
    }
}

#[derive(Debug)]
pub(crate) struct FileState {
    pub(crate) handle: Option<FileHandle>,
    pub(crate) pages: BTreeMap<PageNo, Page>,
}

impl FileState {
    pub(crate) fn page(&mut self, p: PageNo) -> &mut Page {
        self.pages.entry(p).or_insert_with(Page::new)
    }
}
