//! Positioned IO without extra copies: reads into fresh memory without
//! zeroing it first, and writes of many slices in one `pwritev`, both
//! through rustix.
//!
//! A `Pages` reply reads up to a fetch's worth of bytes (4 MiB by default)
//! from the file into a new buffer. Zeroing that buffer before `pread`
//! overwrites it was 5% of the server's CPU time on a streaming read
//! (docs/BENCHMARKS.md); this reads into the buffer's spare capacity
//! instead and zeroes only what lies past the end of the file.
//!
//! A write-back of consecutive pages arrives as one patch per page, each
//! data slice apart from the next in the frame; joining them before one
//! `pwrite` was 13% of the server's CPU on a streaming write (perf).
//! Long runs also start their way to the disk at once (see
//! [`start_writeback`]).

use std::io::{self, IoSlice};
use std::os::fd::AsFd;

use rustix::buffer::spare_capacity;
use rustix::io::Errno;

/// Reads `len` bytes at `offset`; bytes past the end of the file (or past
/// the largest offset a file can have) read as zeros.
///
/// The buffer is a `Vec` of exactly `len` bytes' capacity that `pread` fills
/// through rustix's [`spare_capacity`], which extends the `Vec` by what the
/// kernel wrote: no zeroing first, and no `unsafe` here. A `Vec` whose
/// length is its capacity becomes `Bytes` without a copy.
#[cfg(test)]
pub(crate) fn read_exact_or_zeros(
    file: &impl AsFd,
    offset: u64,
    len: usize,
) -> io::Result<Vec<u8>> {
    read_exact_or_zeros_into(file, offset, len, Vec::with_capacity(len))
}

/// [`read_exact_or_zeros`] into `buf`, an empty buffer (of `len` bytes'
/// capacity, for no reallocation).
pub(crate) fn read_exact_or_zeros_into(
    file: &impl AsFd,
    offset: u64,
    len: usize,
    mut buf: Vec<u8>,
) -> io::Result<Vec<u8>> {
    buf.clear();
    buf.reserve_exact(len);
    while buf.len() < len {
        // Offsets past i64::MAX cannot be read; they read as zeros.
        let Some(at) = offset
            .checked_add(buf.len() as u64)
            .filter(|a| i64::try_from(*a).is_ok())
        else {
            break;
        };
        match rustix::io::pread(file, spare_capacity(&mut buf), at) {
            Ok(0) => break,
            Ok(_) => {}
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // `with_capacity` may give more room than asked for; bytes read into it
    // past `len` are not ours to return.
    buf.truncate(len);
    buf.resize(len, 0);
    Ok(buf)
}

/// Reads `len` bytes at `offset` only if no byte needs the disk
/// (`preadv2` with `RWF_NOWAIT`): `None` if one would (or on any error, or
/// a kernel without the flag; the caller then reads the usual way). Bytes
/// past the end of the file read as zeros. The buffer is zero-filled
/// first: this is for small reads, where that costs less than a thread
/// hand-over.
pub(crate) fn read_cached(file: &impl AsFd, offset: u64, len: usize) -> Option<Vec<u8>> {
    #[cfg(target_os = "linux")]
    {
        use rustix::io::ReadWriteFlags;
        let mut buf = vec![0u8; len];
        let mut done = 0usize;
        while done < len {
            let at = offset
                .checked_add(done as u64)
                .filter(|a| i64::try_from(*a).is_ok())?;
            let mut iov = [io::IoSliceMut::new(&mut buf[done..])];
            match rustix::io::preadv2(file, &mut iov, at, ReadWriteFlags::NOWAIT) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(Errno::INTR) => {}
                Err(_) => return None,
            }
        }
        Some(buf)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, offset, len);
        None
    }
}

/// Runs at least this long start their way to the disk at once.
const WRITEBACK_HINT_MIN: usize = 256 << 10;

/// Asks the kernel to start writing `[offset, offset + len)` to the disk
/// now, without waiting for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`).
///
/// A streaming writer's write-backs arrive in runs of a fetch's size; left
/// to the kernel's own write-back, they would all still be dirty when the
/// client's `sync` asks for `fsync`, which then writes everything at once
/// while the client waits. Started early, the disk writes while the
/// transfer goes on and `fsync` has little left. A hint only: durability
/// still comes from `fsync`, which reports any error, so this one's result
/// is ignored. Single pages (random writes, hot pages written again and
/// again) are left to the kernel, which may merge their rewrites.
///
/// The one `unsafe` of this module: rustix has no `sync_file_range`, so it
/// is called through libc. It passes no memory, only a descriptor that the
/// borrow keeps open and two integers.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &impl AsFd, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    let (Ok(at), Ok(n)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return;
    };
    let fd = file.as_fd().as_raw_fd();
    // SAFETY: a plain system call on a descriptor borrowed for the call;
    // no memory is passed.
    let _ = unsafe { libc::sync_file_range(fd, at, n, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Elsewhere the kernel's own write-back does it.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &impl AsFd, _offset: u64, _len: usize) {}

/// The most slices one `pwritev` takes (Linux's `IOV_MAX`).
const MAX_IOVECS: usize = 1024;

/// Writes `parts`, one after another, at `offset`, all of them.
pub(crate) fn write_all_vectored_at(
    file: &impl AsFd,
    mut offset: u64,
    parts: &[&[u8]],
) -> io::Result<()> {
    let (start, total) = (offset, parts.iter().map(|p| p.len()).sum::<usize>());
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        if i64::try_from(offset).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset too large",
            ));
        }
        let count = rest.len().min(MAX_IOVECS);
        let n = match rustix::io::pwritev(file, &rest[..count], offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the file took no bytes",
                ));
            }
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        offset += n as u64;
        IoSlice::advance_slices(&mut rest, n);
    }
    if total >= WRITEBACK_HINT_MIN {
        start_writeback(file, start, total);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_the_file_and_zeros_past_its_end() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[7u8; 5000]).unwrap();
        let b = read_exact_or_zeros(&f, 4000, 3000).unwrap();
        assert_eq!(b.len(), 3000);
        assert!(b[..1000].iter().all(|x| *x == 7));
        assert!(b[1000..].iter().all(|x| *x == 0));
        let far = read_exact_or_zeros(&f, u64::MAX - 10, 100).unwrap();
        assert_eq!(&far[..], &[0u8; 100][..]);
    }

    /// A file just written is in the page cache: the no-wait read gets it,
    /// with zeros past the end, as the usual read would.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_cached_read_matches_the_usual_one() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..9000u32).map(|i| i as u8).collect();
        f.write_all(&data).unwrap();
        for (offset, len) in [(0, 4096), (4000, 3000), (8000, 4096), (20000, 10)] {
            let want = read_exact_or_zeros(&f, offset, len).unwrap();
            match read_cached(&f, offset, len) {
                Some(got) => assert_eq!(got, want, "at {offset}"),
                // A kernel or file system without RWF_NOWAIT: the caller
                // reads the usual way.
                None => eprintln!("no RWF_NOWAIT here; skipped"),
            }
        }
        assert_eq!(
            read_cached(&f, u64::MAX - 10, 100),
            None,
            "past i64: the usual way"
        );
    }

    #[test]
    fn a_vectored_write_puts_every_slice_in_order() {
        let f = tempfile::tempfile().unwrap();
        // More slices than one pwritev takes, of different lengths.
        let data: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| vec![i as u8; 1 + (i % 7) as usize])
            .collect();
        let parts: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
        write_all_vectored_at(&f, 100, &parts).unwrap();
        let all =
            read_exact_or_zeros(&f, 0, 100 + data.iter().map(Vec::len).sum::<usize>()).unwrap();
        assert!(all[..100].iter().all(|b| *b == 0));
        assert_eq!(&all[100..], &data.concat()[..]);
    }
}
