//! Reads and writes of a memory mapping that fail with an error, never
//! with SIGBUS.
//!
//! A load from a memory mapping that cannot be served (the server gone for
//! longer than the give-up time, the session lost) raises SIGBUS, which
//! ends a C program that has no handler. `mread`, `mwrite`, `rmmap_read`
//! and `rmmap_write` must return an error instead, so they copy with
//! `process_vm_readv` / `process_vm_writev` on this very process: the
//! kernel copies, and where a page is not in memory (or is write-protected,
//! for a write) it stops with `EFAULT` rather than fault, because the
//! mapping's userfaultfd only handles faults from user mode
//! (`UFFD_USER_MODE_ONLY`). The pages the copy did not reach are then
//! brought in through the client ([`MemoryMapping::fault_in`]), which
//! reports failures as errors, and the copy goes on. Coherence is the
//! memory's own: a page is in memory only while the client may serve it.
//!
//! Where `process_vm_readv` is refused (a seccomp filter), the copy faults
//! the pages in first and then uses a plain `memcpy`: a page that another
//! client takes away between the two faults again and is brought back as
//! for any load, and only a failure in that window raises SIGBUS.

use rmmap_tokio::{MemoryMapping, OpError};

/// Pages copied (and faulted in) per step: one remote `iovec` each.
const STEP_PAGES: usize = 256;
/// Rounds in a row that may copy nothing before the copy gives up (a
/// page keeps leaving memory as soon as it arrives).
const MAX_IDLE_ROUNDS: u32 = 1000;

/// The direction of a copy.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Direction {
    /// From the mapping into the caller's buffer.
    Out,
    /// From the caller's buffer into the mapping.
    In,
}

/// Copies the mapping's bytes at `offset` into `buf`.
pub(crate) async fn read(m: &MemoryMapping, offset: u64, buf: &mut [u8]) -> Result<(), OpError> {
    let (ptr, len) = (buf.as_mut_ptr(), buf.len());
    copy(m, offset, ptr, len, Direction::Out).await
}

/// Copies `data` into the mapping at `offset`.
pub(crate) async fn write(m: &MemoryMapping, offset: u64, data: &[u8]) -> Result<(), OpError> {
    if !m.is_writable() {
        return Err(OpError::ReadOnly);
    }
    // Never written through: the pointer is only handed to process_vm_writev
    // as the source, or to copy_nonoverlapping as the source.
    let (ptr, len) = (data.as_ptr().cast_mut(), data.len());
    copy(m, offset, ptr, len, Direction::In).await
}

async fn copy(
    m: &MemoryMapping,
    offset: u64,
    local: *mut u8,
    len: usize,
    dir: Direction,
) -> Result<(), OpError> {
    let out_of_range = || OpError::OutOfRange {
        offset,
        len: len as u64,
        mapping_len: m.len() as u64,
    };
    let start = usize::try_from(offset).map_err(|_| out_of_range())?;
    if start.checked_add(len).is_none_or(|end| end > m.len()) {
        return Err(out_of_range());
    }
    let page = m.page_size();
    let base = match dir {
        Direction::Out => m.as_ptr(),
        Direction::In => m.as_mut_ptr()?.cast_const(),
    } as usize;
    let mut done = 0;
    let mut idle = 0;
    let mut fault_first = false;
    while done < len {
        let at = start + done;
        // Up to STEP_PAGES pages, ending on a page boundary.
        let step_end = ((at / page + STEP_PAGES) * page).min(start + len);
        let step = step_end - at;
        let write = dir == Direction::In;
        if fault_first {
            m.fault_in(at as u64..step_end as u64, write).await?;
        }
        // SAFETY: `local + done .. + step` lies in the caller's buffer (done
        // + step <= len), and `base + at .. + step` in the mapping's memory
        // (at + step <= m.len()), which lives as long as `m`.
        let copied = match unsafe { kernel_copy(local.add(done), base + at, step, page, dir) } {
            Ok(n) => n,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                m.fault_in(at as u64..step_end as u64, write).await?;
                // SAFETY: as above; the pages were just brought in, and a
                // page taken away since faults and is brought back.
                unsafe { plain_copy(local.add(done), base + at, step, dir) };
                step
            }
            Err(e) => {
                return Err(OpError::Closed(format!(
                    "copying {} the mapping's memory failed: {e}",
                    if write { "into" } else { "out of" }
                )));
            }
        };
        done += copied;
        fault_first = copied < step;
        idle = if copied == 0 { idle + 1 } else { 0 };
        if idle > MAX_IDLE_ROUNDS {
            return Err(OpError::Busy(0));
        }
    }
    Ok(())
}

/// Copies `len` bytes between `local` and this process's memory at
/// `remote` with `process_vm_readv`/`process_vm_writev`, one remote
/// `iovec` per page, so that it stops at the first page not in memory (or
/// write-protected, for a write). Returns the bytes copied; a copy that
/// stops at its first page returns 0.
///
/// # Safety
/// `local .. local + len` must be valid for the direction's access, and
/// `remote .. remote + len` must be mapped memory of this process.
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
    // SAFETY: both iovec arrays are valid for their lengths; the caller
    // vouches for the memory they describe. The kernel checks every access
    // and fails with EFAULT instead of faulting.
    let n = unsafe {
        match dir {
            Direction::Out => libc::process_vm_readv(
                pid,
                &local_iov,
                1,
                remote_iov.as_ptr(),
                remote_iov.len() as libc::c_ulong,
                0,
            ),
            Direction::In => libc::process_vm_writev(
                pid,
                &local_iov,
                1,
                remote_iov.as_ptr(),
                remote_iov.len() as libc::c_ulong,
                0,
            ),
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

/// Copies with loads and stores (faults served by the mapping's fault
/// thread).
///
/// # Safety
/// As for [`kernel_copy`], and the two ranges must not overlap.
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
