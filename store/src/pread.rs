//! Positioned reads into fresh memory, without zeroing it first.
//!
//! A `Pages` reply reads up to a fetch's worth of bytes (4 MiB by default)
//! from the file into a new buffer. Zeroing that buffer before `pread`
//! overwrites it was 5% of the server's CPU time on a streaming read
//! (docs/BENCHMARKS.md); this reads into the buffer's spare capacity
//! instead and zeroes only what lies past the end of the file.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

use bytes::BytesMut;

/// Reads `len` bytes at `offset`; bytes past the end of the file (or past
/// the largest offset a file can have) read as zeros.
pub(crate) fn read_exact_or_zeros(
    file: &impl AsRawFd,
    offset: u64,
    len: usize,
) -> io::Result<BytesMut> {
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        let Some(at) = offset
            .checked_add(buf.len() as u64)
            .and_then(|a| libc::off_t::try_from(a).ok())
        else {
            break;
        };
        let want = len - buf.len();
        let spare = &mut buf.spare_capacity_mut()[..want];
        // SAFETY: `spare` is valid for writes of `spare.len()` bytes, and
        // `pread` writes at most that many into it.
        let n =
            unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), at) };
        match n {
            0 => break,
            n if n > 0 => {
                // SAFETY: `pread` initialised the first `n` bytes of the
                // spare capacity, and `n <= spare.len()`.
                unsafe { buf.set_len(buf.len() + n as usize) };
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    buf.resize(len, 0);
    Ok(buf)
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
}
