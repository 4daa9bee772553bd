//! Copying reads and writes of a memory mapping: the same coherent bytes
//! as loads and stores, but a failure is an error, never SIGBUS.
//!
//! The copy is made by the kernel (`process_vm_readv` /
//! `process_vm_writev` on this very process) while the client's lock is
//! held. Under the lock no page changes state (the core installs,
//! protects and zaps pages only under it), and the kernel's own access to a
//! page that is not in memory, or is write-protected for a write, stops
//! with `EFAULT` instead of faulting, because the userfaultfd is
//! user-mode-only. So what the copy reaches is served as a load or store
//! would be at that instant, and for the rest the lock is released and the
//! pages are brought in through the client (`memory_fault`, which reports
//! failures as errors), then the copy goes on.
//!
//! Under contention another client's request can take a page away again
//! before the copy gets the lock (a grant and the recall queued behind it
//! often arrive together). After a few such rounds on one step, the step is
//! copied as loads and stores would (below), which make progress as any
//! access does.
//!
//! Where the userfaultfd is not user-mode-only (kernels before 5.11) the
//! kernel's accesses would wait for the fault thread, which needs the lock:
//! there the pages are brought in first and copied without the lock, and a
//! page taken away in between faults as a load would (a failure in that
//! window raises SIGBUS). The same happens where a seccomp filter refuses
//! `process_vm_readv`.

#![allow(unsafe_code)]

use std::ops::Range;

use rmmap_core::client::OpError;

use super::MemoryMapping;
use crate::client::MappingInner;

/// Pages copied per step (and held under the lock): one remote `iovec`
/// each.
const STEP_PAGES: usize = 64;
/// Rounds in a row in which a step's pages left memory before the copy
/// reached them, before the step is copied with loads and stores.
const CONTENDED_ROUNDS: u32 = 4;

/// The direction of a copy.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Direction {
    /// From the mapping into the caller's buffer.
    Out,
    /// From the caller's buffer into the mapping.
    In,
}

impl MemoryMapping {
    /// Copies the bytes at `offset` into `buf`: what loads would read, but a
    /// failure (disconnected longer than `give_up_after`, the session lost,
    /// the client closed) is an error instead of SIGBUS. For callers that
    /// cannot handle SIGBUS, such as the C library's `mread`.
    pub async fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), OpError> {
        let (ptr, len) = (buf.as_mut_ptr(), buf.len());
        self.copy(offset, ptr, len, Direction::Out).await
    }

    /// Copies `data` into the memory at `offset`: what stores would do, but
    /// a failure is an error instead of SIGBUS. Fails on a read-only
    /// mapping.
    pub async fn write(&self, offset: u64, data: &[u8]) -> Result<(), OpError> {
        if !self.writable {
            return Err(OpError::ReadOnly);
        }
        // Only ever read through: the source of the copy.
        let (ptr, len) = (data.as_ptr().cast_mut(), data.len());
        self.copy(offset, ptr, len, Direction::In).await
    }

    async fn copy(
        &self,
        offset: u64,
        local: *mut u8,
        len: usize,
        dir: Direction,
    ) -> Result<(), OpError> {
        let out_of_range = || OpError::OutOfRange {
            offset,
            len: len as u64,
            mapping_len: self.len as u64,
        };
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        if start.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(out_of_range());
        }
        let page = self.page_size();
        let base = self.state.region.base();
        let write = dir == Direction::In;
        let mut kernel = self.kernel_faults_fail;
        let mut done = 0;
        let mut contended = 0;
        while done < len {
            let at = start + done;
            let end = ((at / page + STEP_PAGES) * page).min(start + len);
            let step = end - at;
            let copied = if kernel && contended < CONTENDED_ROUNDS {
                let r = {
                    let client = self.client();
                    let _held = client.shared().lock();
                    // SAFETY: `local + done .. + step` lies in the caller's
                    // buffer (done + step <= len), `base + at .. + step` in
                    // the region, which lives as long as `self`.
                    unsafe { kernel_copy(local.add(done), base + at, step, page, dir) }
                };
                match r {
                    Ok(n) => n,
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                        kernel = false;
                        continue;
                    }
                    Err(e) => {
                        return Err(OpError::Closed(format!(
                            "copying {} the mapping's memory failed: {e}",
                            if write { "into" } else { "out of" }
                        )));
                    }
                }
            } else {
                self.fault_in(at as u64..end as u64, write).await?;
                // SAFETY: as above; the pages were just brought in, and a
                // page taken away since faults in again like any access.
                unsafe { plain_copy(local.add(done), base + at, step, dir) };
                step
            };
            done += copied;
            contended = if copied == 0 { contended + 1 } else { 0 };
            if copied < step {
                // The page at `done` is not in memory (or not writable):
                // bring it and what follows in, then copy on.
                let at = start + done;
                self.fault_in(at as u64..end as u64, write).await?;
            }
        }
        Ok(())
    }

    /// Brings the pages under `range` (offsets in the mapping) into memory
    /// in the state an access needs (writable with `write`), as faults
    /// would, but reports a failure as an error.
    async fn fault_in(&self, range: Range<u64>, write: bool) -> Result<(), OpError> {
        let page = self.page_size() as u64;
        loop {
            // On the member the mapping is on now; after a failure there,
            // again wherever it moved (a cluster client's mapping).
            let at = self.mapping.current();
            match fault_in_at(&at, page, range.clone(), write).await {
                Err(e) => self.mapping.after_fault(&at, e).await?,
                Ok(()) => return Ok(()),
            }
        }
    }
}

/// Brings the pages of `range` into memory through the mapping `at`.
async fn fault_in_at(
    at: &MappingInner,
    page: u64,
    range: Range<u64>,
    write: bool,
) -> Result<(), OpError> {
    let (id, shared) = (at.mapped.mapping, at.client.shared());
    let mut waiting = Vec::new();
    for index in range.start / page..range.end.div_ceil(page) {
        let (pending, rx, _) = shared.register(|c, now| c.memory_fault(now, id, index, write))?;
        waiting.push((pending, rx));
    }
    shared.wake_driver();
    for (pending, rx) in waiting {
        pending.finish(rx.await.unwrap_or_else(|_| Err(shared.stopped())))?;
    }
    Ok(())
}

/// Copies `len` bytes between `local` and this process's memory at
/// `remote` with `process_vm_readv`/`process_vm_writev`, one remote
/// `iovec` per page, so that it stops at the first page it cannot access.
/// Returns the bytes copied (0 when it stops at the first page).
///
/// # Safety
/// `local .. local + len` must be valid for the direction's access, and
/// `remote .. remote + len` mapped memory of this process.
unsafe fn kernel_copy(
    local: *mut u8,
    remote: usize,
    len: usize,
    page: usize,
    dir: Direction,
) -> std::io::Result<usize> {
    let local_iov = libc::iovec {
        iov_base: local.cast(),
        iov_len: len,
    };
    let mut remote_iov = Vec::with_capacity(STEP_PAGES + 1);
    let mut at = remote;
    while at < remote + len {
        let end = ((at / page + 1) * page).min(remote + len);
        remote_iov.push(libc::iovec {
            iov_base: at as *mut libc::c_void,
            iov_len: end - at,
        });
        at = end;
    }
    let pid = std::process::id() as libc::pid_t;
    let count = remote_iov.len() as libc::c_ulong;
    // SAFETY: both iovec arrays are valid for their lengths and the caller
    // vouches for the memory they describe; the kernel checks every access
    // and fails with EFAULT instead of faulting.
    let n = unsafe {
        match dir {
            Direction::Out => {
                libc::process_vm_readv(pid, &local_iov, 1, remote_iov.as_ptr(), count, 0)
            }
            Direction::In => {
                libc::process_vm_writev(pid, &local_iov, 1, remote_iov.as_ptr(), count, 0)
            }
        }
    };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EFAULT) {
        Ok(0)
    } else {
        Err(e)
    }
}

/// Copies with loads and stores.
///
/// # Safety
/// As for [`kernel_copy`]; the two ranges do not overlap.
unsafe fn plain_copy(local: *mut u8, remote: usize, len: usize, dir: Direction) {
    let remote = remote as *mut u8;
    // SAFETY: the caller vouches for both ranges.
    unsafe {
        match dir {
            Direction::Out => std::ptr::copy_nonoverlapping(remote, local, len),
            Direction::In => std::ptr::copy_nonoverlapping(local, remote, len),
        }
    }
}
