//! Write-back of dirty pages, split along read-write mappings, and the
//! cache's size limit (eviction).

use std::collections::BTreeSet;

use crate::Instant;
use crate::protocol::{Message, PageNo, PagePatch, Release, ReqId, WireMappingId, WriteBack};

use super::cache::{FileId, PageState};
use super::requests::ReqKind;
use super::{Client, MappingId, OpId};

/// Patches on their way to one mapping's write-back.
struct Batch {
    wire: WireMappingId,
    patches: Vec<PagePatch>,
    bytes: usize,
    /// The lowest index in the page list among these patches.
    first: usize,
}

impl Client {
    /// Sends write-backs for the pages of `pages[*cursor..]` that are still
    /// dirty, and moves `cursor` past every page handled, so that repeated
    /// calls (one per acknowledgement, while an operation waits) do work in
    /// proportion to what is left, not to the whole list. Returns false if the
    /// request window filled up first (the op waits for room).
    pub(crate) fn flush_pages(
        &mut self,
        id: Option<OpId>,
        file: FileId,
        pages: &[PageNo],
        cursor: &mut usize,
        writebacks: &mut BTreeSet<ReqId>,
    ) -> bool {
        let ps = self.conn.params().expect("mapped").page_size;
        let budget =
            (self.conn.params().expect("mapped").max_frame as usize / 2).max(ps as usize + 64);
        // Batches per mapping (patches must lie inside the mapping they
        // name), each with the lowest index of `pages` it holds.
        let mut batches: std::collections::BTreeMap<MappingId, Batch> = Default::default();
        let mut complete = true;
        let mut i = *cursor;
        while i < pages.len() {
            // Send full batches first; without room, stop before this page.
            let full: Vec<MappingId> = batches
                .iter()
                .filter(|(_, b)| b.bytes >= budget || b.patches.len() >= 4096)
                .map(|(m, _)| *m)
                .collect();
            for m in full {
                if !self.request_room() {
                    complete = false;
                    break;
                }
                let b = batches.remove(&m).expect("listed");
                writebacks.insert(self.send_write_back(id, file, m, b.wire, b.patches));
            }
            if !complete {
                break;
            }
            let p = pages[i];
            self.capture_page(file, p);
            let Some((lo, hi)) = self.cache.get(file, p).and_then(|pg| pg.dirty) else {
                i += 1;
                continue;
            };
            let pieces = self.split_dirty(file, p, lo, hi);
            let mut pg = self.cache.get_mut(file, p).expect("present");
            // The page's buffer becomes shared with the write-back, not
            // copied; a later write to the page copies it once (copy on write).
            let data = pg.data.freeze();
            for (m, wire, off, len) in &pieces {
                let patch = PagePatch {
                    page: p,
                    offset: *off,
                    data: data.slice(*off as usize..(*off + *len) as usize),
                };
                let e = batches.entry(*m).or_insert_with(|| Batch {
                    wire: *wire,
                    patches: Vec::new(),
                    bytes: 0,
                    first: i,
                });
                e.bytes += patch.data.len() + 16;
                e.patches.push(patch);
            }
            pg.dirty = None;
            i += 1;
        }
        let mut resume = i;
        for (m, b) in std::mem::take(&mut batches) {
            if !self.request_room() {
                // Put the data back as dirty; it goes out when there is room.
                complete = false;
                resume = resume.min(b.first);
                for pt in b.patches {
                    let mut pg = self.cache.page(file, pt.page);
                    pg.mark_dirty(pt.offset, pt.offset + pt.data.len() as u32);
                }
                continue;
            }
            writebacks.insert(self.send_write_back(id, file, m, b.wire, b.patches));
        }
        *cursor = resume;
        if !complete && let Some(id) = id {
            self.ops.wait_window(id);
        }
        complete
    }

    fn send_write_back(
        &mut self,
        op: Option<OpId>,
        file: FileId,
        mapping: MappingId,
        wire: WireMappingId,
        patches: Vec<PagePatch>,
    ) -> ReqId {
        let pages: Vec<PageNo> = patches.iter().map(|p| p.page).collect();
        for p in &pages {
            self.cache.page(file, *p).writebacks += 1;
        }
        self.send_request(
            |req| {
                Message::WriteBack(WriteBack {
                    req,
                    mapping: wire,
                    patches,
                })
            },
            ReqKind::WriteBack {
                file,
                pages,
                op,
                mapping,
            },
        )
    }

    /// Splits the dirty bytes `[lo, hi)` of a page into pieces that each lie
    /// inside one ready read-write mapping: `(mapping, wire, offset, len)`.
    pub(crate) fn split_dirty(
        &self,
        file: FileId,
        page: PageNo,
        lo: u32,
        hi: u32,
    ) -> Vec<(MappingId, WireMappingId, u32, u32)> {
        let ps = self.conn.params().expect("mapped").page_size;
        let base = page * ps;
        let (mut x, end) = (base + lo as u64, base + hi as u64);
        let mut out = Vec::new();
        while x < end {
            match self.mappings.writable_at(file, x) {
                Some((id, wire, e)) => {
                    let to = e.min(end);
                    out.push((id, wire, (x - base) as u32, (to - x) as u32));
                    x = to;
                }
                None => {
                    // Not covered by a writable mapping: cannot have been
                    // written through this client; skip to the next one.
                    match self.mappings.next_writable_start(file, x, end) {
                        Some(n) => x = n,
                        None => break,
                    }
                }
            }
        }
        out
    }

    pub(crate) fn dirty_pages_in(&self, file: FileId, from: PageNo, to: PageNo) -> Vec<PageNo> {
        self.cache
            .range(file, from..to)
            .filter(|(_, p)| p.maybe_dirty())
            .map(|(q, _)| q)
            .collect()
    }

    /// Write-behind for a sequential writer: once it has moved a fetch's
    /// worth of pages past what was last written back, send those pages
    /// back (keeping ownership), so a stream of writes reaches the server
    /// while it is written and `sync` finds little left to do; the pages
    /// written back before are then dropped behind like a reader's.
    pub(crate) fn write_behind(&mut self, mapping: MappingId, file: FileId, upto: PageNo) {
        let Some(p) = self.conn.params() else {
            return;
        };
        let (ps, batch) = (p.page_size, p.max_pages as u64);
        let Some(m) = self.mappings.get(mapping) else {
            return;
        };
        let from = m.written_back_to.max(m.pages(ps).0);
        if upto < from + batch {
            return;
        }
        let pages = self.dirty_pages_in(file, from, upto);
        let mut sink = BTreeSet::new();
        self.flush_pages(None, file, &pages, &mut 0, &mut sink);
        self.mappings
            .get_mut(mapping)
            .expect("present")
            .written_back_to = upto;
        self.drop_behind(mapping, file, from);
    }

    /// Drop-behind for a sequential reader: once the cache is half full,
    /// release the clean pages it has already passed (the kernel does the
    /// same for streaming reads), so a long scan recycles its buffers
    /// instead of pushing everything else out of the cache.
    pub(crate) fn drop_behind(&mut self, mapping: MappingId, file: FileId, upto: PageNo) {
        if self.cache.len() <= self.config.max_cached_pages / 2 {
            return;
        }
        let Some(m) = self.mappings.get(mapping) else {
            return;
        };
        let ps = self.conn.params().expect("mapped").page_size;
        let from = m.dropped_to.max(m.pages(ps).0);
        if from >= upto {
            return;
        }
        // Stop at the first page whose write-back is still in flight (it can
        // go once acknowledged): the next call starts there. Other pages that
        // cannot go (dirty, being fetched, waited on) are skipped.
        let mut gone = Vec::new();
        let mut reached = upto;
        for (q, p) in self.cache.range(file, from..upto) {
            if p.writebacks > 0 {
                reached = q;
                break;
            }
            if p.evictable()
                && p.data.is_some()
                && p.installed.is_none()
                && p.state != PageState::Invalid
            {
                gone.push(q);
            }
        }
        self.mappings.get_mut(mapping).expect("present").dropped_to = reached;
        self.release_pages(file, &gone);
    }

    /// Drops clean pages from the cache and tells the server.
    fn release_pages(&mut self, file: FileId, pages: &[PageNo]) {
        for q in pages {
            self.cache.remove(file, *q);
        }
        self.send_releases(file, pages);
    }

    /// Tells the server that `pages` (ascending) are gone, one `Release`
    /// per run of consecutive pages.
    fn send_releases(&mut self, file: FileId, pages: &[PageNo]) {
        let Some(h) = self.files.handle(file) else {
            return;
        };
        let mut i = 0;
        while i < pages.len() {
            let mut j = i + 1;
            while j < pages.len() && pages[j] == pages[j - 1] + 1 {
                j += 1;
            }
            let msg = Message::Release(Release {
                file: h,
                first_page: pages[i],
                count: (j - i) as u32,
            });
            self.conn.transmit(&msg);
            i = j;
        }
    }

    /// Keeps the cache under its limit: releases the least recently used
    /// clean pages to the server, writes back dirty ones first.
    pub(crate) fn evict(&mut self, _now: Instant) {
        let limit = self.config.max_cached_pages;
        if self.cache.len() <= limit {
            return;
        }
        let want = self.cache.len() - limit + limit / 16 + 1;
        let mut cands: Vec<(u64, FileId, PageNo)> = Vec::new();
        let mut dirty: Vec<(u64, FileId, PageNo)> = Vec::new();
        for (fid, q, p) in self.cache.all() {
            if !p.data.is_some() {
                continue;
            }
            if p.evictable() {
                cands.push((p.touched, fid, q));
            } else if p.dirty.is_some() && p.writebacks == 0 {
                dirty.push((p.touched, fid, q));
            }
        }
        cands.sort();
        cands.truncate(want);
        let mut released: std::collections::BTreeMap<FileId, Vec<PageNo>> = Default::default();
        for (_, fid, q) in &cands {
            self.zap_page(*fid, *q);
            let pg = self.cache.remove(*fid, *q).expect("listed");
            if pg.state != PageState::Invalid && !pg.stale {
                released.entry(*fid).or_default().push(*q);
            }
        }
        for (fid, pages) in released {
            self.send_releases(fid, &pages);
        }
        if cands.len() < want && !dirty.is_empty() {
            dirty.sort();
            dirty.truncate(want - cands.len());
            let mut by_file: std::collections::BTreeMap<FileId, Vec<PageNo>> = Default::default();
            for (_, f, q) in dirty {
                by_file.entry(f).or_default().push(q);
            }
            for (f, mut pages) in by_file {
                pages.sort();
                let mut sink = BTreeSet::new();
                self.flush_pages(None, f, &pages, &mut 0, &mut sink);
            }
        }
    }
}
