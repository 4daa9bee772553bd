//! Application commands: each returns an [`OpId`] that completes as an
//! [`Event::Completed`](super::Event::Completed), or, for the `try_` fast
//! paths, is served from the cache on the spot.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};

use crate::Instant;
use crate::protocol::AtomicOp;

use super::cache::{self, FileId};
use super::{
    Access, Client, MapOptions, MappingId, MappingState, MappingStatus, Op, OpError, OpId, OpKind,
    ReadInto,
};

impl Client {
    fn admit(&mut self, kind: OpKind) -> Result<OpId, OpError> {
        if let Some(f) = &self.failed {
            return Err(OpError::Closed(f.clone()));
        }
        if self.ops.len() >= self.config.max_pending_ops {
            return Err(OpError::Busy(self.ops.len()));
        }
        self.next_op += 1;
        let id = OpId(self.next_op);
        self.ops.insert(id, Op { kind });
        self.woken.insert(id);
        Ok(id)
    }

    fn check_range(
        &self,
        mapping: MappingId,
        offset: u64,
        len: u64,
    ) -> Result<&MappingState, OpError> {
        let m = self.mappings.get(&mapping).ok_or(OpError::UnknownMapping)?;
        if offset.checked_add(len).is_none_or(|e| e > m.len) {
            return Err(OpError::OutOfRange {
                offset,
                len,
                mapping_len: m.len,
            });
        }
        if let MappingStatus::Lost(l) = &m.status {
            return Err(OpError::SessionLost(l.clone()));
        }
        if matches!(m.status, MappingStatus::Closing) {
            return Err(OpError::MappingClosed);
        }
        Ok(m)
    }

    /// Memory mappings are read and written through their memory.
    fn byte_access(&self, mapping: MappingId) -> Result<(), OpError> {
        match self.mappings.get(&mapping) {
            Some(m) if m.memory.is_some() => Err(OpError::Unsupported(
                "read and write a memory mapping through its memory (atomics and sync work)",
            )),
            _ => Ok(()),
        }
    }

    /// Maps `[offset, offset + len)` of the file at `path` (relative to the
    /// export root).
    pub fn map(
        &mut self,
        now: Instant,
        path: &str,
        offset: u64,
        len: u64,
        opts: MapOptions,
    ) -> Result<OpId, OpError> {
        self.map_inner(now, path, offset, len, opts, None)
    }

    /// Maps `[offset, offset + len)` of the file at `path` into memory the
    /// adapter owns (see [`MemoryBacking`](super::MemoryBacking)): `offset`
    /// must be a multiple of the page size, so the client must be connected
    /// (to know it). Page faults are handed in with [`Client::memory_fault`].
    pub fn map_memory(
        &mut self,
        now: Instant,
        path: &str,
        offset: u64,
        len: u64,
        opts: MapOptions,
        backing: Box<dyn super::MemoryBacking>,
    ) -> Result<OpId, OpError> {
        let Some(ps) = self.params.as_ref().map(|p| p.page_size) else {
            return Err(OpError::Unsupported(
                "connect before mapping into memory: the page size is not known yet",
            ));
        };
        if offset % ps != 0 {
            return Err(OpError::Unsupported(
                "a memory mapping must start at a multiple of the page size",
            ));
        }
        self.map_inner(
            now,
            path,
            offset,
            len,
            opts,
            Some(super::memory::Memory(backing)),
        )
    }

    /// A page fault on page `index` (from the start of the mapping) of a
    /// memory mapping. Completes with [`Completion::FaultResolved`](super::Completion::FaultResolved) once the
    /// page is in memory in the state the access needs (write-protected for
    /// reads, so that a later write faults again).
    pub fn memory_fault(
        &mut self,
        now: Instant,
        mapping: MappingId,
        index: u64,
        write: bool,
    ) -> Result<OpId, OpError> {
        let m = self.mappings.get(&mapping).ok_or(OpError::UnknownMapping)?;
        if m.memory.is_none() {
            return Err(OpError::Unsupported("not a memory mapping"));
        }
        if let MappingStatus::Lost(l) = &m.status {
            return Err(OpError::SessionLost(l.clone()));
        }
        if write && !m.writable {
            return Err(OpError::ReadOnly);
        }
        let r = self.admit(OpKind::Fault {
            mapping,
            index,
            write,
        });
        self.pump(now);
        r
    }

    fn map_inner(
        &mut self,
        now: Instant,
        path: &str,
        offset: u64,
        len: u64,
        opts: MapOptions,
        memory: Option<super::memory::Memory>,
    ) -> Result<OpId, OpError> {
        if self.ops.len() >= self.config.max_pending_ops {
            return Err(OpError::Busy(self.ops.len()));
        }
        self.next_mapping += 1;
        let mapping = MappingId(self.next_mapping);
        self.mappings.insert(
            mapping,
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
                waiters: BTreeSet::new(),
                last_read_end: u64::MAX,
                readahead_to: 0,
                dropped_to: 0,
                last_write_end: u64::MAX,
                written_back_to: 0,
                writeahead_to: 0,
                file_len: 0,
                memory,
            },
        );
        let r = self.admit(OpKind::Map { mapping });
        if r.is_err() {
            self.mappings.remove(&mapping);
        }
        self.pump(now);
        r
    }

    /// Reads `len` bytes at `offset` of the mapping; completes with
    /// [`Completion::Read`](super::Completion::Read).
    pub fn read(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        len: u64,
    ) -> Result<OpId, OpError> {
        self.read_inner(now, mapping, offset, len, ReadInto::Buffer(None))
    }

    /// Like [`Client::read`], but completes with
    /// [`Completion::ReadPages`](super::Completion::ReadPages): the pages' own
    /// bytes, sliced, for an adapter that copies them straight into its
    /// caller's buffer.
    pub fn read_pages(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        len: u64,
    ) -> Result<OpId, OpError> {
        self.read_inner(now, mapping, offset, len, ReadInto::Slices(Vec::new()))
    }

    fn read_inner(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        len: u64,
        buf: ReadInto,
    ) -> Result<OpId, OpError> {
        self.byte_access(mapping)?;
        let m = self.check_range(mapping, offset, len)?;
        let start = m.offset + offset;
        let sequential = m.last_read_end == start;
        if let Some(m) = self.mappings.get_mut(&mapping) {
            m.last_read_end = start + len;
        }
        let r = self.admit(OpKind::Read {
            mapping,
            start,
            len,
            pos: 0,
            buf,
            sequential,
        });
        self.pump(now);
        r
    }

    /// Writes `data` at `offset` of the mapping.
    pub fn write(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        data: Bytes,
    ) -> Result<OpId, OpError> {
        self.byte_access(mapping)?;
        let m = self.check_range(mapping, offset, data.len() as u64)?;
        if !m.writable {
            return Err(OpError::ReadOnly);
        }
        let start = m.offset + offset;
        let r = self.admit(OpKind::Write {
            mapping,
            start,
            data,
            pos: 0,
        });
        self.pump(now);
        r
    }

    /// Makes every write completed so far on this mapping durable.
    pub fn sync(&mut self, now: Instant, mapping: MappingId) -> Result<OpId, OpError> {
        let m = self.check_range(mapping, 0, 0)?;
        let upto = m.write_seq;
        let r = self.admit(OpKind::Sync {
            mapping,
            snapshot: None,
            upto,
            writebacks: BTreeSet::new(),
            sync_req: None,
            done: false,
            failed: None,
        });
        self.pump(now);
        r
    }

    /// Writes back the mapping's dirty pages and ends it. Operations still
    /// waiting on it fail with [`OpError::MappingClosed`].
    pub fn unmap(&mut self, now: Instant, mapping: MappingId) -> Result<OpId, OpError> {
        if !self.mappings.contains_key(&mapping) {
            return Err(OpError::UnknownMapping);
        }
        if matches!(self.mappings[&mapping].status, MappingStatus::Closing) {
            return Err(OpError::MappingClosed);
        }
        self.fail_mapping_ops(mapping, OpError::MappingClosed);
        let r = self.admit(OpKind::Unmap {
            mapping,
            writebacks: BTreeSet::new(),
            req: None,
        });
        self.pump(now);
        r
    }

    /// Sets the length of the file at `path`; with `create`, creates it.
    pub fn set_len(
        &mut self,
        now: Instant,
        path: &str,
        len: u64,
        create: bool,
    ) -> Result<OpId, OpError> {
        let r = self.admit(OpKind::SetLen {
            path: path.to_owned(),
            len,
            create,
            req: None,
        });
        self.pump(now);
        r
    }

    /// Runs an atomic operation at the server on the 64-bit little-endian
    /// word at `offset` of the mapping (8-byte aligned in the file).
    pub fn atomic(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        op: AtomicOp,
    ) -> Result<OpId, OpError> {
        let m = self.check_range(mapping, offset, 8)?;
        if !m.writable {
            return Err(OpError::ReadOnly);
        }
        let abs = m.offset + offset;
        if abs % 8 != 0 {
            return Err(OpError::Misaligned(abs));
        }
        let r = self.admit(OpKind::Atomic {
            mapping,
            offset: abs,
            op,
            req: None,
        });
        self.pump(now);
        r
    }

    /// Writes back everything dirty, says goodbye and ends the session.
    pub fn close(&mut self, now: Instant) -> Result<OpId, OpError> {
        let r = self.admit(OpKind::Close {
            writebacks: BTreeSet::new(),
            bye_sent: false,
        });
        self.pump(now);
        r
    }

    /// Serves a read from the cache without creating an operation:
    /// `Ok(true)` when `buf` was filled, `Ok(false)` when the data is not
    /// all cached (or the lease needs renewing): use [`Client::read`].
    pub fn try_read(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<bool, OpError> {
        self.byte_access(mapping)?;
        let m = self.check_range(mapping, offset, buf.len() as u64)?;
        let (Some(file), Some(_)) = (m.file, m.wire()) else {
            return Ok(false);
        };
        let start = m.offset + offset;
        let Some(ps) = self.params.as_ref().map(|p| p.page_size) else {
            return Ok(false);
        };
        if !self.lease_valid(now) {
            return Ok(false);
        }
        let f = &self.files[&file];
        let mut pos = 0usize;
        while pos < buf.len() {
            let abs = start + pos as u64;
            let (p, inp) = (abs / ps, (abs % ps) as usize);
            let n = (ps as usize - inp).min(buf.len() - pos);
            let Some(page) = f.pages.get(&p) else {
                return Ok(false);
            };
            if !page.readable() {
                return Ok(false);
            }
            let d = page.data.as_slice().expect("readable pages have data");
            buf[pos..pos + n].copy_from_slice(&d[inp..inp + n]);
            pos += n;
        }
        self.tick += 1;
        Ok(true)
    }

    /// Serves a write from the cache: `Ok(true)` when every page it touches
    /// is held exclusively (and the lease is valid) and the write is done.
    pub fn try_write(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        data: &[u8],
    ) -> Result<bool, OpError> {
        self.byte_access(mapping)?;
        let m = self.check_range(mapping, offset, data.len() as u64)?;
        if !m.writable {
            return Err(OpError::ReadOnly);
        }
        let (Some(file), Some(_)) = (m.file, m.wire()) else {
            return Ok(false);
        };
        let start = m.offset + offset;
        let Some(ps) = self.params.as_ref().map(|p| p.page_size) else {
            return Ok(false);
        };
        if !self.lease_valid(now) {
            return Ok(false);
        }
        let f = &self.files[&file];
        let (first, last) = (start / ps, (start + data.len() as u64).div_ceil(ps));
        for p in first..last {
            match f.pages.get(&p) {
                Some(pg) if pg.state == cache::PageState::Exclusive && pg.data.is_some() => {}
                _ => return Ok(false),
            }
        }
        self.apply_write(mapping, file, start, data);
        Ok(true)
    }

    /// Copies `data` into exclusively held pages (checked by the caller).
    pub(crate) fn apply_write(
        &mut self,
        mapping: MappingId,
        file: FileId,
        start: u64,
        data: &[u8],
    ) {
        let ps = self.params.as_ref().expect("connected").page_size;
        let f = self.files.get_mut(&file).expect("mapped file");
        // Pages this write fills whole and that hold no data yet (overwrite
        // grants) take slices of one buffer: one allocation for the write
        // instead of a zeroed one per page, then overwritten.
        let whole = (start.div_ceil(ps)..(start + data.len() as u64) / ps)
            .filter(|q| f.pages.get(q).is_some_and(|pg| !pg.data.is_some()))
            .count();
        let mut block = BytesMut::with_capacity(if whole > 1 { whole * ps as usize } else { 0 });
        let mut pos = 0usize;
        while pos < data.len() {
            let abs = start + pos as u64;
            let (p, inp) = (abs / ps, (abs % ps) as usize);
            let n = (ps as usize - inp).min(data.len() - pos);
            let page = f.pages.get_mut(&p).expect("checked exclusive");
            let had = page.data.is_some();
            if !had && n == ps as usize && block.capacity() >= n {
                block.extend_from_slice(&data[pos..pos + n]);
                page.data = cache::PageData::Owned(block.split_to(n));
            } else {
                page.data.make_mut(ps as usize)[inp..inp + n].copy_from_slice(&data[pos..pos + n]);
            }
            if !had {
                self.cached += 1;
            }
            page.mark_dirty(inp as u32, (inp + n) as u32);
            pos += n;
        }
        let m = self.mappings.get_mut(&mapping).expect("checked");
        m.write_seq += 1;
        let sequential = m.last_write_end == start;
        m.last_write_end = start + data.len() as u64;
        self.tick += 1;
        if sequential {
            self.write_behind(mapping, file, start / ps);
            self.write_ahead(mapping, file, (start + data.len() as u64).div_ceil(ps));
        }
    }
}
