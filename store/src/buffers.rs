//! Read buffers used again: a streaming reader's fetches read 4 MiB at a
//! time, and a fresh buffer for each comes from memory the allocator has
//! just handed back to the kernel, so every page of it faults and is zeroed
//! by the kernel before `pread` overwrites it (about a tenth of the disk
//! threads' time on a stream, perf). A buffer goes back to the pool when the
//! last `Bytes` of it (the reply, every page sliced out of it) is dropped.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Most buffers kept, and most bytes in them.
const MAX_BUFFERS: usize = 32;
const MAX_BYTES: usize = 128 << 20;

/// Free buffers, each empty with its capacity kept.
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// An empty buffer of exactly `len` bytes' capacity: a kept one if
    /// there is one, else a new one.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        match free.iter().position(|b| b.capacity() == len) {
            Some(i) => free.swap_remove(i),
            None => Vec::with_capacity(len),
        }
    }

    /// `buf` as `Bytes` (no copy) that give the buffer back to the pool
    /// once every `Bytes` of it is gone.
    pub(crate) fn lend(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Lent {
            buf,
            pool: self.clone(),
        })
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let kept: usize = free.iter().map(Vec::capacity).sum();
        if free.len() < MAX_BUFFERS && kept + buf.capacity() <= MAX_BYTES {
            free.push(buf);
        }
    }
}

/// A buffer out of the pool, behind `Bytes`.
struct Lent {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_when_its_last_slice_is_dropped() {
        let pool = Arc::new(BufferPool::default());
        let mut b = pool.take(4096);
        b.extend_from_slice(&[7u8; 4096]);
        let ptr = b.as_ptr();
        let bytes = pool.lend(b);
        let page = bytes.slice(1024..2048);
        drop(bytes);
        let fresh = pool.take(4096);
        assert_ne!(fresh.as_ptr(), ptr, "not back while a slice lives");
        drop(page);
        let again = pool.take(4096);
        assert_eq!(again.as_ptr(), ptr, "the same memory, used again");
        assert!(again.is_empty());
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_buffers() {
        let pool = Arc::new(BufferPool::default());
        let lent: Vec<Bytes> = (0..MAX_BUFFERS + 5)
            .map(|_| pool.lend(pool.take(16)))
            .collect();
        drop(lent);
        assert_eq!(pool.free.lock().unwrap().len(), MAX_BUFFERS);
    }
}
