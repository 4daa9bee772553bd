//! The client's page cache: pages of files, with their coherence state,
//! and how many of them hold data (what the cache's size limit counts).
//!
//! Every change to a page goes through [`PageCache`] (a [`PageMut`] guard,
//! or a visitor), which keeps that count right whatever the change did.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, DerefMut, Range};

use bytes::{Bytes, BytesMut};

use crate::protocol::{PageNo, ReqId, Version};

use super::OpId;
pub(crate) use super::files::FileId;

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
    /// A stale copy from an earlier server run: its version means nothing
    /// to the server now, so it is checked by its bytes (`Refresh`).
    pub(crate) carried: bool,
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
            carried: false,
            waiters: BTreeSet::new(),
            touched: 0,
            installed: None,
        }
    }

    /// Whether reads may be served from this page (lease permitting).
    pub(crate) fn readable(&self) -> bool {
        self.state != PageState::Invalid && self.data.is_some()
    }

    /// Makes the page's bytes shareable (no copy), keeping them.
    pub(crate) fn freeze_data(&mut self) {
        if self.data.is_some() {
            self.data.freeze();
        }
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
        self.carried = false;
    }
}

/// The cached pages of every file the client has open.
#[derive(Debug, Default)]
pub(crate) struct PageCache {
    files: BTreeMap<FileId, BTreeMap<PageNo, Page>>,
    /// Pages holding data.
    cached: usize,
    /// A clock for least-recently-used eviction.
    tick: u64,
    /// Some page may sit in a memory mapping's memory.
    installed: bool,
}

/// A page being changed: when it goes, the cache's count of pages holding
/// data follows what the change did.
pub(crate) struct PageMut<'a> {
    page: &'a mut Page,
    cached: &'a mut usize,
    had: bool,
}

impl Deref for PageMut<'_> {
    type Target = Page;
    fn deref(&self) -> &Page {
        self.page
    }
}

impl DerefMut for PageMut<'_> {
    fn deref_mut(&mut self) -> &mut Page {
        self.page
    }
}

impl Drop for PageMut<'_> {
    fn drop(&mut self) {
        recount(self.cached, self.had, self.page);
    }
}

/// Follows one page's change in the count of pages holding data.
fn recount(cached: &mut usize, had: bool, page: &Page) {
    match (had, page.data.is_some()) {
        (false, true) => *cached += 1,
        (true, false) => *cached -= 1,
        _ => {}
    }
}

impl PageCache {
    /// Pages holding data.
    pub(crate) fn len(&self) -> usize {
        self.cached
    }

    /// Starts caching pages of `file`.
    pub(crate) fn add_file(&mut self, file: FileId) {
        self.files.entry(file).or_default();
    }

    /// The files with cached pages (or room for them).
    pub(crate) fn file_ids(&self) -> Vec<FileId> {
        self.files.keys().copied().collect()
    }

    pub(crate) fn get(&self, file: FileId, page: PageNo) -> Option<&Page> {
        self.files.get(&file)?.get(&page)
    }

    /// The cached pages of `file` in `range`, in order.
    pub(crate) fn range(
        &self,
        file: FileId,
        range: Range<PageNo>,
    ) -> impl Iterator<Item = (PageNo, &Page)> {
        self.files
            .get(&file)
            .into_iter()
            .flat_map(move |f| f.range(range.clone()))
            .map(|(q, p)| (*q, p))
    }

    /// Every cached page, in (file, page) order.
    pub(crate) fn all(&self) -> impl Iterator<Item = (FileId, PageNo, &Page)> {
        self.files
            .iter()
            .flat_map(|(f, pages)| pages.iter().map(move |(q, p)| (*f, *q, p)))
    }

    /// A cached page, to change.
    pub(crate) fn get_mut(&mut self, file: FileId, page: PageNo) -> Option<PageMut<'_>> {
        let page = self.files.get_mut(&file)?.get_mut(&page)?;
        let had = page.data.is_some();
        Some(PageMut {
            page,
            cached: &mut self.cached,
            had,
        })
    }

    /// A page, to change; an entry (invalid, without data) is made for it
    /// if there is none.
    pub(crate) fn page(&mut self, file: FileId, page: PageNo) -> PageMut<'_> {
        let page = self
            .files
            .entry(file)
            .or_default()
            .entry(page)
            .or_insert_with(Page::new);
        let had = page.data.is_some();
        PageMut {
            page,
            cached: &mut self.cached,
            had,
        }
    }

    /// Changes every cached page of `file` in `range` with `f`.
    pub(crate) fn update_range(
        &mut self,
        file: FileId,
        range: Range<PageNo>,
        mut f: impl FnMut(PageNo, &mut Page),
    ) {
        let Some(pages) = self.files.get_mut(&file) else {
            return;
        };
        for (q, pg) in pages.range_mut(range) {
            let had = pg.data.is_some();
            f(*q, pg);
            recount(&mut self.cached, had, pg);
        }
    }

    /// Changes every cached page with `f`.
    pub(crate) fn update_all(&mut self, mut f: impl FnMut(FileId, PageNo, &mut Page)) {
        for (fid, pages) in self.files.iter_mut() {
            for (q, pg) in pages.iter_mut() {
                let had = pg.data.is_some();
                f(*fid, *q, pg);
                recount(&mut self.cached, had, pg);
            }
        }
    }

    /// Drops a page from the cache.
    pub(crate) fn remove(&mut self, file: FileId, page: PageNo) -> Option<Page> {
        let pg = self.files.get_mut(&file)?.remove(&page)?;
        if pg.data.is_some() {
            self.cached -= 1;
        }
        Some(pg)
    }

    /// Drops the pages of `file` that `gone` picks; returns them.
    pub(crate) fn remove_where(
        &mut self,
        file: FileId,
        mut gone: impl FnMut(PageNo, &Page) -> bool,
    ) -> Vec<Page> {
        let Some(pages) = self.files.get_mut(&file) else {
            return Vec::new();
        };
        let doomed: Vec<PageNo> = pages
            .iter()
            .filter(|(q, p)| gone(**q, p))
            .map(|(q, _)| *q)
            .collect();
        doomed
            .into_iter()
            .filter_map(|q| self.remove(file, q))
            .collect()
    }

    /// Drops `file` and all its pages; returns them.
    pub(crate) fn remove_file(&mut self, file: FileId) -> Vec<Page> {
        let pages: Vec<Page> = self
            .files
            .remove(&file)
            .map(|f| f.into_values().collect())
            .unwrap_or_default();
        self.cached -= pages.iter().filter(|p| p.data.is_some()).count();
        pages
    }

    /// Records whether `page` of `file` sits in memory (`Some(writable)`) or
    /// not (`None`); returns what it was, if the page is cached.
    pub(crate) fn set_installed(
        &mut self,
        file: FileId,
        page: PageNo,
        installed: Option<bool>,
    ) -> Option<Option<bool>> {
        let pg = self.files.get_mut(&file)?.get_mut(&page)?;
        Some(std::mem::replace(&mut pg.installed, installed))
    }

    /// Moves the eviction clock on; returns its new time.
    pub(crate) fn touch(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The eviction clock's time.
    pub(crate) fn time(&self) -> u64 {
        self.tick
    }

    /// Whether some page may sit in a memory mapping's memory.
    pub(crate) fn some_installed(&self) -> bool {
        self.installed
    }

    pub(crate) fn set_some_installed(&mut self, installed: bool) {
        self.installed = installed;
    }
}
