//! The crate's only unsafe code: userfaultfd, `mmap` and signals behind a
//! small safe interface.
//!
//! Raw `ioctl`s rather than the `userfaultfd` crate (0.9), because that
//! crate cannot install a page write-protected in one step
//! (`UFFDIO_COPY_MODE_WP`: copying first and protecting after would let
//! another thread write the page in between), tries `/dev/userfaultfd`
//! before the unprivileged system call (so a root-only device node hides a
//! working `UFFD_USER_MODE_ONLY`), and reports a missing feature as a bare
//! `EINVAL`. The kernel ABI used here (`include/uapi/linux/userfaultfd.h`)
//! is small and stable.
//!
//! Every address handed to the kernel lies inside a [`Region`] this module
//! mapped itself, which is what makes the wrappers safe to call.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use libc::{_IO, _IOR, _IOWR, Ioctl, c_int, c_void};

// ---- the kernel ABI ----

const UFFD_API: u64 = 0xAA;
const UFFDIO: u32 = 0xAA;
const UFFD_USER_MODE_ONLY: c_int = 1;

/// Faults report `UFFD_PAGEFAULT_FLAG_WP`: write-protection works on
/// anonymous memory (Linux 5.7 on x86-64).
pub(crate) const FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
/// Faults carry the faulting thread's id (Linux 4.14).
pub(crate) const FEATURE_THREAD_ID: u64 = 1 << 8;
/// Faults carry the exact address, not the page's (Linux 5.18).
pub(crate) const FEATURE_EXACT_ADDRESS: u64 = 1 << 11;

const REGISTER_MODE_MISSING: u64 = 1 << 0;
const REGISTER_MODE_WP: u64 = 1 << 1;
const COPY_MODE_WP: u64 = 1 << 1;
const WRITEPROTECT_MODE_WP: u64 = 1 << 0;
const EVENT_PAGEFAULT: u8 = 0x12;
/// The access was a write.
pub(crate) const PAGEFAULT_FLAG_WRITE: u64 = 1 << 0;
const MSG_SIZE: usize = 32;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

const UFFDIO_API: Ioctl = _IOWR::<UffdioApi>(UFFDIO, 0x3F);
const UFFDIO_REGISTER: Ioctl = _IOWR::<UffdioRegister>(UFFDIO, 0x00);
const UFFDIO_WAKE: Ioctl = _IOR::<UffdioRange>(UFFDIO, 0x02);
const UFFDIO_COPY: Ioctl = _IOWR::<UffdioCopy>(UFFDIO, 0x03);
const UFFDIO_WRITEPROTECT: Ioctl = _IOWR::<UffdioWriteprotect>(UFFDIO, 0x06);
const USERFAULTFD_IOC_NEW: Ioctl = _IO(UFFDIO, 0x00);
/// The ioctls a registered range must allow (bits are the ioctl numbers).
const NEEDED_IOCTLS: u64 = (1 << 0x02) | (1 << 0x03) | (1 << 0x06);

fn cvt(r: c_int) -> io::Result<c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The OS page size.
pub(crate) fn os_page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

// ---- opening a userfaultfd ----

/// How a userfaultfd was obtained.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    /// `userfaultfd(UFFD_USER_MODE_ONLY)`: no privilege needed (Linux 5.11).
    UserModeOnly,
    /// `userfaultfd(0)`: privileged, or `vm.unprivileged_userfaultfd = 1`.
    Syscall,
    /// `ioctl(USERFAULTFD_IOC_NEW)` on `/dev/userfaultfd` (Linux 6.1).
    Device,
}

/// A userfaultfd (non-blocking, close-on-exec).
#[derive(Debug)]
pub(crate) struct Uffd {
    fd: OwnedFd,
}

/// Why no userfaultfd could be had: what each way said.
#[derive(Debug)]
pub(crate) struct OpenFailed {
    pub(crate) syscall: io::Error,
    pub(crate) device: io::Error,
}

impl Uffd {
    /// Opens one: the unprivileged system call first, then `/dev/userfaultfd`.
    pub(crate) fn open() -> Result<(Uffd, Opened), OpenFailed> {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        let syscall = match Self::syscall(flags | UFFD_USER_MODE_ONLY) {
            Ok(u) => return Ok((u, Opened::UserModeOnly)),
            Err(e) => e,
        };
        // EINVAL: a kernel before 5.11, which has no user-mode-only flag.
        if syscall.raw_os_error() == Some(libc::EINVAL)
            && let Ok(u) = Self::syscall(flags)
        {
            return Ok((u, Opened::Syscall));
        }
        match Self::device() {
            Ok(u) => Ok((u, Opened::Device)),
            Err(device) => Err(OpenFailed { syscall, device }),
        }
    }

    fn syscall(flags: c_int) -> io::Result<Uffd> {
        // SAFETY: userfaultfd takes flags only; a non-negative result is a
        // new file descriptor that we own.
        let r = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        let fd = cvt(c_int::try_from(r).unwrap_or(-1))?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Uffd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Through `/dev/userfaultfd` (also used by tests).
    pub(crate) fn device() -> io::Result<Uffd> {
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/userfaultfd")?;
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY;
        // SAFETY: USERFAULTFD_IOC_NEW takes flags by value and returns a
        // new descriptor that we own.
        let fd = cvt(unsafe { libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW, flags) })?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Uffd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The `UFFDIO_API` handshake (once per descriptor): enables `features`
    /// and returns every feature the kernel offers. Asking for nothing
    /// probes.
    pub(crate) fn api(&self, features: u64) -> io::Result<u64> {
        let mut api = UffdioApi {
            api: UFFD_API,
            features,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes one `uffdio_api`, which we own.
        cvt(unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_API, &mut api) })?;
        Ok(api.features)
    }

    fn range_ioctl<T>(&self, request: Ioctl, arg: &mut T) -> io::Result<()> {
        loop {
            // SAFETY: `request` is one of the UFFDIO ioctls taking a `T`;
            // the addresses inside `arg` lie in a Region we mapped (the
            // callers below guarantee it).
            match cvt(unsafe { libc::ioctl(self.fd.as_raw_fd(), request, arg as *mut T) }) {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
                r => return r.map(drop),
            }
        }
    }
}

// ---- the region ----

/// One uffd-registered fault event.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Fault {
    /// The faulting address (exact, or the page's without
    /// `FEATURE_EXACT_ADDRESS`).
    pub(crate) addr: u64,
    /// `PAGEFAULT_FLAG_*`.
    pub(crate) flags: u64,
    /// The faulting thread.
    pub(crate) tid: u32,
}

/// What woke a fault thread (any may be set; none after a timeout).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Woke {
    /// Fault events are waiting.
    pub(crate) faults: bool,
    /// `stop` was signalled.
    pub(crate) stop: bool,
    /// `done` was signalled.
    pub(crate) done: bool,
}

/// An anonymous private mapping registered with a userfaultfd for missing
/// and write-protect faults, in whole pages of `page` bytes. Unmapped on
/// drop.
#[derive(Debug)]
pub(crate) struct Region {
    uffd: Uffd,
    base: usize,
    len: usize,
    page: usize,
    writable: bool,
    /// Replaced by SIGBUS memory: nothing here may be read any more.
    failed: AtomicBool,
}

/// The right to a mutable view of a region: made once per region, by
/// [`Region::new`].
#[derive(Debug)]
pub(crate) struct Exclusive(());

impl Region {
    /// Maps `len` bytes (a multiple of `page`, itself a multiple of the OS
    /// page), readable and, if `writable`, writable, and registers them
    /// with `uffd` (already past `UFFDIO_API`).
    pub(crate) fn new(
        uffd: Uffd,
        len: usize,
        page: usize,
        writable: bool,
    ) -> io::Result<(Region, Exclusive)> {
        assert!(len > 0 && len % page == 0 && page % os_page_size() == 0);
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let region = Region {
            uffd,
            base: p as usize,
            len,
            page,
            writable,
            failed: AtomicBool::new(false),
        };
        // A forked child would get a private, incoherent copy: give it none.
        // Huge pages would defeat per-page installs.
        region.madvise(0, len, libc::MADV_DONTFORK)?;
        let _ = region.madvise(0, len, libc::MADV_NOHUGEPAGE);
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: region.base as u64,
                len: len as u64,
            },
            mode: REGISTER_MODE_MISSING | REGISTER_MODE_WP,
            ioctls: 0,
        };
        region.uffd.range_ioctl(UFFDIO_REGISTER, &mut reg)?;
        if reg.ioctls & NEEDED_IOCTLS != NEEDED_IOCTLS {
            return Err(io::Error::other(format!(
                "the registered range does not allow UFFDIO_COPY, UFFDIO_WAKE and UFFDIO_WRITEPROTECT (ioctls {:#x})",
                reg.ioctls
            )));
        }
        Ok((region, Exclusive(())))
    }

    /// The first byte.
    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// The length in bytes (whole pages).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The page size the region is handled in.
    pub(crate) fn page(&self) -> usize {
        self.page
    }

    /// Whether [`Region::fail`] ran.
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Start and length of page `index`, checked.
    fn page_range(&self, index: u64) -> (usize, usize) {
        let off = usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_mul(self.page))
            .filter(|o| *o < self.len)
            .unwrap_or_else(|| panic!("page {index} is outside the region"));
        (self.base + off, self.page)
    }

    fn madvise(&self, off: usize, len: usize, advice: c_int) -> io::Result<()> {
        debug_assert!(off + len <= self.len);
        // SAFETY: the range lies inside our own mapping.
        cvt(unsafe { libc::madvise((self.base + off) as *mut c_void, len, advice) }).map(drop)
    }

    /// Puts `data` in page `index` (absent), write-protected unless
    /// `writable`, and wakes the threads waiting on it. A page that is
    /// unexpectedly present is dropped and replaced.
    pub(crate) fn install(&self, index: u64, data: &[u8], writable: bool) -> io::Result<()> {
        let (start, len) = self.page_range(index);
        let padded;
        let src = if data.len() >= len {
            &data[..len]
        } else {
            padded = [data, &vec![0u8; len - data.len()]].concat();
            &padded[..]
        };
        let mut done = 0usize;
        let mut retried = false;
        while done < len {
            let mut copy = UffdioCopy {
                dst: (start + done) as u64,
                src: src[done..].as_ptr() as u64,
                len: (len - done) as u64,
                mode: if writable { 0 } else { COPY_MODE_WP },
                copy: 0,
            };
            // SAFETY: the destination lies in our region; the source is a
            // live slice of `len - done` bytes.
            let r = cvt(unsafe { libc::ioctl(self.uffd.fd.as_raw_fd(), UFFDIO_COPY, &mut copy) });
            match r {
                Ok(_) => done = len,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    done += usize::try_from(copy.copy).unwrap_or(0);
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && !retried => {
                    retried = true;
                    self.madvise(start - self.base, len, libc::MADV_DONTNEED)?;
                    done = 0;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Write-protects page `index` (`on`), or removes the protection and
    /// wakes the threads blocked writing it.
    pub(crate) fn protect(&self, index: u64, on: bool) -> io::Result<()> {
        let (start, len) = self.page_range(index);
        let mut wp = UffdioWriteprotect {
            range: UffdioRange {
                start: start as u64,
                len: len as u64,
            },
            mode: if on { WRITEPROTECT_MODE_WP } else { 0 },
        };
        self.uffd.range_ioctl(UFFDIO_WRITEPROTECT, &mut wp)
    }

    /// Drops page `index`: the next access faults.
    pub(crate) fn zap(&self, index: u64) -> io::Result<()> {
        let (start, len) = self.page_range(index);
        self.madvise(start - self.base, len, libc::MADV_DONTNEED)
    }

    /// Wakes the threads waiting on page `index` (or on every page): they
    /// retry the access, which faults again if the page is still not there.
    pub(crate) fn wake(&self, index: Option<u64>) -> io::Result<()> {
        let (start, len) = match index {
            Some(i) => self.page_range(i),
            None => (self.base, self.len),
        };
        let mut range = UffdioRange {
            start: start as u64,
            len: len as u64,
        };
        self.uffd.range_ioctl(UFFDIO_WAKE, &mut range)
    }

    /// Copies page `index` into `out`. The caller knows the page is
    /// present (else this thread would wait on its own fault); after
    /// [`Region::fail`] it reads zeros.
    pub(crate) fn copy_out(&self, index: u64, out: &mut [u8]) {
        let (start, len) = self.page_range(index);
        let n = len.min(out.len());
        if self.failed() {
            out[..n].fill(0);
            return;
        }
        // SAFETY: `start..start + n` lies in our mapping, which lives as
        // long as `self`; the bytes are plain memory (volatile would gain
        // nothing: the page is write-protected while the client reads it).
        unsafe { std::ptr::copy_nonoverlapping(start as *const u8, out.as_mut_ptr(), n) };
    }

    /// Makes every access fail with SIGBUS from now on (or, with `zeros`,
    /// read zeros and write into memory nobody reads): the range becomes a
    /// shared mapping of an empty memfd (of one `len` bytes long, with
    /// `zeros`), which also ends the userfaultfd registration, then every
    /// thread waiting on a fault is woken to retry into it.
    pub(crate) fn fail(&self, zeros: bool) -> io::Result<()> {
        if self.failed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // SAFETY: a constant name and flags; the result is a fresh fd.
        let fd = cvt(unsafe { libc::memfd_create(c"rmmap-failed".as_ptr(), libc::MFD_CLOEXEC) })?;
        // SAFETY: `fd` is fresh and ours.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        if zeros {
            let len = libc::off_t::try_from(self.len).map_err(|_| io::ErrorKind::InvalidInput)?;
            // SAFETY: `memfd` is ours; growing it only adds zeros.
            cvt(unsafe { libc::ftruncate(memfd.as_raw_fd(), len) })?;
        }
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: MAP_FIXED replaces exactly our own range; nothing outside
        // it is touched, and every access to it was already checked.
        let p = unsafe {
            libc::mmap(
                self.base as *mut c_void,
                self.len,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED,
                memfd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        self.wake(None)
    }

    /// Waits for fault events, `stop` or `done`, at most `timeout`.
    pub(crate) fn wait(
        &self,
        stop: &EventFd,
        done: &EventFd,
        timeout: Option<std::time::Duration>,
    ) -> io::Result<Woke> {
        let pollfd = |fd: &OwnedFd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = [pollfd(&self.uffd.fd), pollfd(&stop.fd), pollfd(&done.fd)];
        let ms = timeout.map_or(-1, |t| {
            c_int::try_from(t.as_millis().max(1)).unwrap_or(c_int::MAX)
        });
        // SAFETY: `fds` is a live array of three pollfds.
        match cvt(unsafe { libc::poll(fds.as_mut_ptr(), 3, ms) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Woke::default()),
            Err(e) => Err(e),
            Ok(_) => {
                let bad = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
                if fds[0].revents & bad != 0 {
                    return Err(io::Error::other(format!(
                        "the userfaultfd reported poll events {:#x}",
                        fds[0].revents
                    )));
                }
                Ok(Woke {
                    faults: fds[0].revents & libc::POLLIN != 0,
                    stop: fds[1].revents != 0,
                    done: fds[2].revents != 0,
                })
            }
        }
    }

    /// Reads the pending page faults (none when there are none).
    pub(crate) fn read_faults(&self, buf: &mut [u8]) -> io::Result<Vec<Fault>> {
        let n = buf.len() / MSG_SIZE * MSG_SIZE;
        // SAFETY: reads at most `n` bytes into our buffer.
        let r = unsafe { libc::read(self.uffd.fd.as_raw_fd(), buf.as_mut_ptr().cast(), n) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        let u64_at = |m: &[u8], o: usize| u64::from_ne_bytes(m[o..o + 8].try_into().expect("8"));
        Ok(buf[..r as usize]
            .chunks_exact(MSG_SIZE)
            .filter(|m| m[0] == EVENT_PAGEFAULT)
            .map(|m| Fault {
                flags: u64_at(m, 8),
                addr: u64_at(m, 16),
                tid: u32::from_ne_bytes(m[24..28].try_into().expect("4")),
            })
            .collect())
    }

    /// The first `len` bytes as a slice.
    pub(crate) fn bytes(&self, len: usize) -> &[u8] {
        assert!(len <= self.len);
        // SAFETY: the mapping is readable and lives as long as `self`.
        // Loads fault in missing pages; the contents may change when another
        // client writes (see the module docs of `memory`).
        unsafe { std::slice::from_raw_parts(self.base as *const u8, len) }
    }

    /// The first `len` bytes as a mutable slice, for the holder of the
    /// region's [`Exclusive`] token.
    pub(crate) fn bytes_mut<'a>(&'a self, len: usize, _token: &'a mut Exclusive) -> &'a mut [u8] {
        assert!(len <= self.len && self.writable);
        // SAFETY: as for `bytes`; the token is unique per region and
        // borrowed mutably, so no other view of this code's making exists.
        unsafe { std::slice::from_raw_parts_mut(self.base as *mut u8, len) }
    }

    /// The first `len` bytes as atomic bytes: sound however the contents
    /// change underneath.
    pub(crate) fn atomic_bytes(&self, len: usize) -> &[AtomicU8] {
        assert!(len <= self.len);
        // SAFETY: AtomicU8 has the layout of u8 and allows shared mutation.
        unsafe { std::slice::from_raw_parts(self.base as *const AtomicU8, len) }
    }

    /// The first `len / 8` words as atomic words (the base is page-aligned).
    pub(crate) fn atomic_words(&self, len: usize) -> &[AtomicU64] {
        assert!(len <= self.len);
        // SAFETY: page-aligned, so 8-aligned; AtomicU64 has the layout of
        // u64 and allows shared mutation.
        unsafe { std::slice::from_raw_parts(self.base as *const AtomicU64, len / 8) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our own mapping; every slice into it borrowed `self`.
        unsafe { libc::munmap(self.base as *mut c_void, self.len) };
    }
}

// ---- stopping the fault thread ----

/// An eventfd that wakes a fault thread to stop.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: flags only; the result is a fresh fd.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: fresh and ours.
        Ok(EventFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub(crate) fn signal(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer.
        unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), 8) };
    }

    /// Resets it after it was signalled.
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer.
        unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
    }
}

// ---- signals ----

/// Sends SIGBUS to thread `tid` of this process, queued with `si_code`
/// `SI_QUEUE` and `si_value.sival_ptr` = `addr` (so a handler can tell
/// which access failed); plain `tgkill` if queueing is refused.
pub(crate) fn send_sigbus(tid: u32, addr: u64) -> io::Result<()> {
    // SAFETY: no memory effects.
    let (pid, uid) = unsafe { (libc::getpid(), libc::getuid()) };
    // The kernel's siginfo: signo, errno, code, then (pointer-aligned) the
    // `_rt` union member: pid, uid, sigval.
    let mut info = [0u8; 128];
    info[0..4].copy_from_slice(&libc::SIGBUS.to_ne_bytes());
    info[8..12].copy_from_slice(&libc::SI_QUEUE.to_ne_bytes());
    let u = 12usize.next_multiple_of(std::mem::align_of::<*mut c_void>());
    info[u..u + 4].copy_from_slice(&pid.to_ne_bytes());
    info[u + 4..u + 8].copy_from_slice(&uid.to_ne_bytes());
    let value = (addr as usize).to_ne_bytes();
    info[u + 8..u + 8 + value.len()].copy_from_slice(&value);
    // The kernel reads the buffer as a `siginfo_t`: give it the alignment.
    let mut aligned = [0u64; 16];
    for (w, c) in aligned.iter_mut().zip(info.chunks_exact(8)) {
        *w = u64::from_ne_bytes(c.try_into().expect("8"));
    }
    let tid = tid as libc::pid_t;
    // SAFETY: rt_tgsigqueueinfo reads one 128-byte siginfo from `aligned`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            pid,
            tid,
            libc::SIGBUS,
            aligned.as_ptr(),
        )
    };
    if r == 0 {
        return Ok(());
    }
    // SAFETY: no memory effects.
    cvt(unsafe { libc::tgkill(pid, tid, libc::SIGBUS) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(writable: bool) -> Option<Region> {
        let (uffd, _) = Uffd::open().ok()?;
        uffd.api(FEATURE_PAGEFAULT_FLAG_WP | FEATURE_THREAD_ID)
            .ok()?;
        let page = os_page_size();
        Some(
            Region::new(uffd, 4 * page, page, writable)
                .expect("region")
                .0,
        )
    }

    #[test]
    fn installed_pages_read_back_and_zapped_ones_are_gone_to_the_kernel() {
        let Some(r) = region(true) else {
            eprintln!("skipped: no userfaultfd here");
            return;
        };
        let page = r.page();
        let data = vec![7u8; page];
        r.install(1, &data, false).unwrap();
        // Installing over a present page replaces it.
        r.install(1, &vec![8u8; page], false).unwrap();
        let mut out = vec![0u8; page];
        r.copy_out(1, &mut out);
        assert_eq!(out, vec![8u8; page]);
        r.protect(1, false).unwrap();
        r.protect(1, true).unwrap();
        r.zap(1).unwrap();
        // A zapped page may be installed again.
        r.install(1, &data, true).unwrap();
        r.copy_out(1, &mut out);
        assert_eq!(out, data);
        r.wake(None).unwrap();
        r.fail(true).unwrap();
        r.copy_out(1, &mut out);
        assert_eq!(out, vec![0u8; page], "a failed region reads as zeros");
        // Failed with zeros, its memory itself reads as zeros (no SIGBUS).
        assert!(r.bytes(r.len()).iter().all(|b| *b == 0));
    }

    #[test]
    fn the_device_node_works_where_it_is_accessible() {
        match Uffd::device() {
            Ok(u) => {
                let f = u.api(0).unwrap();
                assert_ne!(f & FEATURE_THREAD_ID, 0);
            }
            Err(e) => eprintln!("skipped: /dev/userfaultfd: {e}"),
        }
    }
}
