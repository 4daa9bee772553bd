//! rmmap.h: mapping a range, reading, writing, syncing, the remote
//! atomics, memory mappings as plain pointers, unmapping.

use std::ffi::{c_char, c_void};

use rmmap_tokio::{Access, AtomicOp, MapOptions};

use crate::boundary::status;
use crate::client::{c_str, handle, put, rmmap_client};
use crate::error::{Failure, rmmap_error};
use crate::runtime::{block_on, check_same_process};
use crate::target::Target;

/// Map for reading only (the default, flag value 0).
pub const RMMAP_MAP_READ_ONLY: u32 = 0;
/// Map for reading and writing.
pub const RMMAP_MAP_READ_WRITE: u32 = 1;
/// Create the file if it is missing, and extend it with zeros to cover the
/// range (needs `RMMAP_MAP_READ_WRITE`).
pub const RMMAP_MAP_CREATE: u32 = 2;
/// Map into memory (Linux, userfaultfd): `rmmap_mapping_ptr` gives the
/// address, and loads and stores are coherent with every other client.
/// The offset must be a multiple of the server's page size. A range that
/// overlaps another mapping of the same file by the same client is refused
/// (`RMMAP_UNSUPPORTED`); do not map a range without this flag over a
/// memory mapping either.
pub const RMMAP_MAP_MEMORY: u32 = 4;

const ALL_FLAGS: u32 = RMMAP_MAP_READ_WRITE | RMMAP_MAP_CREATE | RMMAP_MAP_MEMORY;

/// A mapped byte range of a remote file. Thread-safe: any number of
/// threads may read, write and sync it at once. Opaque.
pub struct rmmap_mapping {
    target: Target,
    pid: u32,
}

impl rmmap_mapping {
    fn get(&self) -> Result<&Target, Failure> {
        check_same_process(self.pid)?;
        Ok(&self.target)
    }
}

/// Borrows a mapping argument.
///
/// # Safety
/// `m` is NULL or from `rmmap_map` and not unmapped.
unsafe fn target<'a>(m: *const rmmap_mapping) -> Result<&'a Target, Failure> {
    // SAFETY: the caller's contract.
    unsafe { handle(m, "mapping") }?.get()
}

/// Reads a caller's buffer argument.
///
/// # Safety
/// `buf` is NULL or valid for `len` bytes.
unsafe fn buffer<'a>(buf: *const c_void, len: usize) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if buf.is_null() {
        return Err(Failure::invalid("the buffer is NULL"));
    }
    // SAFETY: not NULL, and the caller vouches for `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(buf.cast(), len) })
}

/// Borrows a caller's buffer argument for writing.
///
/// # Safety
/// `buf` is NULL or valid for writing `len` bytes.
unsafe fn buffer_mut<'a>(buf: *mut c_void, len: usize) -> Result<&'a mut [u8], Failure> {
    if len == 0 {
        return Ok(&mut []);
    }
    if buf.is_null() {
        return Err(Failure::invalid("the buffer is NULL"));
    }
    // SAFETY: not NULL, and the caller vouches for `len` writable bytes.
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.cast(), len) })
}

/// Maps `len` bytes at `offset` of the file at `path` (relative to the
/// export root). `flags`: `RMMAP_MAP_READ_ONLY` (0) or `RMMAP_MAP_READ_WRITE`, plus
/// `RMMAP_MAP_CREATE`, plus `RMMAP_MAP_MEMORY`. The range must lie within the file
/// unless `RMMAP_MAP_CREATE` extends it. Every read then sees the latest
/// completed write of every client to each page (docs/CONSISTENCY.md).
///
/// On success `*mapping` is a new mapping. Ownership: the caller owns it
/// and must end it with `rmmap_unmap`; `path` is only read during the call.
/// The mapping keeps the client's connection in use, not the `client`
/// handle: closing the client makes its operations fail.
///
/// # Safety
/// `client` is from `rmmap_connect`; `path` is a NUL-terminated string;
/// `mapping` is valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_map(
    client: *const rmmap_client,
    path: *const c_char,
    offset: u64,
    len: u64,
    flags: u32,
    mapping: *mut *mut rmmap_mapping,
) -> rmmap_error {
    status(|| {
        // SAFETY: the caller's contract.
        let (c, path) = unsafe { (handle(client, "client")?.get()?, c_str(path, "path")?) };
        if flags & !ALL_FLAGS != 0 {
            return Err(Failure::invalid(format!("unknown flags {flags:#x}")));
        }
        if mapping.is_null() {
            return Err(Failure::invalid("mapping is NULL"));
        }
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Failure::invalid("offset + len overflows"))?;
        let opts = MapOptions {
            access: if flags & RMMAP_MAP_READ_WRITE != 0 {
                Access::ReadWrite
            } else {
                Access::ReadOnly
            },
            create: flags & RMMAP_MAP_CREATE != 0,
        };
        let memory = flags & RMMAP_MAP_MEMORY != 0;
        let target = block_on(Target::map(c, path, offset..end, opts, memory))??;
        let m = Box::into_raw(Box::new(rmmap_mapping {
            target,
            pid: std::process::id(),
        }));
        // SAFETY: checked not NULL; the caller vouches it is writable.
        unsafe { put(mapping, m, "mapping") }
    })
}

/// The mapping's length in bytes (0 for NULL).
///
/// # Safety
/// `mapping` is NULL or from `rmmap_map` and not unmapped.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_mapping_len(mapping: *const rmmap_mapping) -> u64 {
    crate::boundary::guard(0, || {
        // SAFETY: the caller's contract.
        unsafe { target(mapping) }.map_or(0, |t| t.len())
    })
}

/// The file's length when it was mapped (0 for NULL).
///
/// # Safety
/// `mapping` is NULL or from `rmmap_map` and not unmapped.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_mapping_file_len(mapping: *const rmmap_mapping) -> u64 {
    crate::boundary::guard(0, || {
        // SAFETY: the caller's contract.
        unsafe { target(mapping) }.map_or(0, |t| t.file_len())
    })
}

/// The first byte of a memory mapping (`RMMAP_MAP_MEMORY`): `len` bytes,
/// page-aligned, read and written with loads and stores (stores only for
/// `RMMAP_MAP_READ_WRITE`), coherent with every other client. NULL for other
/// mappings.
///
/// Ownership: the memory belongs to the mapping and is valid until
/// `rmmap_unmap`. A load or store that cannot be served raises SIGBUS
/// (see the README's "Memory mappings"); `rmmap_read` and `rmmap_write`
/// on the same mapping return errors instead.
///
/// # Safety
/// `mapping` is NULL or from `rmmap_map` and not unmapped.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_mapping_ptr(mapping: *const rmmap_mapping) -> *mut c_void {
    crate::boundary::guard(std::ptr::null_mut(), || {
        // SAFETY: the caller's contract.
        unsafe { target(mapping) }
            .ok()
            .and_then(Target::memory)
            .map_or(std::ptr::null_mut(), |p| p.cast())
    })
}

/// Reads `len` bytes at `offset` (from the start of the mapping) into
/// `buf`: the latest completed write of any client to each page. The whole
/// range must lie within the mapping (`RMMAP_OUT_OF_RANGE` otherwise).
///
/// Ownership: `buf` stays the caller's; it is written during the call only.
///
/// # Safety
/// `mapping` is from `rmmap_map`; `buf` is valid for writing `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_read(
    mapping: *const rmmap_mapping,
    offset: u64,
    buf: *mut c_void,
    len: usize,
) -> rmmap_error {
    status(|| {
        // SAFETY: the caller's contract.
        let (t, buf) = unsafe { (target(mapping)?, buffer_mut(buf, len)?) };
        Ok(block_on(t.read(offset, buf))??)
    })
}

/// Writes `len` bytes from `buf` at `offset`. When it returns
/// `RMMAP_OK`, every later read by any client sees them; they are on the
/// server's disk after `rmmap_sync`.
///
/// Ownership: `buf` stays the caller's; it is read during the call only.
///
/// # Safety
/// `mapping` is from `rmmap_map`; `buf` is valid for reading `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_write(
    mapping: *const rmmap_mapping,
    offset: u64,
    buf: *const c_void,
    len: usize,
) -> rmmap_error {
    status(|| {
        // SAFETY: the caller's contract.
        let (t, data) = unsafe { (target(mapping)?, buffer(buf, len)?) };
        Ok(block_on(t.write(offset, data))??)
    })
}

/// Makes every write completed so far on this mapping (for a memory
/// mapping, every store) durable on the server's disk (fsync).
///
/// # Safety
/// `mapping` is from `rmmap_map`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_sync(mapping: *const rmmap_mapping) -> rmmap_error {
    status(|| {
        // SAFETY: the caller's contract.
        let t = unsafe { target(mapping)? };
        Ok(block_on(t.sync())??)
    })
}

/// Runs `op` at the server and stores the word's previous value.
///
/// # Safety
/// `mapping` is from `rmmap_map`; `previous` is NULL or writable.
unsafe fn atomic(
    mapping: *const rmmap_mapping,
    offset: u64,
    op: AtomicOp,
    previous: *mut u64,
) -> Result<bool, Failure> {
    // SAFETY: the caller's contract.
    let t = unsafe { target(mapping)? };
    let (old, applied) = block_on(t.atomic(offset, op))??;
    if !previous.is_null() {
        // SAFETY: not NULL; the caller vouches it is writable.
        unsafe { previous.write(old) };
    }
    Ok(applied)
}

/// Adds `value` (wrapping) to the little-endian 64-bit word at `offset`,
/// at the server, atomically with every client's loads, stores, reads,
/// writes and atomics; stores the previous value in `*previous` (if not
/// NULL). The word must be 8-byte aligned in the file; the mapping
/// read-write.
///
/// # Safety
/// `mapping` is from `rmmap_map`; `previous` is NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_fetch_add(
    mapping: *const rmmap_mapping,
    offset: u64,
    value: u64,
    previous: *mut u64,
) -> rmmap_error {
    status(|| {
        // SAFETY: the caller's contract.
        unsafe { atomic(mapping, offset, AtomicOp::FetchAdd(value), previous) }.map(drop)
    })
}

/// Stores `value` in the little-endian 64-bit word at `offset`, at the
/// server, atomically; stores the previous value in `*previous` (if not
/// NULL). Alignment and access as for `rmmap_fetch_add`.
///
/// # Safety
/// `mapping` is from `rmmap_map`; `previous` is NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_swap(
    mapping: *const rmmap_mapping,
    offset: u64,
    value: u64,
    previous: *mut u64,
) -> rmmap_error {
    status(|| {
        // SAFETY: the caller's contract.
        unsafe { atomic(mapping, offset, AtomicOp::Swap(value), previous) }.map(drop)
    })
}

/// Stores `desired` in the little-endian 64-bit word at `offset` if it
/// holds `expected`, at the server, atomically. Stores the value the word
/// held in `*previous` (if not NULL) and whether it was replaced in
/// `*exchanged` (if not NULL): like C11's `atomic_compare_exchange_strong`,
/// it fails only when the word held something else. Alignment and access
/// as for `rmmap_fetch_add`.
///
/// # Safety
/// `mapping` is from `rmmap_map`; `previous` and `exchanged` are NULL or
/// valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_compare_exchange(
    mapping: *const rmmap_mapping,
    offset: u64,
    expected: u64,
    desired: u64,
    previous: *mut u64,
    exchanged: *mut bool,
) -> rmmap_error {
    status(|| {
        let op = AtomicOp::CompareExchange {
            expected,
            new: desired,
        };
        // SAFETY: the caller's contract.
        let applied = unsafe { atomic(mapping, offset, op, previous)? };
        if !exchanged.is_null() {
            // SAFETY: not NULL; the caller vouches it is writable.
            unsafe { exchanged.write(applied) };
        }
        Ok(())
    })
}

/// Writes back the mapping's dirty pages, ends it and frees `mapping`; a
/// memory mapping's memory goes with it. Call `rmmap_sync` first for the
/// writes to be on the server's disk.
///
/// Ownership: takes `mapping`, which is freed even when an error is
/// returned (the error says the write-back failed). NULL is ignored.
///
/// # Safety
/// `mapping` is NULL or from `rmmap_map`, not yet unmapped, and no other
/// thread uses it during or after the call; no pointer into its memory is
/// used after it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rmmap_unmap(mapping: *mut rmmap_mapping) -> rmmap_error {
    status(|| {
        if mapping.is_null() {
            return Ok(());
        }
        // SAFETY: made by Box::into_raw in rmmap_map, freed once.
        let m = unsafe { Box::from_raw(mapping) };
        if let Err(e) = check_same_process(m.pid) {
            // The parent's threads (a memory mapping's fault thread) are not
            // here to be stopped and joined: leave it all be.
            std::mem::forget(m);
            return Err(e);
        }
        Ok(block_on(m.target.unmap())??)
    })
}

/// Whether this process can make memory mappings (`RMMAP_MAP_MEMORY`):
/// `RMMAP_OK`, or `RMMAP_NO_MEMORY_MAPPINGS` with the reason in
/// `rmmap_strerror_last` (no userfaultfd, no write-protection, not Linux).
/// The server's page size must also be a multiple of the OS page size,
/// which only mapping can tell.
#[unsafe(no_mangle)]
pub extern "C" fn rmmap_memory_supported() -> rmmap_error {
    status(memory_support)
}

/// Whether memory mappings work in this process.
pub(crate) fn memory_support() -> Result<(), Failure> {
    #[cfg(target_os = "linux")]
    {
        Ok(rmmap_tokio::memory_support()?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(Failure::new(
            rmmap_error::RMMAP_NO_MEMORY_MAPPINGS,
            "memory mappings need Linux (userfaultfd)",
        ))
    }
}
