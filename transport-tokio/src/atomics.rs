//! The server-side atomic operations on a mapping's 64-bit words, named as
//! `AtomicU64` names them. Plain and memory mappings share them: the core
//! runs [`AtomicOp`] on either kind.

use rmmap_core::client::OpError;
use rmmap_core::protocol::AtomicOp;

use crate::Mapping;

impl Mapping {
    /// Adds `value` (wrapping) to the little-endian word at `offset`
    /// (8-byte aligned in the file), at the server; returns the previous
    /// value.
    pub async fn fetch_add(&self, offset: u64, value: u64) -> Result<u64, OpError> {
        Ok(self.atomic(offset, AtomicOp::FetchAdd(value)).await?.0)
    }

    /// Stores `value` in the word at `offset`; returns the previous value.
    pub async fn swap(&self, offset: u64, value: u64) -> Result<u64, OpError> {
        Ok(self.atomic(offset, AtomicOp::Swap(value)).await?.0)
    }

    /// Stores `new` in the word at `offset` if it holds `expected`: like
    /// `AtomicU64::compare_exchange`, `Ok(previous)` when it stored,
    /// `Err(actual)` when it did not.
    pub async fn compare_exchange(
        &self,
        offset: u64,
        expected: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, OpError> {
        let (previous, applied) = self
            .atomic(offset, AtomicOp::CompareExchange { expected, new })
            .await?;
        Ok(if applied { Ok(previous) } else { Err(previous) })
    }
}
