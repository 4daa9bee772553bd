//! The core's [`MemoryBacking`] over a userfaultfd region. The client calls
//! it synchronously, in protocol order, under its lock: from the driver
//! while it handles frames, or from the fault thread inside
//! `memory_fault`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rmmap_core::client::{MemoryBacking, OpError};

use super::FaultMode;
use super::uffd::Region;

/// What the backing, the fault thread and the application handle share.
#[derive(Debug)]
pub(crate) struct MemoryState {
    pub(crate) region: Region,
    /// Only touched under the client's lock (by the core through the
    /// backing, or by the fault thread failing the mapping), so never
    /// contended; the mutex only makes that checkable.
    pages: Mutex<Pages>,
    /// Why the mapping failed for good.
    failure: Mutex<Option<OpError>>,
    /// Why the last failed fault failed.
    last_fault_error: Mutex<Option<OpError>>,
    /// How many times a page left memory (another client's write or
    /// atomic invalidated it) or the mapping failed: what
    /// `MemoryMapping::wait_while` waits on.
    changes: Mutex<u64>,
    changed: Condvar,
    /// [`FaultMode`] as a byte (0 `Report`, 1 `Signal`).
    mode: AtomicU8,
    /// Faults that failed (and losses reported) so far, and failures for
    /// good: what `MemoryMapping::checked` compares before and after.
    failures: AtomicU64,
    /// Some page is [`Held::Filled`].
    any_filled: AtomicBool,
}

#[derive(Debug)]
struct Pages {
    held: Vec<Held>,
    /// The present pages' bytes when the mapping failed, for the captures
    /// the client may still make (reading the region would raise SIGBUS).
    saved: BTreeMap<u64, Vec<u8>>,
}

/// A page as the kernel holds it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Held {
    Absent,
    Protected,
    Writable,
    /// A page of zeros put in for a fault that failed in
    /// [`FaultMode::Report`], unknown to the core (which holds it absent):
    /// dropped when the mapping works again.
    Filled,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryState {
    pub(crate) fn new(region: Region) -> Self {
        let n = region.len() / region.page();
        MemoryState {
            region,
            pages: Mutex::new(Pages {
                held: vec![Held::Absent; n],
                saved: BTreeMap::new(),
            }),
            failure: Mutex::new(None),
            last_fault_error: Mutex::new(None),
            changes: Mutex::new(0),
            changed: Condvar::new(),
            mode: AtomicU8::new(0),
            failures: AtomicU64::new(0),
            any_filled: AtomicBool::new(false),
        }
    }

    pub(crate) fn mode(&self) -> FaultMode {
        match self.mode.load(Ordering::Acquire) {
            0 => FaultMode::Report,
            _ => FaultMode::Signal,
        }
    }

    pub(crate) fn set_mode(&self, mode: FaultMode) {
        let b = match mode {
            FaultMode::Report => 0,
            FaultMode::Signal => 1,
        };
        self.mode.store(b, Ordering::Release);
    }

    /// Failed faults, reported losses and failures for good so far.
    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    pub(crate) fn count_failure(&self) {
        self.failures.fetch_add(1, Ordering::SeqCst);
    }

    /// A fault failed in [`FaultMode::Report`]: records why, and lets the
    /// faulting thread go on. A loss report needs nothing more (the access
    /// is retried and fetches the server's bytes); an absent page gets a
    /// page of zeros (a store into it goes nowhere); a write to a page held
    /// read-only, which nothing can take, fails the mapping. Call with the
    /// client's lock held.
    pub(crate) fn report(&self, index: u64, error: OpError) {
        self.set_last_fault_error(error.clone());
        self.count_failure();
        if self.region.failed() {
            let _ = self.region.wake(Some(index));
            return;
        }
        match (&error, self.held(index)) {
            (OpError::SessionLost(_), _) => {
                let _ = self.region.wake(Some(index));
            }
            (_, Held::Absent) => {
                let zeros = vec![0u8; self.region.page()];
                match self.region.install(index, &zeros, true) {
                    Ok(()) => {
                        self.set(index, Held::Filled);
                        self.any_filled.store(true, Ordering::Release);
                    }
                    Err(e) => self.fail(OpError::Closed(format!(
                        "the memory mapping broke: filling page {index} failed: {e}"
                    ))),
                }
            }
            _ => self.fail(error),
        }
    }

    /// Whether a page of zeros was put in for a failed fault and is still
    /// there.
    pub(crate) fn has_filled(&self) -> bool {
        self.any_filled.load(Ordering::Acquire)
    }

    /// Drops the pages of zeros put in for failed faults, so that the next
    /// access to each faults again. Call with the client's lock held.
    pub(crate) fn drop_filled(&self) {
        if self.region.failed() || !self.any_filled.swap(false, Ordering::AcqRel) {
            return;
        }
        let filled: Vec<u64> = {
            let pages = lock(&self.pages);
            (0..pages.held.len() as u64)
                .filter(|i| pages.held[*i as usize] == Held::Filled)
                .collect()
        };
        for i in filled {
            if let Err(e) = self.region.zap(i) {
                return self.fail(OpError::Closed(format!(
                    "the memory mapping broke: dropping filled page {i} failed: {e}"
                )));
            }
            self.set(i, Held::Absent);
        }
    }

    /// The number of changes so far (see [`MemoryState::wait_change`]).
    pub(crate) fn changes(&self) -> u64 {
        *lock(&self.changes)
    }

    /// A page left memory, or the mapping failed: wakes the waiters.
    fn note_change(&self) {
        *lock(&self.changes) += 1;
        self.changed.notify_all();
    }

    /// Waits until the count of changes passes `seen`, at most `timeout`.
    pub(crate) fn wait_change(&self, seen: u64, timeout: Duration) {
        let g = lock(&self.changes);
        let _ = self
            .changed
            .wait_timeout_while(g, timeout, |n| *n == seen)
            .unwrap_or_else(|e| e.into_inner());
    }

    /// Why the mapping failed for good.
    pub(crate) fn failure(&self) -> Option<OpError> {
        lock(&self.failure).clone()
    }

    /// Why the last failed fault failed.
    pub(crate) fn last_fault_error(&self) -> Option<OpError> {
        lock(&self.last_fault_error).clone()
    }

    pub(crate) fn set_last_fault_error(&self, e: OpError) {
        *lock(&self.last_fault_error) = Some(e);
    }

    /// Fails the mapping for good: keeps the present pages' bytes for the
    /// client, then makes every access read zeros ([`FaultMode::Report`]) or
    /// raise SIGBUS ([`FaultMode::Signal`]). Call with the
    /// client's lock held.
    pub(crate) fn fail(&self, error: OpError) {
        if self.region.failed() {
            return;
        }
        let mut pages = lock(&self.pages);
        let page = self.region.page();
        let present: Vec<u64> = (0..pages.held.len() as u64)
            .filter(|i| matches!(pages.held[*i as usize], Held::Protected | Held::Writable))
            .collect();
        for i in present {
            let mut buf = vec![0u8; page];
            self.region.copy_out(i, &mut buf);
            pages.saved.insert(i, buf);
        }
        drop(pages);
        lock(&self.failure).get_or_insert(error);
        self.count_failure();
        self.note_change();
        if let Err(e) = self.region.fail(self.mode() == FaultMode::Report) {
            // Without the replacement, wake the waiters anyway: their
            // faults fail and they get SIGBUS from the fault thread.
            tracing::error!(error = %e, "cannot replace a failed memory mapping");
            let _ = self.region.wake(None);
        }
    }

    fn set(&self, index: u64, held: Held) {
        if let Some(p) = lock(&self.pages).held.get_mut(index as usize) {
            *p = held;
        }
    }

    fn held(&self, index: u64) -> Held {
        lock(&self.pages)
            .held
            .get(index as usize)
            .copied()
            .unwrap_or(Held::Absent)
    }
}

/// The backing the core owns for one memory mapping.
pub(crate) struct UffdMemory {
    state: Arc<MemoryState>,
}

impl UffdMemory {
    pub(crate) fn new(state: Arc<MemoryState>) -> Self {
        UffdMemory { state }
    }

    /// An operation the kernel refused would leave memory out of step with
    /// the protocol: the mapping fails instead.
    fn check(&self, what: &str, index: u64, r: std::io::Result<()>) {
        if let Err(e) = r {
            let msg = format!("{what} page {index} failed: {e}");
            tracing::error!(%msg, "memory mapping");
            self.state
                .fail(OpError::Closed(format!("the memory mapping broke: {msg}")));
        }
    }
}

impl MemoryBacking for UffdMemory {
    fn install(&mut self, index: u64, data: &[u8], writable: bool) {
        if self.state.region.failed() {
            return;
        }
        let r = self.state.region.install(index, data, writable);
        let held = if writable {
            Held::Writable
        } else {
            Held::Protected
        };
        self.state.set(index, held);
        self.check("installing", index, r);
    }

    fn protect(&mut self, index: u64) {
        if self.state.region.failed() || self.state.held(index) == Held::Absent {
            return;
        }
        let r = self.state.region.protect(index, true);
        self.state.set(index, Held::Protected);
        self.check("write-protecting", index, r);
    }

    fn unprotect(&mut self, index: u64) {
        if self.state.region.failed() {
            return;
        }
        let r = self.state.region.protect(index, false);
        self.state.set(index, Held::Writable);
        self.check("unprotecting", index, r);
    }

    fn zap(&mut self, index: u64) {
        lock(&self.state.pages).saved.remove(&index);
        if self.state.region.failed() {
            return;
        }
        let r = self.state.region.zap(index);
        self.state.set(index, Held::Absent);
        self.state.note_change();
        self.check("dropping", index, r);
    }

    fn read(&mut self, index: u64, out: &mut [u8]) {
        if self.state.region.failed() {
            match lock(&self.state.pages).saved.get(&index) {
                Some(b) => out.copy_from_slice(&b[..out.len()]),
                None => out.fill(0),
            }
            return;
        }
        if self.state.held(index) == Held::Absent {
            // Reading it would wait on our own fault.
            tracing::error!(index, "the client read a page that is not in memory");
            out.fill(0);
            return;
        }
        self.state.region.copy_out(index, out);
    }

    fn fail(&mut self, error: &OpError) {
        tracing::warn!(%error, mode = ?self.state.mode(), "memory mapping failed for good");
        self.state.fail(error.clone());
    }
}
