//! fmmap.h: the seed's four calls, `rmmap`, `rmunmap`, `mread` and
//! `mwrite`, over one client per server per process.
//!
//! The process keeps, per server, one client (so one connection, shared by
//! every mapping and thread) for as long as it has a mapping there. Each
//! `rmmap` maps from its offset to the file's end as it is then (learned
//! by mapping its first byte, which also checks the offset). Where memory
//! mappings work, the returned address is a real mapping: the process maps
//! each file into memory once, from offset 0, and every `rmmap` of that
//! file is a window onto it (the client may not hold overlapping memory
//! mappings of one file). Elsewhere the address is a reservation of
//! inaccessible address space, unique while the mapping lives, and the
//! bytes move through the client.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};

use rmmap_tokio::{Access, ClusterClient as Client, MapOptions};

use crate::boundary::posix;
use crate::client::{c_str, rmmap_options};
use crate::error::{Failure, rmmap_error};
use crate::runtime::block_on;
use crate::target::Target;

/// Where a file is: a server and a path under its export root.
#[repr(C)]
pub struct fileloc {
    /// The server's IPv4 address (network byte order, as from inet_pton).
    pub ipaddress: libc::in_addr,
    /// The server's TCP port, host byte order.
    pub port: c_int,
    /// The file, relative to the server's export root.
    pub pathname: *mut c_char,
}

/// Where a file is (the seed's name for `struct fileloc`).
pub type fileloc_t = fileloc;

/// The seed's state in this process.
#[derive(Default)]
struct Seed {
    pid: u32,
    servers: HashMap<SocketAddrV4, Arc<Server>>,
    /// Live mappings by the address `rmmap` returned. Several windows onto
    /// one memory mapping at the same offset share an address; each
    /// `rmunmap` of it ends one.
    windows: HashMap<usize, Vec<Arc<Window>>>,
}

static SEED: Mutex<Option<Seed>> = Mutex::new(None);
/// The seed state of the parent of a forked child: its clients' threads are
/// not in the child, so it is kept reachable and never used.
static INHERITED: Mutex<Vec<Seed>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on this process's seed state.
fn with_seed<R>(f: impl FnOnce(&mut Seed) -> R) -> R {
    let pid = std::process::id();
    let mut g = lock(&SEED);
    if g.as_ref().is_some_and(|s| s.pid != pid) {
        lock(&INHERITED).extend(g.take());
    }
    f(g.get_or_insert_with(|| Seed {
        pid,
        ..Seed::default()
    }))
}

/// One server, and the process's client of it.
struct Server {
    addr: SocketAddrV4,
    /// Held while connecting, mapping, unmapping the last window onto a
    /// memory mapping, and closing: so two threads never connect twice,
    /// and a client is never closed under a mapping being made.
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    client: Option<Client>,
    /// Live mappings on this server: the client closes when none is left.
    mappings: usize,
    /// Files mapped into memory, by path.
    views: HashMap<String, View>,
}

/// A file mapped into memory from offset 0, shared by every window onto it.
struct View {
    target: Arc<Target>,
    windows: usize,
}

/// One `rmmap`: a range of a target.
struct Window {
    server: Arc<Server>,
    path: String,
    target: Arc<Target>,
    /// Where the window starts in the target.
    start: u64,
    len: u64,
    /// A window onto a `View` (else it owns its target).
    on_view: bool,
    /// The address of a mapping that is not in memory.
    _reservation: Option<Reservation>,
}

/// Address space that no access may touch (`PROT_NONE`), reserved to give
/// a mapping that is not in memory an address of its own.
struct Reservation {
    addr: usize,
    len: usize,
}

impl Reservation {
    fn new(len: u64) -> Result<Reservation, Failure> {
        // Up to 1 TiB as long as the mapping; only the start matters.
        let page = 4096u64;
        let want = len.clamp(1, 1 << 40).div_ceil(page) * page;
        for len in [want, page] {
            let len = len as usize;
            // SAFETY: a fresh anonymous mapping at an address the kernel
            // picks; nothing else is affected.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                return Ok(Reservation {
                    addr: p as usize,
                    len,
                });
            }
        }
        Err(Failure::new(
            rmmap_error::RMMAP_INTERNAL,
            format!(
                "cannot reserve address space for the mapping: {}",
                std::io::Error::last_os_error()
            ),
        ))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: exactly the range mmap returned, unmapped once.
        unsafe { libc::munmap(self.addr as *mut c_void, self.len) };
    }
}

impl Window {
    /// The address `rmmap` returns for it.
    fn address(&self) -> usize {
        match (&self._reservation, self.target.memory()) {
            (Some(r), _) => r.addr,
            (None, Some(base)) => base as usize + self.start as usize,
            (None, None) => unreachable!("a window has memory or a reservation"),
        }
    }

    /// The bytes an `mread`/`mwrite` of `count` at `offset` moves: short
    /// at the end, 0 at or past it.
    fn clamp(&self, offset: libc::off_t, count: usize) -> Result<usize, Failure> {
        let offset = u64::try_from(offset)
            .map_err(|_| Failure::invalid(format!("offset {offset} is negative")))?;
        let left = self.len.saturating_sub(offset);
        Ok(usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(count)
            .min(isize::MAX as usize))
    }
}

/// The client settings of the seed's calls, from the environment:
/// `RMMAP_CONNECT_TIMEOUT_MS`, `RMMAP_GIVE_UP_MS`, `RMMAP_TOKEN_FILE`,
/// `RMMAP_TLS_CA_FILE`, `RMMAP_TLS_NAME`.
fn options_from_env() -> Result<rmmap_options, Failure> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let millis = |name: &str| -> Result<Option<u64>, Failure> {
        var(name)
            .map(|v| {
                v.parse::<u64>().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                    Failure::invalid(format!(
                        "{name}={v} is not a positive number of milliseconds"
                    ))
                })
            })
            .transpose()
    };
    let mut o = rmmap_options::default();
    if let Some(ms) = millis("RMMAP_CONNECT_TIMEOUT_MS")? {
        o.connect_timeout(ms);
    }
    if let Some(ms) = millis("RMMAP_GIVE_UP_MS")? {
        o.give_up(ms);
    }
    if let Some(path) = var("RMMAP_TOKEN_FILE") {
        o.token_file(&path)?;
    }
    if let Some(path) = var("RMMAP_TLS_CA_FILE") {
        o.tls_ca_file(&path)?;
    }
    if let Some(name) = var("RMMAP_TLS_NAME") {
        o.tls_name(&name)?;
    }
    Ok(o)
}

/// Whether to map into memory: where it works, unless `RMMAP_MEMORY=0`.
fn memory_wanted() -> bool {
    !std::env::var("RMMAP_MEMORY").is_ok_and(|v| v == "0")
        && crate::mapping::memory_support().is_ok()
}

/// Maps `range` read-write, or read-only where writing is refused (a
/// read-only server or client), into memory or not.
async fn map_rw_or_ro(
    client: &Client,
    path: &str,
    range: std::ops::Range<u64>,
    memory: bool,
) -> Result<Target, Failure> {
    let rw = MapOptions::read_write();
    match Target::map(client, path, range.clone(), rw, memory).await {
        Err(f) if f.code == rmmap_error::RMMAP_READ_ONLY => {
            Target::map(client, path, range, MapOptions::read_only(), memory).await
        }
        r => r,
    }
}

/// The file's length, checking that `offset` lies within it: maps its
/// byte at `offset`.
async fn file_len_at(client: &Client, path: &str, offset: u64) -> Result<u64, Failure> {
    let probe = client
        .map(path, offset..offset + 1, Access::ReadOnly)
        .await
        .map_err(|e| {
            let f = Failure::from(e);
            if f.code == rmmap_error::RMMAP_OUT_OF_RANGE {
                Failure::invalid(format!(
                    "offset {offset} is at or past the end of {path}: {}",
                    f.message
                ))
            } else {
                f
            }
        })?;
    let len = probe.file_len();
    let _ = probe.unmap().await;
    Ok(len)
}

/// Connects if the process has no client of this server yet.
fn connected(server: &Server, slot: &mut Slot) -> Result<Client, Failure> {
    if let Some(c) = &slot.client {
        return Ok(c.clone());
    }
    let options = options_from_env()?;
    let client = block_on(options.connect(&server.addr.to_string()))??;
    slot.client = Some(client.clone());
    Ok(client)
}

/// Closes the client when the server has no mapping left.
fn close_if_unused(slot: &mut Slot) -> Result<(), Failure> {
    if slot.mappings > 0 {
        return Ok(());
    }
    match slot.client.take() {
        Some(c) => Ok(block_on(c.close())??),
        None => Ok(()),
    }
}

/// # Safety
/// `location.pathname` is NULL or a NUL-terminated string.
unsafe fn map(location: &fileloc, offset: libc::off_t) -> Result<usize, Failure> {
    // SAFETY: the caller's contract.
    let path = unsafe { c_str(location.pathname, "pathname")? }.to_owned();
    let offset = u64::try_from(offset)
        .map_err(|_| Failure::invalid(format!("offset {offset} is negative")))?;
    let port = u16::try_from(location.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Failure::invalid(format!("port {} is not a TCP port", location.port)))?;
    let ip = Ipv4Addr::from(u32::from_be(location.ipaddress.s_addr));
    let addr = SocketAddrV4::new(ip, port);
    let server = with_seed(|s| {
        s.servers
            .entry(addr)
            .or_insert_with(|| {
                Arc::new(Server {
                    addr,
                    slot: Mutex::default(),
                })
            })
            .clone()
    });
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    AT_EXIT.call_once(|| {
        // SAFETY: registers a function with the C library; it is `extern
        // "C"`, takes nothing and catches its own panics.
        unsafe { libc::atexit(write_back_at_exit) };
    });
    let mut slot = lock(&server.slot);
    let client = connected(&server, &mut slot)?;
    slot.mappings += 1;
    let made = map_window(&server, &mut slot, &client, &path, offset);
    let window = match made {
        Ok(w) => w,
        Err(f) => {
            slot.mappings -= 1;
            let _ = close_if_unused(&mut slot);
            return Err(f);
        }
    };
    let address = window.address();
    with_seed(|s| s.windows.entry(address).or_default().push(Arc::new(window)));
    Ok(address)
}

fn map_window(
    server: &Arc<Server>,
    slot: &mut Slot,
    client: &Client,
    path: &str,
    offset: u64,
) -> Result<Window, Failure> {
    // The file may shrink between learning its length and mapping.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let end = match slot.views.get(path).map(|v| v.target.len()) {
            // The process maps this file into memory already, and a probe
            // inside that memory would overlap it (refused): probe its
            // first byte past it instead. There is one if the file grew;
            // else the file still ends where the memory does.
            Some(view_end) if offset < view_end => {
                match block_on(file_len_at(client, path, view_end))? {
                    Ok(len) => len,
                    Err(f) if f.code == rmmap_error::RMMAP_INVALID_ARGUMENT => view_end,
                    Err(f) => return Err(f),
                }
            }
            _ => block_on(file_len_at(client, path, offset))??,
        };
        let window = |target: Arc<Target>, start: u64, on_view, reservation| Window {
            server: server.clone(),
            path: path.to_owned(),
            target,
            start,
            len: end - offset,
            on_view,
            _reservation: reservation,
        };
        if let Some(view) = slot.views.get_mut(path) {
            if end > view.target.len() {
                return Err(Failure::new(
                    rmmap_error::RMMAP_BUSY,
                    format!(
                        "{path} grew to {end} bytes since this process mapped its first {} into memory: \
                         rmunmap its other mappings, then map it again",
                        view.target.len()
                    ),
                )
                .with_errno(libc::EBUSY));
            }
            view.windows += 1;
            return Ok(window(view.target.clone(), offset, true, None));
        }
        let memory = memory_wanted();
        let range = if memory { 0..end } else { offset..end };
        let mapped = match block_on(map_rw_or_ro(client, path, range, memory))? {
            Err(f) if memory && f.code == rmmap_error::RMMAP_NO_MEMORY_MAPPINGS => {
                // Not with this server (its page size): through the client.
                block_on(map_rw_or_ro(client, path, offset..end, false))?.map(|t| (t, false))
            }
            r => r.map(|t| (t, memory)),
        };
        match mapped {
            Ok((target, true)) => {
                let target = Arc::new(target);
                slot.views.insert(
                    path.to_owned(),
                    View {
                        target: target.clone(),
                        windows: 1,
                    },
                );
                return Ok(window(target, offset, true, None));
            }
            Ok((target, false)) => {
                let reservation = Reservation::new(end - offset)?;
                return Ok(window(Arc::new(target), 0, false, Some(reservation)));
            }
            Err(f) if f.code == rmmap_error::RMMAP_OUT_OF_RANGE && attempts < 3 => continue,
            Err(f) => return Err(f),
        }
    }
}

/// At `exit`, like stdio's buffers: writes back what the process's
/// mappings still hold and ends its sessions, so that a write the program
/// completed is not lost with the process because it forgot `rmunmap`.
/// Nothing waits for a lock another thread holds (that thread is in the
/// middle of a call; its client is left as it is). The closing runs on a
/// thread of its own: by now `exit` has destroyed this thread's
/// thread-locals, the runtime's among them.
extern "C" fn write_back_at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let clients: Vec<Client> = {
            let Ok(mut seed) = SEED.try_lock() else {
                return;
            };
            let Some(seed) = seed.as_mut().filter(|s| s.pid == std::process::id()) else {
                return;
            };
            seed.servers
                .values()
                .filter_map(|server| server.slot.try_lock().ok()?.client.take())
                .collect()
        };
        if clients.is_empty() {
            return;
        }
        let closing = std::thread::spawn(move || {
            for client in clients {
                let _ = block_on(client.close());
            }
        });
        let _ = closing.join();
    });
}

fn unmap(address: usize) -> Result<(), Failure> {
    let window = with_seed(|s| {
        let list = s.windows.get_mut(&address)?;
        let w = list.pop();
        if list.is_empty() {
            s.windows.remove(&address);
        }
        w
    })
    .ok_or_else(|| not_a_mapping(address))?;
    // Write back and make durable first: on the server's disk when rmunmap
    // returns 0.
    let synced = block_on(window.target.sync())?;
    let server = window.server.clone();
    let mut slot = lock(&server.slot);
    let mut last = None;
    if window.on_view {
        if let Some(view) = slot.views.get_mut(&window.path) {
            view.windows -= 1;
            if view.windows == 0 {
                last = slot.views.remove(&window.path).map(|v| v.target);
            }
        }
    } else {
        last = Some(window.target.clone());
    }
    drop(window);
    // When another thread still reads or writes through this address, the
    // last of them to finish ends the mapping (in the background).
    let unmapped = match last.and_then(Arc::into_inner) {
        Some(target) => block_on(target.unmap())?,
        None => Ok(()),
    };
    slot.mappings -= 1;
    let closed = close_if_unused(&mut slot);
    synced?;
    unmapped?;
    closed
}

fn not_a_mapping(address: usize) -> Failure {
    Failure::invalid(format!(
        "{address:#x} is not an address rmmap returned in this process, or it was unmapped"
    ))
}

/// Which way an `mread`/`mwrite` moves bytes.
enum Io {
    Read(*mut c_void),
    Write(*const c_void),
}

fn io(address: usize, offset: libc::off_t, buf: Io, count: usize) -> Result<usize, Failure> {
    let null = match buf {
        Io::Read(p) => p.is_null(),
        Io::Write(p) => p.is_null(),
    };
    if null {
        return Err(Failure::invalid("the buffer is NULL"));
    }
    let window = with_seed(|s| s.windows.get(&address).and_then(|l| l.first()).cloned())
        .ok_or_else(|| not_a_mapping(address))?;
    let n = window.clamp(offset, count)?;
    if n == 0 {
        return Ok(0);
    }
    let at = window.start + offset as u64;
    match buf {
        Io::Read(p) => {
            // SAFETY: the caller vouches for `count` >= `n` writable bytes.
            let buf = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), n) };
            block_on(window.target.read(at, buf))??;
        }
        Io::Write(p) => {
            if !window.target.writable() {
                return Err(Failure::new(
                    rmmap_error::RMMAP_READ_ONLY,
                    format!(
                        "{} is mapped read-only: the server or this client may not write it",
                        window.path
                    ),
                ));
            }
            // SAFETY: the caller vouches for `count` >= `n` readable bytes.
            let data = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), n) };
            block_on(window.target.write(at, data))??;
        }
    }
    Ok(n)
}

/// Maps the file `location.pathname` of the server at
/// `location.ipaddress`:`location.port` from `offset` to its current end,
/// read-write (read-only where the server or this client may not write;
/// `mwrite` then fails with `EROFS`), and returns an address that
/// identifies the mapping.
///
/// On failure returns `MAP_FAILED` with `errno`: `ENOENT` missing file,
/// `EACCES` outside the root or denied (a path, or the client's credentials
/// refused by the server), `EINVAL` offset at or past the end
/// (or negative, or a NULL path, or a bad port), `ECONNREFUSED`/`ETIMEDOUT`/
/// `EHOSTUNREACH` when the server cannot be reached, `EBUSY` when the file
/// grew since the process mapped it into memory, `EINVAL` for a bad
/// setting in the environment, `EIO` otherwise (a failed TLS handshake
/// among them; `rmmap_strerror_last` says which).
///
/// Ownership: `location.pathname` is only read during the call. The
/// mapping is the caller's until `rmunmap`.
///
/// # Safety
/// `location.pathname` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap(location: fileloc_t, offset: libc::off_t) -> *mut c_void {
    posix(libc::MAP_FAILED, || {
        // SAFETY: the caller's contract.
        unsafe { map(&location, offset) }.map(|address| address as *mut c_void)
    })
}

/// Writes back and syncs the mapping at `addr` (so its data is on the
/// server's disk when this returns 0), frees it, and closes the connection
/// when it was the process's last mapping on that server.
///
/// Returns 0, or -1 with `errno`: `EINVAL` for an address that is no
/// mapping (or was unmapped already), `ENOSPC` when the server's disk is
/// full, `EIO`/`ENOTCONN` when the data could not be made durable otherwise.
/// The mapping is freed either way.
///
/// # Safety
/// No other thread reads or writes through `addr` during or after the call,
/// and no pointer into its memory is used after it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmunmap(addr: *mut c_void) -> c_int {
    posix(-1, || unmap(addr as usize).map(|()| 0))
}

/// Reads up to `count` bytes at `offset` (from the start of the mapping at
/// `addr`) into `buff`: the latest completed write of any client. Returns
/// the bytes read (short at the end of the mapping, 0 at or past it), or
/// -1 with `errno`: `EINVAL` for an address that is no mapping, a NULL
/// buffer or a negative offset, `EIO`/`ENOTCONN` when the session is lost.
///
/// Ownership: `buff` stays the caller's; it is written during the call only.
///
/// # Safety
/// `buff` is valid for writing `count` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mread(
    addr: *mut c_void,
    offset: libc::off_t,
    buff: *mut c_void,
    count: libc::size_t,
) -> libc::ssize_t {
    posix(-1, || {
        io(addr as usize, offset, Io::Read(buff), count).map(|n| n as libc::ssize_t)
    })
}

/// Writes up to `count` bytes from `buff` at `offset` (from the start of
/// the mapping at `addr`). Returns the bytes written (short at the end of
/// the mapping, 0 at or past it), or -1 with `errno`: `EINVAL` for an
/// address that is no mapping, a NULL buffer or a negative offset,
/// `EROFS`/`EACCES` for a refused write, `EIO`/`ENOTCONN` when the session
/// is lost. A completed `mwrite` is seen by every later `mread` of every
/// client on every machine.
///
/// Ownership: `buff` stays the caller's; it is read during the call only.
///
/// # Safety
/// `buff` is valid for reading `count` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mwrite(
    addr: *mut c_void,
    offset: libc::off_t,
    buff: *mut c_void,
    count: libc::size_t,
) -> libc::ssize_t {
    posix(-1, || {
        io(addr as usize, offset, Io::Write(buff), count).map(|n| n as libc::ssize_t)
    })
}
