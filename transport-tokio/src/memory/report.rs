//! How a failed access reaches the program: as an error from
//! [`MemoryMapping::checked`] (the default, [`FaultMode::Report`]), or as
//! `SIGBUS` ([`FaultMode::Signal`], what C programs of mapped files expect).

use rmmap_core::client::OpError;

use super::MemoryMapping;

/// What a thread's load or store does when its page cannot be served (the
/// client gave up reconnecting, was closed, or the mapping failed for
/// good), and how a lost session is reported. See the
/// [module docs](crate::memory#how-an-access-fails).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum FaultMode {
    /// The access completes without a signal, on memory that is not the
    /// file's: a page that was not in memory reads as zeros and a store into
    /// it goes nowhere (until the mapping works again and the page is
    /// fetched afresh); a mapping that failed for good is backed by memory
    /// that is not the file's (zeros, and what is stored there afterwards). The failure is recorded: [`MemoryMapping::checked`]
    /// returns it for every closure it overlapped, and
    /// [`MemoryMapping::last_fault_error`] says what it was. A lost session
    /// is recorded the same way while the access goes on with the server's
    /// bytes. The default: a Rust program cannot recover from `SIGBUS`
    /// soundly.
    #[default]
    Report,
    /// The faulting thread gets `SIGBUS` (`SI_QUEUE` for one failed fault or
    /// a lost session, `BUS_ADRERR` once the mapping failed for good), as a
    /// file mapping's thread does when its file shrank. What the C library
    /// uses.
    Signal,
}

impl MemoryMapping {
    /// How failed accesses are reported (see [`FaultMode`]).
    pub fn fault_mode(&self) -> FaultMode {
        self.state.mode()
    }

    /// Chooses how failed accesses are reported from now on. A fault that
    /// has already failed keeps the way it was reported.
    pub fn set_fault_mode(&self, mode: FaultMode) {
        self.state.set_mode(mode);
    }

    /// Runs `f` (which loads and stores through this mapping's atomics, its
    /// typed accessors or its pointer) and says whether every access it made
    /// was served: `Err` with the reason if, while it ran, a fault of the
    /// mapping failed, the session was lost (the error names the pages whose
    /// writes were lost), or the mapping failed for good; then what `f`
    /// read may be zeros that are not the file's, and what it stored may
    /// have gone nowhere. It also fails at once, without running `f`, on a
    /// mapping that failed for good.
    ///
    /// Pages of zeros left by earlier failed faults leave memory first, so
    /// `f`'s accesses to them fault afresh. The check covers every thread's
    /// accesses to the mapping, not only `f`'s: a closure that overlaps
    /// another thread's failed fault fails too, which errs on the safe side.
    /// On a worker of a multi-thread Tokio runtime `f` runs inside
    /// `block_in_place`, so that its faults cannot stall the runtime.
    /// Meaningful in [`FaultMode::Report`]; in [`FaultMode::Signal`] a failed
    /// access raises `SIGBUS` inside `f`.
    pub fn checked<R>(&self, f: impl FnOnce(&MemoryMapping) -> R) -> Result<R, OpError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        if self.state.has_filled() {
            let client = self.mapping.client();
            let _lock = client.shared().lock();
            self.state.drop_filled();
        }
        let before = self.state.failures();
        let r = self.off_worker(|| f(self));
        if self.state.failures() == before {
            return Ok(r);
        }
        Err(self
            .failure()
            .or_else(|| self.last_fault_error())
            .unwrap_or_else(|| OpError::Closed("a fault of the mapping failed".into())))
    }
}
