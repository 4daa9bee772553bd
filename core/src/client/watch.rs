//! Waiting for another client's write: a futex across machines.
//!
//! [`Client::wait_while`] completes when a 64-bit word of a mapping no
//! longer holds a given value, or at a deadline. It polls nothing on the
//! network: while the word holds the old value the operation waits on the
//! word's page, and every way the page can change wakes it. Another client
//! cannot write the page without the server first taking this client's
//! copy away (an `Invalidate`, or a `Recall` when this client owns it, as it
//! does before a server-side atomic), and both wake the page's waiters; a
//! write by this client wakes them as it lands; a lost session wakes every
//! operation. The woken operation reads the word again (fetching the page
//! when its copy is gone) and either completes or waits again.

use std::time::Duration;

use crate::Instant;

use super::completion::{Completion, Pending};
use super::operations::OpKind;
use super::ops::Step;
use super::{Client, MappingId, OpError, OpId};

/// Timeouts from this one on never end.
const FOREVER: Duration = Duration::from_secs(1 << 32);

impl Client {
    /// Waits until the little-endian 64-bit word at `offset` of the mapping
    /// (8-byte aligned in the file) no longer holds `current`, or `timeout`
    /// passes: completes with the new value, or `None` on a timeout.
    ///
    /// Another client's change wakes it as soon as the server's invalidation
    /// arrives; a change by this client as its write lands. The word is read
    /// like any read (from the cache, fetching the page if needed), so what
    /// it returns is a value some write stored (linearizable with every
    /// other operation on the page). Not for memory mappings: they wait on
    /// their memory (the adapters' `MemoryMapping::wait_while`).
    pub fn wait_while(
        &mut self,
        now: Instant,
        mapping: MappingId,
        offset: u64,
        current: u64,
        timeout: Duration,
    ) -> Result<Pending<Option<u64>>, OpError> {
        let m = self.check_range(mapping, offset, 8)?;
        let abs = m.offset + offset;
        if abs % 8 != 0 {
            return Err(OpError::Misaligned(abs));
        }
        self.byte_access(mapping)?;
        // A timeout beyond any program's life is no timeout (and no timer
        // an adapter would have to turn into a clock reading).
        let deadline = (timeout < FOREVER).then(|| now + timeout);
        let r = self.admit(OpKind::WaitWhile {
            mapping,
            offset: abs,
            current,
            deadline,
        });
        if let (Ok(id), Some(at)) = (&r, deadline) {
            self.ops.wake_at(*id, at);
        }
        self.pump(now);
        r.map(Pending::waited)
    }

    /// One step of a [`Client::wait_while`]: read the word; done if it
    /// changed or the deadline passed, else wait on its page.
    pub(crate) fn step_wait_while(
        &mut self,
        now: Instant,
        id: OpId,
        mapping: MappingId,
        offset: u64,
        current: u64,
        deadline: Option<Instant>,
    ) -> Step {
        let (wire, file) = match self.ready_mapping(id, mapping) {
            Err(e) => return Step::Done(Err(e)),
            Ok(None) => return Step::Pending,
            Ok(Some(x)) => x,
        };
        if deadline.is_some_and(|d| now >= d) {
            return Step::Done(Ok(Completion::Waited(None)));
        }
        if !self.lease_valid(now) {
            self.wait_lease(now, id);
            return Step::Pending;
        }
        let ps = self.conn.params().expect("mapped").page_size;
        let (p, inp) = (offset / ps, (offset % ps) as usize);
        let Some(value) = self
            .cache
            .get(file, p)
            .filter(|pg| pg.readable())
            .and_then(|pg| pg.data.as_slice().map(|d| word_at(d, inp)))
        else {
            self.cache.page(file, p).waiters.insert(id);
            self.request_pages(Some(id), wire, file, p, p + 1, false, None);
            return Step::Pending;
        };
        if value != current {
            return Step::Done(Ok(Completion::Waited(Some(value))));
        }
        // Woken by whatever changes the page, or by the deadline.
        self.cache.page(file, p).waiters.insert(id);
        Step::Pending
    }
}

/// The little-endian word at `at` of a page (8-byte aligned, so within it).
fn word_at(page: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&page[at..at + 8]);
    u64::from_le_bytes(w)
}
