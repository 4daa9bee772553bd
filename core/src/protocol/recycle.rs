//! Buffers whose bytes live on as slices elsewhere (cached pages), kept
//! when they are replaced and reused once nothing points into them: fresh
//! memory costs a page fault per 4 KiB (and, in a virtual machine, a fault
//! in the host too), which a stream of frames or writes would otherwise pay
//! for every byte.

use std::collections::VecDeque;

use bytes::BytesMut;

/// The most memory kept in retired buffers for reuse: 64 MiB, as much as a
/// streaming reader's default cache holds anyway.
pub const RETAIN_LIMIT: usize = 64 << 20;

/// Buffers smaller than this are not worth keeping.
const RETAIN_MIN: usize = 256 << 10;

/// How many retired buffers are tried, oldest first, before allocating.
const PROBES: usize = 8;

/// Retired buffers, oldest first, each with the size it was allocated with.
#[derive(Debug, Default)]
pub(crate) struct Recycler {
    retired: VecDeque<(BytesMut, usize)>,
    retired_bytes: usize,
    /// Buffers allocated because none could be reused.
    fresh: u64,
}

impl Recycler {
    /// A buffer with room for `need` bytes: the oldest retired one (of the
    /// first few) that nothing points into any more, else a fresh one of
    /// `need` bytes; with the size it was allocated with.
    pub(crate) fn take(&mut self, need: usize) -> (BytesMut, usize) {
        let probes = self.retired.len().min(PROBES);
        let found = (0..probes).find(|&i| {
            let (b, size) = &mut self.retired[i];
            *size >= need && b.try_reclaim(need)
        });
        match found {
            Some(i) => {
                let (b, size) = self.retired.remove(i).expect("found above");
                self.retired_bytes -= size;
                (b, size)
            }
            None => {
                self.fresh += 1;
                (BytesMut::with_capacity(need), need)
            }
        }
    }

    /// Keeps `buf` (allocated with `size` bytes; slices of it may still be
    /// in use) for a later [`take`](Self::take), dropping the oldest kept
    /// ones beyond [`RETAIN_LIMIT`].
    pub(crate) fn retire(&mut self, mut buf: BytesMut, size: usize) {
        if size < RETAIN_MIN {
            return;
        }
        buf.clear();
        self.retired.push_back((buf, size));
        self.retired_bytes += size;
        while self.retired_bytes > RETAIN_LIMIT {
            let (_, size) = self.retired.pop_front().expect("counted");
            self.retired_bytes -= size;
        }
    }

    /// Forgets every retired buffer.
    pub(crate) fn clear(&mut self) {
        self.retired.clear();
        self.retired_bytes = 0;
    }

    /// Memory kept, whether or not slices of it are still in use.
    pub(crate) fn retired_bytes(&self) -> usize {
        self.retired_bytes
    }
}

/// Bytes cut one `Bytes` at a time from a buffer that, when full, is
/// replaced by a retired one nothing points into any more (or a fresh one):
/// a stream of chunks whose bytes live on as cached pages (a client's writes, copied when they must wait; `rmmap put`'s
/// chunks of the local file) reuses the memory of pages already written
/// back and dropped instead of taking fresh memory for every chunk.
#[derive(Debug, Default)]
pub struct Chunks {
    current: BytesMut,
    size: usize,
    recycler: Recycler,
}

/// Chunks shorter than this are copied into a buffer of their own (a small
/// one would otherwise keep a whole shared buffer alive).
const POOLED_MIN: usize = 64 << 10;

/// The size of each shared buffer (or the chunk, if larger).
const BUFFER_SIZE: usize = 4 << 20;

impl Chunks {
    /// `data`, copied.
    pub fn copy(&mut self, data: &[u8]) -> bytes::Bytes {
        if data.len() < POOLED_MIN {
            return bytes::Bytes::copy_from_slice(data);
        }
        self.room(data.len());
        self.current.extend_from_slice(data);
        self.current.split().freeze()
    }

    /// `len` bytes written by `fill` (into zeroed memory: whatever it does
    /// not write stays zero).
    pub fn fill<E>(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<bytes::Bytes, E> {
        self.room(len);
        self.current.resize(len, 0);
        fill(&mut self.current[..])?;
        Ok(self.current.split().freeze())
    }

    fn room(&mut self, len: usize) {
        if self.current.capacity() < len {
            let (next, size) = self.recycler.take(len.max(BUFFER_SIZE));
            let old = std::mem::replace(&mut self.current, next);
            let old_size = std::mem::replace(&mut self.size, size);
            self.recycler.retire(old, old_size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streaming_writer_reuses_buffers_its_copies_left() {
        let mut w = Chunks::default();
        let chunk = vec![7u8; 1 << 20];
        // Up to 8 MiB of copies alive at once (a cache that drops pages
        // behind the writer), 64 MiB written: two or three buffers, not
        // sixteen.
        let mut alive = std::collections::VecDeque::new();
        for _ in 0..64 {
            let b = w.copy(&chunk);
            assert!(b[..] == chunk[..]);
            alive.push_back(b);
            if alive.len() > 8 {
                alive.pop_front();
            }
        }
        assert!(
            w.recycler.fresh <= 3,
            "{} buffers allocated",
            w.recycler.fresh
        );
        // A small write is copied on its own.
        assert_eq!(w.copy(b"small").as_ref(), b"small");
        let filled = w.fill(3 << 20, |b| {
            b[0] = 9;
            Ok::<(), ()>(())
        });
        let filled = filled.unwrap();
        assert_eq!((filled.len(), filled[0], filled[1]), (3 << 20, 9, 0));
    }

    #[test]
    fn a_buffer_is_not_reused_while_a_copy_in_it_is_alive() {
        let mut w = Chunks::default();
        let chunk = vec![1u8; 1 << 20];
        let held: Vec<_> = (0..64).map(|_| w.copy(&chunk)).collect();
        assert_eq!(w.recycler.fresh, 16, "every buffer is still in use");
        assert!(held.iter().all(|b| b[..] == chunk[..]));
    }
}
