//! Plain-old-data values in a memory mapping, copied in and out: the sound
//! way to read and write a struct in memory that other clients change.
//!
//! `read_value` / `write_value` copy through the kernel like
//! [`MemoryMapping::read`] (asynchronous; a failure is an error);
//! `load` / `store` copy with atomic byte (or word) loads and stores, so
//! they fault as any access does, and move a Tokio worker's tasks away
//! before blocking it in that fault.

use std::sync::atomic::Ordering;

use bytemuck::Pod;
use rmmap_core::client::OpError;
use tokio::runtime::{Handle, RuntimeFlavor};

use super::MemoryMapping;

impl MemoryMapping {
    /// The `T` at `offset`, copied out (any alignment): what loads would
    /// read, but a failure (disconnected longer than `give_up_after`, the
    /// session lost, the client closed) is an error, never SIGBUS, and no
    /// thread blocks in a fault. Bytes of one value on two pages may come
    /// from two different writes unless the program orders them.
    pub async fn read_value<T: Pod>(&self, offset: u64) -> Result<T, OpError> {
        let mut value = T::zeroed();
        self.read(offset, bytemuck::bytes_of_mut(&mut value))
            .await?;
        Ok(value)
    }

    /// Copies `value` into the memory at `offset` (any alignment), as
    /// [`MemoryMapping::write`] does. Fails on a read-only mapping.
    pub async fn write_value<T: Pod>(&self, offset: u64, value: &T) -> Result<(), OpError> {
        self.write(offset, bytemuck::bytes_of(value)).await
    }

    /// The `T` at `offset`, read with atomic loads (relaxed; 8-byte words
    /// where the offset and size allow, else bytes), from any thread: a
    /// page not in memory faults and this thread waits for it. It is
    /// [`checked`](MemoryMapping::checked): in the default
    /// [`FaultMode::Report`](super::FaultMode::Report) a failed access is
    /// an error (in `Signal` mode it raises SIGBUS; see the
    /// [module docs](crate::memory#how-an-access-fails)).
    /// On a worker of a multi-thread Tokio runtime it runs inside
    /// `block_in_place`, so that the fault cannot stall the runtime.
    pub fn load<T: Pod>(&self, offset: u64) -> Result<T, OpError> {
        let start = self.typed_range(offset, size_of::<T>())?;
        let mut value = T::zeroed();
        let out = bytemuck::bytes_of_mut(&mut value);
        self.checked(|_| {
            if start % 8 == 0 && out.len() % 8 == 0 {
                let words = &self.atomic_words()[start / 8..(start + out.len()) / 8];
                for (o, w) in out.chunks_exact_mut(8).zip(words) {
                    o.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
                }
            } else {
                let bytes = &self.atomic_bytes()[start..start + out.len()];
                for (o, b) in out.iter_mut().zip(bytes) {
                    *o = b.load(Ordering::Relaxed);
                }
            }
        })?;
        Ok(value)
    }

    /// Stores `value` at `offset` with atomic stores (relaxed; words where
    /// the offset and size allow, else bytes), faulting as stores do; see
    /// [`MemoryMapping::load`]. Fails on a read-only mapping.
    pub fn store<T: Pod>(&self, offset: u64, value: &T) -> Result<(), OpError> {
        if !self.writable {
            return Err(OpError::ReadOnly);
        }
        let data = bytemuck::bytes_of(value);
        let start = self.typed_range(offset, data.len())?;
        self.checked(|_| {
            if start % 8 == 0 && data.len() % 8 == 0 {
                let words = &self.atomic_words()[start / 8..(start + data.len()) / 8];
                for (d, w) in data.chunks_exact(8).zip(words) {
                    w.store(
                        u64::from_ne_bytes(d.try_into().expect("8 bytes")),
                        Ordering::Relaxed,
                    );
                }
            } else {
                let bytes = &self.atomic_bytes()[start..start + data.len()];
                for (d, b) in data.iter().zip(bytes) {
                    b.store(*d, Ordering::Relaxed);
                }
            }
        })
    }

    /// `offset` as an index, with `len` bytes from it inside the mapping.
    pub(super) fn typed_range(&self, offset: u64, len: usize) -> Result<usize, OpError> {
        let out_of_range = || OpError::OutOfRange {
            offset,
            len: len as u64,
            mapping_len: self.len as u64,
        };
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        match start.checked_add(len) {
            Some(end) if end <= self.len => Ok(start),
            _ => Err(out_of_range()),
        }
    }

    /// Runs `access`, which may block in a fault, where blocking cannot
    /// stall the runtime that serves the fault.
    pub(super) fn off_worker<R>(&self, access: impl FnOnce() -> R) -> R {
        match Handle::try_current() {
            // A worker's other tasks (maybe the client's driver) move to
            // another thread first.
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(access)
            }
            // Outside any runtime, or on a current-thread one, which is not
            // the client's (that one is multi-thread): blocking this thread
            // stalls nothing the fault needs.
            _ => access(),
        }
    }
}
