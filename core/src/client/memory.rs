//! Memory mappings: a mapping whose pages live in the application's address
//! space and are read and written with ordinary loads and stores.
//!
//! The adapter owns the memory (for example an anonymous region registered
//! with userfaultfd) and implements [`MemoryBacking`]; the client state
//! machine calls it synchronously, in protocol order, so that a page is
//! never installed after the invalidation that should have removed it:
//!
//! * a fault becomes [`Client::memory_fault`]; when the page is available in
//!   the needed state the client installs it ([`MemoryBacking::install`]),
//!   write-protected unless the fault was a write, and the operation
//!   completes ([`Completion::FaultResolved`](super::Completion));
//! * a write to a write-protected page held exclusively just marks it dirty
//!   and unprotects it; to a shared page it first acquires ownership;
//! * an invalidation zaps the page; a recall write-protects it, reads its
//!   current bytes, sends the changes back, and zaps it (or keeps it
//!   read-only when downgraded); a write-back (`sync`, eviction) does the
//!   same without giving the page up;
//! * when the client's lease view ends, every page is taken out of memory
//!   (its changes kept in the cache) so no access is served while another
//!   client may be writing; faults wait for a renewal.
//!
//! A memory mapping must start on a page boundary and may not overlap any
//! other mapping of the same file by the same client.

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::Instant;
use crate::protocol::PageNo;

use super::cache::{FileId, PageData, PageState};
use super::{Client, MappingId, OpError};

/// The memory behind a memory mapping. Page `index` is counted from the
/// start of the mapping.
pub trait MemoryBacking: Send {
    /// Puts `data` (one page) in page `index`, writable or write-protected,
    /// and lets threads waiting on it continue.
    fn install(&mut self, index: u64, data: &[u8], writable: bool);
    /// Write-protects page `index` (the next write faults) without changing it.
    fn protect(&mut self, index: u64);
    /// Makes page `index` writable and lets a thread blocked writing it continue.
    fn unprotect(&mut self, index: u64);
    /// Removes page `index` (the next access faults).
    fn zap(&mut self, index: u64);
    /// Copies the current contents of page `index` into `out` (one page).
    fn read(&mut self, index: u64, out: &mut [u8]);
    /// The mapping failed for good (a write-back of it was refused): make
    /// every later access fail, and fail accesses blocked now.
    fn fail(&mut self, error: &OpError);
}

/// A boxed backing, with a `Debug` impl for the mapping's state.
pub(crate) struct Memory(pub(crate) Box<dyn MemoryBacking>);

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemoryBacking")
    }
}

impl Client {
    /// The memory mapping covering `page` of `file`, and the page's index in it.
    pub(crate) fn memory_of(&self, file: FileId, page: PageNo) -> Option<(MappingId, u64)> {
        let ps = self.conn.page_size()?;
        self.mappings.memory_covering(file, page, ps)
    }

    fn backing(&mut self, mapping: MappingId) -> Option<&mut (dyn MemoryBacking + 'static)> {
        self.mappings
            .get_mut(mapping)?
            .memory
            .as_mut()
            .map(|m| m.0.as_mut())
    }

    /// Installs a cached page in its memory mapping.
    pub(crate) fn install_page(&mut self, file: FileId, page: PageNo, writable: bool) {
        let Some((mapping, index)) = self.memory_of(file, page) else {
            return;
        };
        let data = match &self.cache.get(file, page).expect("cached").data {
            PageData::Shared(b) => b.clone(),
            PageData::Owned(b) => Bytes::copy_from_slice(b),
            PageData::None => return,
        };
        self.cache.set_installed(file, page, Some(writable));
        if let Some(b) = self.backing(mapping) {
            b.install(index, &data, writable);
        }
    }

    /// Write-protects an installed, writable page and copies its bytes into
    /// the cache, marking what changed as dirty. Returns whether it was
    /// installed.
    pub(crate) fn capture_page(&mut self, file: FileId, page: PageNo) -> bool {
        if !self.cache.some_installed() {
            return false;
        }
        let Some(installed) = self.cache.get(file, page).and_then(|p| p.installed) else {
            return false;
        };
        if !installed {
            return true;
        }
        let Some((mapping, index)) = self.memory_of(file, page) else {
            return false;
        };
        let ps = self.conn.params().expect("mapped").page_size as usize;
        let mut now = BytesMut::zeroed(ps);
        if let Some(b) = self.backing(mapping) {
            b.protect(index);
            b.read(index, &mut now);
        }
        let mut pg = self.cache.get_mut(file, page).expect("cached");
        pg.installed = Some(false);
        let old = pg.data.as_slice().unwrap_or(&[]);
        let first = (0..ps).find(|&i| old.get(i) != Some(&now[i]));
        if let Some(lo) = first {
            let hi = (0..ps)
                .rev()
                .find(|&i| old.get(i) != Some(&now[i]))
                .expect("some byte differs")
                + 1;
            pg.data = PageData::Owned(now);
            pg.mark_dirty(lo as u32, hi as u32);
        }
        true
    }

    /// Takes a page out of memory (capturing its changes first).
    pub(crate) fn withdraw_page(&mut self, file: FileId, page: PageNo) {
        if !self.capture_page(file, page) {
            return;
        }
        let Some((mapping, index)) = self.memory_of(file, page) else {
            return;
        };
        self.cache.set_installed(file, page, None);
        if let Some(b) = self.backing(mapping) {
            b.zap(index);
        }
    }

    /// Removes a page from memory if it is installed but no longer usable
    /// (its copy was invalidated or dropped).
    pub(crate) fn zap_if_gone(&mut self, file: FileId, page: PageNo) {
        let gone = self
            .cache
            .get(file, page)
            .is_some_and(|p| p.installed.is_some() && !p.readable());
        if gone {
            self.zap_page(file, page);
        }
    }

    /// Removes a page from memory without looking at its contents.
    pub(crate) fn zap_page(&mut self, file: FileId, page: PageNo) {
        if self
            .cache
            .set_installed(file, page, None)
            .flatten()
            .is_none()
        {
            return;
        }
        if let Some((mapping, index)) = self.memory_of(file, page)
            && let Some(b) = self.backing(mapping)
        {
            b.zap(index);
        }
    }

    /// Takes the installed pages of `[from, to)` matching `which` out of
    /// memory.
    pub(crate) fn withdraw_range(
        &mut self,
        file: FileId,
        from: PageNo,
        to: PageNo,
        which: impl Fn(&super::cache::Page) -> bool,
    ) {
        if !self.cache.some_installed() {
            return;
        }
        let pages: Vec<PageNo> = self
            .cache
            .range(file, from..to)
            .filter(|(_, p)| p.installed.is_some() && which(p))
            .map(|(q, _)| q)
            .collect();
        for q in pages {
            self.withdraw_page(file, q);
        }
    }

    /// Takes every page of every memory mapping out of memory: the lease
    /// view ended, or the session is gone.
    pub(crate) fn withdraw_all_memory(&mut self) {
        let installed: Vec<(FileId, PageNo)> = self
            .cache
            .all()
            .filter(|(_, _, p)| p.installed.is_some())
            .map(|(f, q, _)| (f, q))
            .collect();
        for (f, q) in installed {
            self.withdraw_page(f, q);
        }
        self.cache.set_some_installed(false);
    }

    /// Called on every timeout: a lease view that ended takes the pages out
    /// of memory.
    pub(crate) fn check_memory_lease(&mut self, now: Instant) {
        if self.cache.some_installed() && !self.lease_valid(now) {
            self.withdraw_all_memory();
        }
    }

    /// Another mapping of the same file whose bytes overlap `mapping`'s,
    /// where either is a memory mapping: the two would hold one page in two
    /// places. Known once the server has answered the `Map` (files are told
    /// apart by the server's handle, not by path, so `a/../f` and `f` are
    /// one file). The adapter refuses such a mapping.
    pub fn memory_overlap(&self, mapping: MappingId) -> Option<MappingId> {
        let m = self.mappings.get(mapping)?;
        let file = m.file?;
        self.mappings.iter().find_map(|(id, o)| {
            let overlaps = o.file == Some(file) && o.offset < m.end() && m.offset < o.end();
            (id != mapping && overlaps && (m.memory.is_some() || o.memory.is_some())).then_some(id)
        })
    }

    /// Marks memory mapping `mapping` as one the adapter moves with its
    /// file to another cluster member ([`Client::hand_over`]): its faults
    /// then give up on a lost connection after `member_patience`, as other
    /// operations do, instead of `give_up_after`.
    pub fn follow_file(&mut self, mapping: MappingId) -> Result<(), OpError> {
        let m = self
            .mappings
            .get_mut(mapping)
            .ok_or(OpError::UnknownMapping)?;
        m.follows_file = true;
        Ok(())
    }

    /// Tells the backing of `mapping` that it failed for good.
    pub(crate) fn fail_memory(&mut self, mapping: MappingId, error: &OpError) {
        if let Some(b) = self.backing(mapping) {
            b.fail(error);
        }
    }

    /// Resolves a fault on page `index` of a memory mapping, if it can be
    /// right now. `Ok(None)`: wait (the op is registered).
    pub(crate) fn try_resolve_fault(
        &mut self,
        mapping: MappingId,
        file: FileId,
        page: PageNo,
        write: bool,
    ) -> Option<()> {
        let (owned, readable, installed) = {
            let pg = self.cache.page(file, page);
            (
                pg.state == PageState::Exclusive && pg.data.is_some(),
                pg.readable(),
                pg.installed,
            )
        };
        if write {
            if !owned {
                return None;
            }
            // The write is about to happen. An installed, writable page counts
            // as possibly dirty; what changed is found when it is captured.
            match installed {
                Some(_) => {
                    let (_, index) = self
                        .memory_of(file, page)
                        .expect("a memory mapping covers it");
                    self.cache.set_installed(file, page, Some(true));
                    if let Some(b) = self.backing(mapping) {
                        b.unprotect(index);
                    }
                }
                None => self.install_page(file, page, true),
            }
            self.cache.set_some_installed(true);
            if let Some(m) = self.mappings.get_mut(mapping) {
                m.wrote(page..page + 1);
            }
            Some(())
        } else {
            if !readable {
                return None;
            }
            if installed.is_none() {
                self.install_page(file, page, false);
                self.cache.set_some_installed(true);
            }
            Some(())
        }
    }
}
