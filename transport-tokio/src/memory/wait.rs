//! Waiting for another client's write: a futex across machines.
//!
//! Another client cannot change a word we hold without first taking our
//! copy of its page away (an invalidation, a recall, or a server-side
//! atomic's recall), and the backing counts every page that leaves memory.
//! So a waiter reads the count, loads the word, and if it still holds the
//! old value sleeps until the count moves: it wakes as the invalidation
//! arrives, with no polling on the network.
//!
//! A store by a thread of this process to a page this client holds
//! writable takes no page away; the waiter sees it by reloading at least
//! every [`LOCAL_RECHECK`].

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rmmap_core::client::OpError;

use super::MemoryMapping;

/// Longest a waiter sleeps before reloading the word (for stores made by
/// this process, which invalidate nothing).
const LOCAL_RECHECK: Duration = Duration::from_millis(1);

impl MemoryMapping {
    /// Waits until the little-endian 64-bit word at `offset` (8-byte
    /// aligned) no longer holds `current`, or `timeout` passes: the new
    /// value, or `None` on a timeout. Another client's change wakes it as
    /// soon as the server's invalidation arrives; a change by this process
    /// within a millisecond. Blocks the calling thread (inside
    /// `block_in_place` on a Tokio worker, as [`MemoryMapping::load`]
    /// does); the word's page faults in like any load.
    ///
    /// Fails when the mapping has failed for good
    /// ([`MemoryMapping::failure`]).
    pub fn wait_while(
        &self,
        offset: u64,
        current: u64,
        timeout: Duration,
    ) -> Result<Option<u64>, OpError> {
        let start = self.typed_range(offset, 8)?;
        if start % 8 != 0 {
            return Err(OpError::Misaligned(offset));
        }
        let deadline = Instant::now() + timeout;
        self.off_worker(|| {
            let word = &self.atomic_words()[start / 8];
            loop {
                if let Some(e) = self.failure() {
                    return Err(e);
                }
                // Counted before the load: a change after it moves the count.
                let seen = self.state.changes();
                let value = u64::from_le(word.load(Ordering::Acquire));
                if value != current {
                    return Ok(Some(value));
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                self.state.wait_change(seen, left.min(LOCAL_RECHECK));
            }
        })
    }
}
