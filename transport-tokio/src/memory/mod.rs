//! Memory mappings (Linux): a remote file range mapped into the address
//! space, read and written with ordinary loads and stores, coherent with
//! every other client.
//!
//! [`Client::map_memory`] returns a [`MemoryMapping`]: page-aligned memory
//! the length of the range, backed by [userfaultfd]. A first access to a
//! page faults; the mapping's fault thread hands the fault to the client,
//! which fetches the page (shared) and installs it write-protected
//! (`UFFDIO_COPY`). A write to a shared page faults again and waits for
//! exclusive ownership; a write to a page already held exclusively only
//! lifts the protection. When the server invalidates a page it leaves
//! memory (`MADV_DONTNEED`) and the next access faults; a recall or a
//! [`sync`](MemoryMapping::sync) write-protects the page and sends back
//! what changed. Atomic operations ([`MemoryMapping::fetch_add`],
//! [`compare_exchange`](MemoryMapping::compare_exchange),
//! [`swap`](MemoryMapping::swap)) run at the server on aligned 64-bit
//! words, linearizable with the page protocol, so processes on different
//! machines can build counters and locks in a shared file.
//!
//! # What it needs
//!
//! * **userfaultfd**, opened with `UFFD_USER_MODE_ONLY` (Linux 5.11 or
//!   later), which needs no privilege whatever `vm.unprivileged_userfaultfd`
//!   says. On older kernels, or where the system call is filtered, the
//!   client falls back to `/dev/userfaultfd` (Linux 6.1 or later; needs
//!   read-write access to the device node) and then to the privileged
//!   system call (`CAP_SYS_PTRACE`, or `sysctl vm.unprivileged_userfaultfd=1`).
//!   Container runtimes' default seccomp profiles often block
//!   `userfaultfd(2)`: allow it in the profile.
//! * **Write-protection of anonymous memory** through userfaultfd
//!   (`UFFD_FEATURE_PAGEFAULT_FLAG_WP`): Linux 5.7 or later on x86-64,
//!   6.10 or later on arm64; other architectures when their kernel reports
//!   the feature. Also `UFFD_FEATURE_THREAD_ID` (Linux 4.14).
//! * A **server page size that is a multiple of the OS page size** (4 KiB
//!   on x86-64; 16 or 64 KiB on some arm64 kernels).
//! * A **multi-thread Tokio runtime**: a fault blocks the faulting thread
//!   until the client's driver, a task on the runtime, has brought the
//!   page (see [Tokio worker threads](#tokio-worker-threads)).
//!
//! [`memory_support`] checks the first two (and
//! [`Client::map_memory`] all four), failing with a [`MemoryError`] that
//! says what is missing.
//!
//! # How an access fails
//!
//! A load or store cannot return an error. What happens instead is the
//! mapping's [`FaultMode`] ([`MemoryMapping::set_fault_mode`]); never a hang.
//!
//! **[`FaultMode::Report`] (the default).** No signal: the failure is
//! recorded, and [`MemoryMapping::checked`] returns it as an error for every
//! closure that ran while it happened.
//!
//! * When **one fault fails** (the client has been disconnected longer than
//!   `give_up_after`, it was closed, the mapping is being unmapped), the
//!   page gets zeros that are not the file's and the thread goes on (a store
//!   into them goes nowhere); [`MemoryMapping::last_fault_error`] says why.
//!   Once a fault of the mapping is served again, or at the next
//!   [`checked`](MemoryMapping::checked), those pages leave memory and the
//!   next access fetches them afresh. A store to a page held read-only
//!   cannot be taken anywhere: it fails the mapping for good.
//! * When the mapping **fails for good** (a write-back was refused, the
//!   kernel refused an operation), its memory is replaced by memory that is
//!   not the file's (zeros, and whatever is stored there afterwards, which
//!   goes nowhere else), and [`MemoryMapping::failure`] says why. Unmap it
//!   and map again.
//! * When the session was **lost with writes** not yet synced (a server
//!   crash, a lease that ran out), the lost pages leave memory, the access
//!   goes on with the server's bytes, and the loss (an
//!   `OpError::SessionLost` naming the pages) is what `checked` returns,
//!   once. A graceful restart loses nothing and reports nothing: threads
//!   wait in their faults until the next run serves the pages.
//! * A mapping made by a [`ClusterClient`] **moves with its file** to the
//!   member that serves it (CLUSTER.md section 6), at the same address:
//!   its pages leave memory and fault in again from the new owner. A
//!   planned move reports nothing; a member that died is reported as a
//!   lost session (cause `MemberLost`), once, as above.
//!
//! So a program does its loads and stores inside `checked` and treats an
//! `Err` as "what this closure read or wrote did not count"; code outside
//! any `checked` may read zeros after a failure without being told.
//!
//! **[`FaultMode::Signal`]** (what the C library uses). A failed access
//! raises `SIGBUS` in the thread that made it:
//!
//! * When the mapping **fails for good**, its memory is replaced by memory
//!   whose every access raises `SIGBUS` from the kernel, with `si_code`
//!   `BUS_ADRERR` and `si_addr` the address, including the accesses waiting
//!   at that moment.
//! * When **one fault fails**, the faulting thread gets a `SIGBUS` queued
//!   with `si_code` `SI_QUEUE` (-1) and `si_value.sival_ptr` the faulting
//!   address; if the handler returns, the access is retried (and faults
//!   again).
//! * A session **lost with writes** is reported once, as one failed fault
//!   (`SI_QUEUE`, `last_fault_error` naming the pages): to the threads
//!   blocked on a fault of the mapping then, or else to the next fault. The
//!   mapping is not failed: once the handler returns, the access is
//!   retried, the page is fetched again with the server's bytes and the
//!   thread goes on.
//!
//! Without a handler, `SIGBUS` ends the process (with a core dump). An
//! application that wants to survive installs a handler with `SA_SIGINFO`
//! that leaves the access (`siglongjmp`, or ends the thread's work) and
//! must not block `SIGBUS` in threads that touch the mapping.
//!
//! In both modes the copying accessors ([`MemoryMapping::read`], [`write`],
//! [`read_value`], [`write_value`]) copy the same coherent bytes as loads
//! and stores and return these failures as errors (the C library's `mread`
//! and `mwrite` use them), and a store to a read-only mapping raises
//! `SIGSEGV` as usual.
//!
//! [`write`]: MemoryMapping::write
//! [`read_value`]: MemoryMapping::read_value
//! [`write_value`]: MemoryMapping::write_value
//!
//! # Caveats
//!
//! * The kernel cannot fault pages of the mapping in for itself (that is
//!   what user-mode-only means): a system call given mapped memory
//!   (`read(2)` into it, `write(2)` from it, a futex in it) fails with
//!   `EFAULT` unless the page is in memory. Copy through a buffer.
//! * A forked child does not inherit the mapping (`MADV_DONTFORK`).
//! * The bytes change when another client writes, as in a shared file
//!   mapping; see below.
//! * One client may not map a range into memory that overlaps another
//!   mapping of the same file by that client: [`Client::map_memory`]
//!   refuses it ([`MemoryError::Overlap`]), and [`Client::map`] refuses a
//!   plain mapping over a memory mapping's range (`OpError::Overlap`; paths
//!   compared normalised). Each mapping has its own userfaultfd and fault
//!   thread, and a page lives in one of them.
//!
//! # What a program may rely on
//!
//! The memory is shared with every other client of the file, so the safe
//! API never hands out `&[u8]` or `&mut [u8]` over it: Rust assumes the
//! bytes behind a shared reference do not change and that nobody else
//! touches the bytes behind a mutable one, and here another machine's
//! write changes them at any moment (the page is dropped and refilled with
//! the new bytes), and the server-side atomics change them too.
//!
//! The safe ways in, each sound however the bytes change underneath:
//!
//! * **Copies**: [`read`](MemoryMapping::read) and
//!   [`write`](MemoryMapping::write) for bytes,
//!   [`read_value`](MemoryMapping::read_value) and
//!   [`write_value`](MemoryMapping::write_value) for plain-old-data types
//!   (`bytemuck::Pod`: integers, arrays of them, `#[repr(C)]` structs
//!   without padding). Asynchronous; they never block a thread in a fault
//!   and report a failure as an error. [`load`](MemoryMapping::load) and
//!   [`store`](MemoryMapping::store) are their synchronous twins, which
//!   fault as loads and stores do.
//! * **Atomics**: [`atomic_bytes`](MemoryMapping::atomic_bytes) and
//!   [`atomic_words`](MemoryMapping::atomic_words) view the memory as
//!   `&[AtomicU8]` and `&[AtomicU64]`. Each load reads the memory (the
//!   compiler cannot cache it), so polling a word sees another client's
//!   write once it has invalidated our copy. Rather than poll,
//!   [`wait_while`](MemoryMapping::wait_while) sleeps until a word differs
//!   from a value (or a timeout), woken by the invalidation itself.
//! * **A raw pointer** ([`as_ptr`](MemoryMapping::as_ptr),
//!   [`as_mut_ptr`](MemoryMapping::as_mut_ptr)), for C-style code and
//!   `ptr::read_volatile`; what it may be used for is the caller's to
//!   uphold, as with any pointer.
//! * **Slices**: [`as_slice`](MemoryMapping::as_slice) and
//!   [`as_mut_slice`](MemoryMapping::as_mut_slice) are `unsafe`, with the
//!   contract written on them (as `memmap2::Mmap::map` is, for files others
//!   may change): the bytes must not change, other than through the slice
//!   itself, while it lives.
//!
//! What holds for every one of them:
//!
//! * **Coherence, page by page.** A load sees the latest store to its page
//!   by any client: a page is either shared read-only by readers or held
//!   writable by one client (docs/CONSISTENCY.md). Two stores to different
//!   pages by another client may be seen in either order; order them with
//!   the server-side atomics ([`fetch_add`](MemoryMapping::fetch_add),
//!   [`compare_exchange`](MemoryMapping::compare_exchange),
//!   [`swap`](MemoryMapping::swap)), which recall the page first, so a lock
//!   taken and released with them publishes every store made under it.
//! * **No tearing within an aligned 8-byte word**: a page moves whole, and
//!   local atomics are atomic. A `read_value` of a larger type may mix two
//!   writers' values if nothing orders them.
//! * **Durability** only after [`sync`](MemoryMapping::sync).
//!
//! # Tokio worker threads
//!
//! A fault blocks the faulting thread until the client's driver, a task on
//! the runtime, has brought the page. On a worker thread that blocks the
//! worker: the driver runs on another worker if one is free, but the tasks
//! queued on the blocked worker wait, and if every worker is blocked in a
//! fault (or the driver was queued behind the fault on that worker) nothing
//! would serve those faults. The fault thread detects that: while faults
//! wait it wakes the driver every second, and when a woken driver has not
//! run for 5 s it fails the waiting faults (error kind `unsupported`, named
//! "the client's runtime has not run its driver ..."), as any failed access
//! fails (see [how an access fails](#how-an-access-fails)), which frees the
//! workers; the mapping then works again. That is a last resort, not a way
//! to work. So:
//!
//! * the asynchronous copies ([`read`](MemoryMapping::read),
//!   [`read_value`](MemoryMapping::read_value), ...) are the ones to use in
//!   async code: they wait for pages as futures, never in a fault;
//! * [`load`](MemoryMapping::load) and [`store`](MemoryMapping::store) run
//!   inside `tokio::task::block_in_place` on a worker of a multi-thread
//!   runtime (the worker's other tasks move to another thread first); a
//!   current-thread runtime cannot be the client's, so blocking its thread
//!   stalls nothing the fault needs;
//! * the atomic views, the pointer and the slices cannot tell where they
//!   are used: touch them from threads that are not the runtime's workers
//!   (a `std::thread`, `spawn_blocking`, the thread that called
//!   `Runtime::block_on`, or inside `block_in_place`).
//!
//! [userfaultfd]: https://docs.kernel.org/admin-guide/mm/userfaultfd.html

mod backing;
mod copy;
mod faults;
mod report;
mod typed;
mod uffd;
mod wait;

use std::ops::Range;
use std::sync::atomic::{AtomicU8, AtomicU64};
use std::sync::{Arc, OnceLock};

use rmmap_core::client::{MapOptions, MappingId, OpError, range_len};
use rmmap_core::protocol::AtomicOp;
use tokio::runtime::RuntimeFlavor;

use crate::client::{Access, Client, ClusterClient, Home, Mapping, MappingInner};
pub(crate) use backing::MemoryState;
use backing::UffdMemory;
use faults::{FaultContext, FaultThread};
pub use report::FaultMode;
use uffd::{
    FEATURE_EXACT_ADDRESS, FEATURE_PAGEFAULT_FLAG_WP, FEATURE_THREAD_ID, Opened, Region, Uffd,
    os_page_size,
};

/// Why a memory mapping could not be made.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    /// No userfaultfd could be opened.
    #[error(
        "userfaultfd is not available to this process: userfaultfd(UFFD_USER_MODE_ONLY) said \"{syscall}\" \
         (it needs Linux 5.11 or later, and no seccomp filter blocking it), and /dev/userfaultfd said \
         \"{device}\" (Linux 6.1 or later; grant this user read-write access to it); \
         alternatively set `sysctl vm.unprivileged_userfaultfd=1` or give the process CAP_SYS_PTRACE"
    )]
    Unavailable {
        /// What the system call said.
        syscall: String,
        /// What the device node said.
        device: String,
    },
    /// The kernel lacks a userfaultfd feature memory mappings need.
    #[error(
        "this kernel's userfaultfd lacks {feature}: memory mappings need Linux 5.7 or later on x86-64 \
         (6.10 or later on arm64) built with userfaultfd write-protection"
    )]
    MissingFeature {
        /// The missing feature.
        feature: &'static str,
    },
    /// The server's pages are smaller than (or not a multiple of) the OS's.
    #[error(
        "the server's page size ({server} bytes) is not a multiple of this machine's page size ({os} bytes): \
         memory mappings need the server to use pages of {os} bytes or a multiple (`rmmap serve --page-size {os}`)"
    )]
    PageSize {
        /// The server's page size.
        server: u64,
        /// The OS page size.
        os: u64,
    },
    /// Not called on a multi-thread Tokio runtime.
    #[error(
        "memory mappings need a multi-thread Tokio runtime: a page fault blocks the faulting thread until the \
         client's driver, a task on that runtime, has brought the page"
    )]
    Runtime,
    /// The operating system refused a step (mapping memory, registering it,
    /// starting the fault thread).
    #[error("{what} failed: {message}")]
    Os {
        /// The step.
        what: &'static str,
        /// What the system said.
        message: String,
    },
    /// The range overlaps another mapping of the same file by this client
    /// (the two could hold one page in two places, each believing it
    /// current).
    #[error(
        "{path} bytes {start}..{end} overlap mapping {other:?} of the same file by this client: \
         a memory mapping may not overlap another mapping of its file; map the range once and share it"
    )]
    Overlap {
        /// The path asked for.
        path: String,
        /// Where the range starts in the file.
        start: u64,
        /// Where it ends.
        end: u64,
        /// The mapping it overlaps.
        other: MappingId,
    },
    /// Mapping the range failed (see [`OpError`]).
    #[error(transparent)]
    Map(OpError),
}

impl From<OpError> for MemoryError {
    fn from(e: OpError) -> Self {
        match e {
            // The core refuses an overlap by path before anything is sent.
            OpError::Overlap {
                path,
                start,
                end,
                other,
            } => MemoryError::Overlap {
                path,
                start,
                end,
                other,
            },
            e => MemoryError::Map(e),
        }
    }
}

impl MemoryError {
    fn os(what: &'static str, e: std::io::Error) -> Self {
        MemoryError::Os {
            what,
            message: e.to_string(),
        }
    }
}

/// Checks that this process can make memory mappings: userfaultfd can be
/// opened and has write-protection of anonymous memory and thread ids.
/// The answer is worked out once per process.
pub fn memory_support() -> Result<(), MemoryError> {
    features().map(drop)
}

/// The userfaultfd features to enable on each mapping's descriptor.
fn features() -> Result<u64, MemoryError> {
    static PROBE: OnceLock<Result<u64, MemoryError>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let (uffd, opened) = Uffd::open().map_err(|e| MemoryError::Unavailable {
                syscall: e.syscall.to_string(),
                device: e.device.to_string(),
            })?;
            let offered = uffd
                .api(0)
                .map_err(|e| MemoryError::os("the UFFDIO_API handshake", e))?;
            for (bit, feature) in [
                (
                    FEATURE_PAGEFAULT_FLAG_WP,
                    "write-protection of anonymous memory (UFFD_FEATURE_PAGEFAULT_FLAG_WP)",
                ),
                (
                    FEATURE_THREAD_ID,
                    "faulting thread ids (UFFD_FEATURE_THREAD_ID)",
                ),
            ] {
                if offered & bit == 0 {
                    return Err(MemoryError::MissingFeature { feature });
                }
            }
            tracing::debug!(?opened, offered, "userfaultfd support");
            if opened != Opened::UserModeOnly {
                tracing::info!(?opened, "userfaultfd opened without UFFD_USER_MODE_ONLY");
            }
            Ok(FEATURE_PAGEFAULT_FLAG_WP | FEATURE_THREAD_ID | (offered & FEATURE_EXACT_ADDRESS))
        })
        .clone()
}

impl Client {
    /// Maps `range` of the file at `path` into memory (Linux; see the
    /// [`memory`](crate::memory) module for what it needs and how accesses
    /// fail). `range.start` must be a multiple of the server's page size.
    pub async fn map_memory(
        &self,
        path: &str,
        range: Range<u64>,
        access: Access,
    ) -> Result<MemoryMapping, MemoryError> {
        let opts = MapOptions {
            access,
            create: false,
        };
        self.map_memory_with(path, range, opts).await
    }

    /// Like [`Client::map_memory`], with options: with `create`, a missing
    /// file is created and a short one extended to cover the range.
    pub async fn map_memory_with(
        &self,
        path: &str,
        range: Range<u64>,
        opts: MapOptions,
    ) -> Result<MemoryMapping, MemoryError> {
        self.map_memory_on(path, range, opts, None).await
    }

    /// Maps memory on this connection; with `cluster`, the mapping
    /// follows its file to the member that serves it (CLUSTER.md section
    /// 6), memory and all.
    pub(crate) async fn map_memory_on(
        &self,
        path: &str,
        range: Range<u64>,
        opts: MapOptions,
        cluster: Option<&ClusterClient>,
    ) -> Result<MemoryMapping, MemoryError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| MemoryError::Runtime)?;
        if runtime.runtime_flavor() == RuntimeFlavor::CurrentThread {
            return Err(MemoryError::Runtime);
        }
        let features = features()?;
        let server = u64::from(self.page_size().ok_or(OpError::Unsupported(
            "connect before mapping into memory: the page size is not known yet",
        ))?);
        let os = os_page_size() as u64;
        if server % os != 0 {
            return Err(MemoryError::PageSize { server, os });
        }
        let len = range_len(&range)?;
        if len == 0 {
            return Err(OpError::Unsupported("a memory mapping cannot be empty").into());
        }
        let too_big = |_| MemoryError::Os {
            what: "sizing the mapping",
            message: format!("{len} bytes do not fit in this address space"),
        };
        let region_len = usize::try_from(len.div_ceil(server) * server).map_err(too_big)?;
        let writable = opts.access == Access::ReadWrite;

        let (uffd, opened) = Uffd::open().map_err(|e| MemoryError::Unavailable {
            syscall: e.syscall.to_string(),
            device: e.device.to_string(),
        })?;
        uffd.api(features)
            .map_err(|e| MemoryError::os("the UFFDIO_API handshake", e))?;
        let (region, exclusive) = Region::new(uffd, region_len, server as usize, writable)
            .map_err(|e| MemoryError::os("mapping and registering memory", e))?;
        let state = Arc::new(MemoryState::new(region));
        let first = self.map_backed(path, range.clone(), opts, &state).await?;
        let handle = match cluster {
            None => Mapping::fixed(first),
            Some(cluster) => {
                let id = first.mapped.mapping;
                self.shared().with(|c, _| c.follow_file(id))?;
                let home = Home::new(first, cluster.clone(), path, range, opts);
                Mapping::homed(home.with_memory(state.clone()))
            }
        };
        let faults = FaultThread::start(FaultContext {
            mapping: handle.clone(),
            state: state.clone(),
            runtime,
        })
        .map_err(|e| MemoryError::os("starting the fault thread", e))?;
        Ok(MemoryMapping {
            faults,
            mapping: handle,
            state,
            exclusive,
            len: len as usize,
            writable,
            kernel_faults_fail: opened != Opened::Syscall,
        })
    }
}

impl Client {
    /// Maps `range` of `path` on this connection with `state`'s memory
    /// behind it (a new memory mapping, or one moving here from another
    /// member), refused if it overlaps another mapping of the file here.
    pub(crate) async fn map_backed(
        &self,
        path: &str,
        range: Range<u64>,
        opts: MapOptions,
        state: &Arc<MemoryState>,
    ) -> Result<Arc<MappingInner>, MemoryError> {
        let (start, end) = (range.start, range.end);
        let backing = Box::new(UffdMemory::new(state.clone()));
        let mapped = self
            .shared()
            .run(|c, now| c.map_memory(now, path, range, opts, backing))
            .await?;
        let mapping = mapped.mapping;
        let inner = Arc::new(MappingInner {
            client: self.clone(),
            mapped,
        });
        if let Some(other) = self.shared().with(|c, _| c.memory_overlap(mapping)) {
            // Dropping it unmaps the range in the background; no page was
            // installed, as no one could have faulted on it.
            drop(inner);
            return Err(MemoryError::Overlap {
                path: path.to_owned(),
                start,
                end,
                other,
            });
        }
        Ok(inner)
    }
}

/// A remote file range in memory (page-aligned, the length of the range),
/// coherent with every other client. Safe code reads and writes it by
/// copying ([`read_value`](MemoryMapping::read_value),
/// [`write_value`](MemoryMapping::write_value), [`read`](MemoryMapping::read),
/// [`write`](MemoryMapping::write), [`load`](MemoryMapping::load),
/// [`store`](MemoryMapping::store)) or through atomics
/// ([`atomic_words`](MemoryMapping::atomic_words)); slices over it are
/// `unsafe` (see [what a program may rely on](crate::memory#what-a-program-may-rely-on)).
///
/// Dropping it unmaps the range in the background (dirty pages are written
/// back); [`MemoryMapping::unmap`] waits for that. The memory itself is
/// returned to the system once the client has taken the pages out.
pub struct MemoryMapping {
    // Fields drop in this order: the fault thread stops, then the unmap
    // starts; the region goes when the core drops its backing.
    faults: FaultThread,
    mapping: Mapping,
    state: Arc<MemoryState>,
    exclusive: uffd::Exclusive,
    len: usize,
    writable: bool,
    /// The userfaultfd is user-mode-only: the kernel's own accesses to a
    /// page not in memory fail with EFAULT instead of waiting (see
    /// [`MemoryMapping::read`]).
    kernel_faults_fail: bool,
}

impl std::fmt::Debug for MemoryMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryMapping")
            .field("id", &self.mapping.id())
            .field("addr", &self.as_ptr())
            .field("len", &self.len)
            .field("writable", &self.writable)
            .finish()
    }
}

impl MemoryMapping {
    /// The mapping's id, as named in
    /// [`ClientEvent::SessionLost`](crate::ClientEvent::SessionLost).
    pub fn id(&self) -> MappingId {
        self.mapping.id()
    }

    /// The client (the connection to one member) that carries this
    /// mapping now.
    pub fn client(&self) -> Client {
        self.mapping.client()
    }

    /// The file's length when it was mapped.
    pub fn file_len(&self) -> u64 {
        self.mapping.file_len()
    }

    /// The page size faults are handled in (the server's).
    pub fn page_size(&self) -> usize {
        self.state.region.page()
    }

    /// Whether stores are allowed.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The mapping's length in bytes (the range's, not rounded to pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: empty ones are refused).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first byte, for C-style code: `len()` bytes, valid until the
    /// mapping is dropped or unmapped. Using it is the caller's business
    /// (any access through it may fault; see the [module docs](crate::memory)).
    pub fn as_ptr(&self) -> *const u8 {
        self.state.region.base() as *const u8
    }

    /// The first byte, for stores through raw pointers. Fails on a
    /// read-only mapping.
    pub fn as_mut_ptr(&self) -> Result<*mut u8, OpError> {
        if !self.writable {
            return Err(OpError::ReadOnly);
        }
        Ok(self.state.region.base() as *mut u8)
    }

    /// The memory as a byte slice.
    ///
    /// # Safety
    ///
    /// While the slice lives, the bytes it covers must not change: no other
    /// client may write those pages (the program's own protocol keeps them
    /// away, for example a lock word taken with
    /// [`compare_exchange`](MemoryMapping::compare_exchange), or the file is
    /// read-only for everyone), and neither may this process (stores
    /// through the atomic views or a pointer, [`write`](MemoryMapping::write),
    /// server-side atomics on those words). The client's own work on the
    /// pages (taking them out of memory and putting the same bytes back)
    /// does not count. An access through the slice fails as any access does
    /// (see the [module docs](crate::memory#how-an-access-fails)). This is the contract
    /// `memmap2::Mmap` states for files others may change.
    #[allow(unsafe_code)] // an unsafe signature: the contract is the caller's
    pub unsafe fn as_slice(&self) -> &[u8] {
        self.state.region.bytes(self.len)
    }

    /// The memory as a mutable byte slice. Fails on a read-only mapping.
    ///
    /// # Safety
    ///
    /// As for [`as_slice`](MemoryMapping::as_slice), and more: while the
    /// slice lives nobody but it may read or write the bytes it covers (no
    /// other client, no atomic view, pointer or copy in this process).
    #[allow(unsafe_code)] // an unsafe signature: the contract is the caller's
    pub unsafe fn as_mut_slice(&mut self) -> Result<&mut [u8], OpError> {
        if !self.writable {
            return Err(OpError::ReadOnly);
        }
        Ok(self.state.region.bytes_mut(self.len, &mut self.exclusive))
    }

    /// The memory as atomic bytes: safe to share between threads and to
    /// read while other clients write.
    pub fn atomic_bytes(&self) -> &[AtomicU8] {
        self.state.region.atomic_bytes(self.len)
    }

    /// The memory as atomic 64-bit words (the first `len / 8`): loads are
    /// never cached by the compiler. These are local atomics, coherent
    /// page by page; for read-modify-write across clients use
    /// [`MemoryMapping::fetch_add`] and friends.
    pub fn atomic_words(&self) -> &[AtomicU64] {
        self.state.region.atomic_words(self.len)
    }

    /// Why the mapping failed for good, if it did: every access reads zeros
    /// ([`FaultMode::Report`]) or raises SIGBUS ([`FaultMode::Signal`]).
    /// Unmap it and map again.
    pub fn failure(&self) -> Option<OpError> {
        self.state.failure()
    }

    /// Why the last fault that failed (or the last lost session reported
    /// through a fault) failed.
    pub fn last_fault_error(&self) -> Option<OpError> {
        self.state.last_fault_error()
    }

    /// Makes every store made so far durable on the server: dirty pages
    /// are write-protected, their changes written back, and the server
    /// fsyncs. The next store to such a page faults, locally.
    pub async fn sync(&self) -> Result<(), OpError> {
        self.mapping.sync().await
    }

    /// Runs an atomic operation at the server on the little-endian 64-bit
    /// word at `offset` (8-byte aligned in the file), linearizable with
    /// every load and store of every client. Returns the previous value
    /// and whether it applied.
    pub async fn atomic(&self, offset: u64, op: AtomicOp) -> Result<(u64, bool), OpError> {
        self.mapping.atomic(offset, op).await
    }

    /// Adds `value` (wrapping) to the word at `offset`; returns the
    /// previous value.
    pub async fn fetch_add(&self, offset: u64, value: u64) -> Result<u64, OpError> {
        self.mapping.fetch_add(offset, value).await
    }

    /// Stores `value` in the word at `offset`; returns the previous value.
    pub async fn swap(&self, offset: u64, value: u64) -> Result<u64, OpError> {
        self.mapping.swap(offset, value).await
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
        self.mapping.compare_exchange(offset, expected, new).await
    }

    /// Writes back the dirty pages and ends the mapping; the memory goes
    /// back to the system once the client has taken the pages out.
    pub async fn unmap(self) -> Result<(), OpError> {
        let MemoryMapping {
            faults, mapping, ..
        } = self;
        let r = mapping.unmap().await;
        drop(faults);
        r
    }
}
