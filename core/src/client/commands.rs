//! Application commands: each returns a [`Pending`] operation that
//! completes as an [`Event::Completed`](super::Event::Completed), or, for the
//! reads and writes the cache can serve, finishes on the spot
//! ([`Started::Done`], and the `try_` fast paths).
//!
//! Every range is checked before anything is allocated for it.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use bytes::Bytes;

use crate::Instant;
use crate::protocol::AtomicOp;

use super::cache::{self, FileId};
use super::{
    Client, MapOptions, Mapped, MappingId, MappingState, OpError, OpId, OpKind, Pending, ReadInto,
    ReadPages, Started,
};

impl Client {
    pub(crate) fn admit(&mut self, kind: OpKind) -> Result<OpId, OpError> {
        if let Some(f) = self.conn.failed() {
            return Err(OpError::Closed(f.to_owned()));
        }
        self.ops.admit(kind, Some(self.config.max_pending_ops))
    }

    /// Whether `[offset, offset + len)` lies in the mapping, and the
    /// mapping can be used: the one range check, made before anything is
    /// allocated for the range.
    pub(crate) fn check_range(
        &mut self,
        mapping: MappingId,
        offset: u64,
        len: u64,
    ) -> Result<&MappingState, OpError> {
        if let Some(f) = self.conn.failed() {
            return Err(OpError::Closed(f.to_owned()));
        }
        let m = self.mappings.get(mapping).ok_or(OpError::UnknownMapping)?;
        if offset.checked_add(len).is_none_or(|e| e > m.len) {
            return Err(OpError::OutOfRange {
                offset,
                len,
                mapping_len: m.len,
            });
        }
        self.report_loss(mapping)?;
        let m = &self.mappings[mapping];
        m.usable()?;
        Ok(m)
    }

    /// Memory mappings are read and written through their memory.
    pub(crate) fn byte_access(&self, mapping: MappingId) -> Result<(), OpError> {
        match self.mappings.get(mapping) {
            Some(m) if m.memory.is_some() => Err(OpError::Unsupported(
                "read and write a memory mapping through its memory (atomics and sync work)",
            )),
            _ => Ok(()),
        }
    }

    /// Maps `range` of the file at `path` (relative to the export root).
    pub fn map(
        &mut self,
        now: Instant,
        path: &str,
        range: Range<u64>,
        opts: MapOptions,
    ) -> Result<Pending<Mapped>, OpError> {
        let (offset, len) = map_range(&range)?;
        self.map_inner(now, path, offset, len, opts, None, true)
    }

    /// Maps `range` of `path` read-only only to learn whether this member
    /// serves the file: a cluster client's question before it moves a
    /// memory mapping of the range here, or keeps it here. Unlike
    /// [`Client::map`], a memory mapping of the range on this connection
    /// does not refuse it ([`OpError::Overlap`]). Nothing may be read or
    /// written through it: unmap it once it is answered (the pages of the
    /// memory mapping stay, as they do when any overlapping mapping ends).
    pub fn probe_map(
        &mut self,
        now: Instant,
        path: &str,
        range: Range<u64>,
    ) -> Result<Pending<Mapped>, OpError> {
        let (offset, len) = map_range(&range)?;
        let opts = MapOptions::read_only();
        self.map_inner(now, path, offset, len, opts, None, false)
    }

    /// Maps `range` of the file at `path` into memory the adapter owns (see
    /// [`MemoryBacking`](super::MemoryBacking)): `range.start` must be a
    /// multiple of the page size, so the client must be connected (to know
    /// it). Page faults are handed in with [`Client::memory_fault`].
    pub fn map_memory(
        &mut self,
        now: Instant,
        path: &str,
        range: Range<u64>,
        opts: MapOptions,
        backing: Box<dyn super::MemoryBacking>,
    ) -> Result<Pending<Mapped>, OpError> {
        let (offset, len) = map_range(&range)?;
        let Some(ps) = self.conn.page_size() else {
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
            true,
        )
    }

    /// A page fault on page `index` (from the start of the mapping) of a
    /// memory mapping. Completes once the page is in memory in the state the
    /// access needs (write-protected for reads, so that a later write faults
    /// again).
    pub fn memory_fault(
        &mut self,
        now: Instant,
        mapping: MappingId,
        index: u64,
        write: bool,
    ) -> Result<Pending<()>, OpError> {
        let m = self.mappings.get(mapping).ok_or(OpError::UnknownMapping)?;
        if m.memory.is_none() {
            return Err(OpError::Unsupported("not a memory mapping"));
        }
        if write && !m.writable {
            return Err(OpError::ReadOnly);
        }
        // A loss is reported to one fault (the thread gets SIGBUS, retried
        // if its handler returns); the faults after it fetch the server's
        // bytes.
        self.report_loss(mapping)?;
        let r = self.admit(OpKind::Fault {
            mapping,
            index,
            write,
        });
        self.pump(now);
        r.map(Pending::fault_resolved)
    }

    #[allow(clippy::too_many_arguments)]
    fn map_inner(
        &mut self,
        now: Instant,
        path: &str,
        offset: u64,
        len: u64,
        opts: MapOptions,
        memory: Option<super::memory::Memory>,
        refuse_overlap: bool,
    ) -> Result<Pending<Mapped>, OpError> {
        if let Some(f) = self.conn.failed() {
            return Err(OpError::Closed(f.to_owned()));
        }
        if self.ops.len() >= self.config.max_pending_ops {
            return Err(OpError::Busy(self.ops.len()));
        }
        if let Some(other) = self
            .mappings
            .memory_overlap(path, offset, len, memory.is_some())
            .filter(|_| refuse_overlap)
        {
            return Err(OpError::Overlap {
                path: path.to_owned(),
                start: offset,
                end: offset.saturating_add(len),
                other,
            });
        }
        let mapping = self.mappings.add(MappingState::new(
            path,
            offset,
            len,
            opts,
            memory,
            self.config.readahead_pages as u64,
        ));
        let r = self.admit(OpKind::Map { mapping });
        if r.is_err() {
            self.mappings.remove(mapping);
        }
        self.pump(now);
        r.map(Pending::mapped)
    }

    /// Reads `len` bytes at `offset` of the mapping (always as an
    /// operation, even when the cache holds them: see
    /// [`Client::read_bytes`]).
    pub fn read(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        len: u64,
    ) -> Result<Pending<Bytes>, OpError> {
        self.read_inner(now, mapping, offset, len, ReadInto::Buffer(None))
            .map(Pending::read)
    }

    /// Like [`Client::read`], but completes with the pages' own bytes,
    /// sliced ([`ReadPages`]), for an adapter that copies them straight
    /// into its caller's buffer.
    pub fn read_pages(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        len: u64,
    ) -> Result<Pending<ReadPages>, OpError> {
        self.read_inner(now, mapping, offset, len, ReadInto::Slices(Vec::new()))
            .map(Pending::read_pages)
    }

    /// Fills `buf` with the bytes at `offset` of the mapping: from the cache
    /// on the spot when it holds them all ([`Started::Done`]), else as an
    /// operation. Either way, finish with [`ReadPages::copy_into`] on `buf`.
    pub fn read_into(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<Started<ReadPages>, OpError> {
        if self.try_read(now, mapping, offset, buf)? {
            return Ok(Started::Done(ReadPages::filled()));
        }
        self.read_pages(now, mapping, offset, buf.len() as u64)
            .map(Started::Waiting)
    }

    /// The `len` bytes at `offset` of the mapping: from the cache on the spot
    /// when it holds them all ([`Started::Done`]), else as an operation. The
    /// range is checked before a buffer is allocated for it.
    pub fn read_bytes(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        len: u64,
    ) -> Result<Started<Bytes>, OpError> {
        // The range first: nothing is allocated for a range that is not
        // there.
        if let Some((file, start, ps)) = self.cache_span(now, mapping, offset, len, false)?
            && (start / ps..(start + len).div_ceil(ps))
                .all(|p| self.cache.get(file, p).is_some_and(|pg| pg.readable()))
        {
            let mut buf = reserve(len)?;
            buf.resize(len as usize, 0);
            if self.try_read(now, mapping, offset, &mut buf)? {
                return Ok(Started::Done(Bytes::from(buf)));
            }
        }
        self.read(now, mapping, offset, len).map(Started::Waiting)
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
        // A read within one page may hand out the page's own bytes; any
        // other gets its buffer now, so a length this process cannot hold
        // fails before a request goes out.
        let within_page = self
            .conn
            .page_size()
            .is_some_and(|ps| start % ps + len <= ps);
        let buf = match buf {
            ReadInto::Buffer(None) if !within_page => ReadInto::Buffer(Some(reserve(len)?)),
            other => other,
        };
        if let Some(m) = self.mappings.get_mut(mapping) {
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

    /// Writes `data` at `offset` of the mapping (always as an operation,
    /// even when the cache holds the pages: see [`Client::write_bytes`]).
    pub fn write(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        data: Bytes,
    ) -> Result<Pending<()>, OpError> {
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
        r.map(Pending::written)
    }

    /// Writes `data` at `offset` of the mapping: into the cache on the spot
    /// when it holds every page exclusively ([`Started::Done`]), else as an
    /// operation, taking `data` without a copy.
    pub fn write_bytes(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        data: Bytes,
    ) -> Result<Started<()>, OpError> {
        if self.try_write(now, mapping, offset, &data)? {
            return Ok(Started::Done(()));
        }
        self.write(now, mapping, offset, data).map(Started::Waiting)
    }

    /// Like [`Client::write_bytes`], from a slice: copied only when the
    /// write has to wait.
    pub fn write_from(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        data: &[u8],
    ) -> Result<Started<()>, OpError> {
        if self.try_write(now, mapping, offset, data)? {
            return Ok(Started::Done(()));
        }
        let data = self.write_copies.copy(data);
        self.write(now, mapping, offset, data).map(Started::Waiting)
    }

    /// Makes every write completed so far on this mapping durable.
    pub fn sync(&mut self, now: Instant, mapping: MappingId) -> Result<Pending<()>, OpError> {
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
        r.map(Pending::synced)
    }

    /// Writes back the mapping's dirty pages, syncs what it wrote, and ends
    /// it. Operations still waiting on it fail with
    /// [`OpError::MappingClosed`].
    ///
    /// Fails, and the mapping stays, when its writes cannot be made durable
    /// (the server's disk refused them: `no_space`, `io`; a later `sync` or
    /// `unmap` may succeed). A mapping that already lost writes is unmapped
    /// and the unmap fails with [`OpError::SessionLost`] saying what was
    /// lost: it never reports success for data that is gone.
    pub fn unmap(&mut self, now: Instant, mapping: MappingId) -> Result<Pending<()>, OpError> {
        let m = self.mappings.get(mapping).ok_or(OpError::UnknownMapping)?;
        if m.is_closing() {
            return Err(OpError::MappingClosed);
        }
        self.fail_mapping_ops(mapping, OpError::MappingClosed);
        let r = self.admit(OpKind::Unmap {
            mapping,
            writebacks: BTreeSet::new(),
            sync_req: None,
            synced: false,
            failed: None,
            req: None,
        });
        self.pump(now);
        r.map(Pending::unmapped)
    }

    /// Sets the length of the file at `path`; with `create`, creates it.
    pub fn set_len(
        &mut self,
        now: Instant,
        path: &str,
        len: u64,
        create: bool,
    ) -> Result<Pending<u64>, OpError> {
        let r = self.admit(OpKind::SetLen {
            path: path.to_owned(),
            len,
            create,
            req: None,
        });
        self.pump(now);
        r.map(Pending::len_set)
    }

    /// Runs an atomic operation at the server on the 64-bit little-endian
    /// word at `offset` of the mapping (8-byte aligned in the file).
    /// Completes with the word before the operation and whether it applied
    /// (false when a compare-exchange found another value).
    pub fn atomic(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        op: AtomicOp,
    ) -> Result<Pending<(u64, bool)>, OpError> {
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
        r.map(Pending::atomic)
    }

    /// Writes back everything dirty, syncs every mapping written since its
    /// last sync, says goodbye and ends the session. Every other pending
    /// operation fails with [`OpError::Closed`].
    ///
    /// Like `close(2)`, the client is closed either way; the close fails
    /// when a write could not be made durable (the first such error), or
    /// with [`OpError::SessionLost`] when a mapping had lost writes.
    pub fn close(&mut self, now: Instant) -> Result<Pending<()>, OpError> {
        let r = self.admit(OpKind::Close {
            writebacks: BTreeSet::new(),
            syncs: BTreeMap::new(),
            syncs_sent: false,
            failed: None,
            bye_sent: false,
        });
        self.pump(now);
        r.map(Pending::closed)
    }

    /// Every handle the application had is gone: close in the background
    /// (nobody waits for the result), even with the pending-operation limit
    /// reached. Does nothing once the client is closing or closed.
    pub fn abandon(&mut self, now: Instant) {
        if self.conn.failed().is_some() || self.ops.closing() {
            return;
        }
        let kind = OpKind::Close {
            writebacks: BTreeSet::new(),
            syncs: BTreeMap::new(),
            syncs_sent: false,
            failed: None,
            bye_sent: false,
        };
        let _ = self.ops.admit(kind, None);
        self.pump(now);
    }

    /// Completes when a handshake has completed (at once if one has). With
    /// a [required first connection](Client::require_first_connection), a
    /// first connection that cannot be made fails it for good: see
    /// [`Client::connect_error`].
    pub fn wait_connected(&mut self, now: Instant) -> Result<Started<()>, OpError> {
        if self.is_connected() {
            return Ok(Started::Done(()));
        }
        let r = self.admit(OpKind::Connect);
        self.pump(now);
        r.map(|op| Started::Waiting(Pending::connected(op)))
    }

    /// Serves a read from the cache without creating an operation:
    /// `Ok(true)` when `buf` was filled, `Ok(false)` when the data is not
    /// all cached (or the lease needs renewing): use [`Client::read_into`].
    pub fn try_read(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<bool, OpError> {
        let Some((file, start, ps)) =
            self.cache_span(now, mapping, offset, buf.len() as u64, false)?
        else {
            return Ok(false);
        };
        let mut pos = 0usize;
        while pos < buf.len() {
            let abs = start + pos as u64;
            let (p, inp) = (abs / ps, (abs % ps) as usize);
            let n = (ps as usize - inp).min(buf.len() - pos);
            let Some(page) = self.cache.get(file, p) else {
                return Ok(false);
            };
            if !page.readable() {
                return Ok(false);
            }
            let d = page.data.as_slice().expect("readable pages have data");
            buf[pos..pos + n].copy_from_slice(&d[inp..inp + n]);
            pos += n;
        }
        self.cache.touch();
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
        let Some((file, start, ps)) =
            self.cache_span(now, mapping, offset, data.len() as u64, true)?
        else {
            return Ok(false);
        };
        let (first, last) = (start / ps, (start + data.len() as u64).div_ceil(ps));
        for p in first..last {
            match self.cache.get(file, p) {
                Some(pg) if pg.state == cache::PageState::Exclusive && pg.data.is_some() => {}
                _ => return Ok(false),
            }
        }
        self.apply_write(mapping, file, start, Written::Copied(data));
        Ok(true)
    }

    /// Checks `[offset, offset + len)` of a mapping (and, for a write, that
    /// the mapping may be written), then says where the cache would serve
    /// it from: the file, where the range starts in it, the page size; or
    /// `None` when the cache cannot serve anything now (not mapped yet, the
    /// lease not valid).
    fn cache_span(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        len: u64,
        write: bool,
    ) -> Result<Option<(FileId, u64, u64)>, OpError> {
        self.byte_access(mapping)?;
        let m = self.check_range(mapping, offset, len)?;
        if write && !m.writable {
            return Err(OpError::ReadOnly);
        }
        let (file, wire, m_offset) = (m.file, m.wire(), m.offset);
        let (Some(file), Some(_), Some(ps)) = (file, wire, self.conn.page_size()) else {
            return Ok(None);
        };
        if !self.lease_valid(now) {
            return Ok(None);
        }
        Ok(Some((file, m_offset + offset, ps)))
    }

    /// Puts `data` into exclusively held pages (checked by the caller):
    /// copied, except that a page the write fills whole and that holds no
    /// data yet (an overwrite grant) keeps a slice of [`Written::Shared`]
    /// bytes, so a streaming writer's bytes are copied once, into the
    /// socket.
    pub(crate) fn apply_write(
        &mut self,
        mapping: MappingId,
        file: FileId,
        start: u64,
        data: Written<'_>,
    ) {
        let ps = self.conn.params().expect("connected").page_size;
        let mut pos = 0usize;
        while pos < data.len() {
            let abs = start + pos as u64;
            let (p, inp) = (abs / ps, (abs % ps) as usize);
            let n = (ps as usize - inp).min(data.len() - pos);
            let mut page = self.cache.get_mut(file, p).expect("checked exclusive");
            match &data {
                Written::Shared(b) if !page.data.is_some() && n == ps as usize => {
                    page.data = cache::PageData::Shared(b.slice(pos..pos + n));
                }
                _ => page.data.make_mut(ps as usize)[inp..inp + n]
                    .copy_from_slice(&data[pos..pos + n]),
            }
            page.mark_dirty(inp as u32, (inp + n) as u32);
            // Whoever waits for the page to change (`wait_while`) looks again.
            let waiting: Vec<OpId> = page.waiters.iter().copied().collect();
            drop(page);
            self.ops.wake_all_of(waiting);
            pos += n;
        }
        let m = self.mappings.get_mut(mapping).expect("checked");
        m.wrote(start / ps..(start + data.len() as u64).div_ceil(ps));
        let sequential = m.last_write_end == start;
        m.last_write_end = start + data.len() as u64;
        self.cache.touch();
        if sequential {
            self.write_behind(mapping, file, start / ps);
            self.write_ahead(mapping, file, (start + data.len() as u64).div_ceil(ps));
        }
    }
}

/// The bytes of a write being applied to the cache.
pub(crate) enum Written<'a> {
    /// The caller's: copied into the pages.
    Copied(&'a [u8]),
    /// Kept by pages the write fills whole and that hold no data yet.
    Shared(Bytes),
}

impl std::ops::Deref for Written<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Written::Copied(d) => d,
            Written::Shared(b) => b,
        }
    }
}

/// The length of a range to map, or why it is no range: the check every
/// map makes (an adapter that must size something first makes it too).
pub fn range_len(range: &Range<u64>) -> Result<u64, OpError> {
    range
        .end
        .checked_sub(range.start)
        .ok_or(OpError::ReversedRange {
            start: range.start,
            end: range.end,
        })
}

/// The offset and length of a range to map.
fn map_range(range: &Range<u64>) -> Result<(u64, u64), OpError> {
    Ok((range.start, range_len(range)?))
}

/// An empty buffer with room for exactly `len` bytes, or why there is none:
/// a length this process cannot hold is an error for that read, not an
/// abort.
pub(crate) fn reserve(len: u64) -> Result<Vec<u8>, OpError> {
    let n = usize::try_from(len).map_err(|_| OpError::TooLarge { len })?;
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| OpError::TooLarge { len })?;
    Ok(v)
}
