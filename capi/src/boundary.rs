//! The boundary every exported function crosses: no panic gets out, and a
//! failure leaves its message (thread-local) and its `errno` behind.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{Failure, rmmap_error};

thread_local! {
    /// The message of this thread's last failure.
    static LAST: RefCell<CString> = RefCell::new(CString::default());
}

/// Runs the body of an exported function. A panic (a bug in this library
/// or below it) must not unwind into C, which is undefined behaviour: it is
/// caught, recorded as this thread's last failure, and `on_panic` is
/// returned instead. The model is rustls-ffi's `ffi_panic_boundary!`.
pub(crate) fn guard<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(payload) => {
            record(&Failure::new(
                rmmap_error::RMMAP_INTERNAL,
                format!(
                    "internal error in librmmap (a bug, please report it): {}",
                    panic_message(&*payload)
                ),
            ));
            on_panic
        }
    }
}

/// Runs the body of a function of the full API: a failure becomes its code
/// (and this thread's last message); a panic becomes `RMMAP_INTERNAL`.
pub(crate) fn status(body: impl FnOnce() -> Result<(), Failure>) -> rmmap_error {
    guard(rmmap_error::RMMAP_INTERNAL, || match body() {
        Ok(()) => rmmap_error::RMMAP_OK,
        Err(f) => {
            record(&f);
            f.code
        }
    })
}

/// Runs the body of a POSIX-style function of the seed (fmmap.h): its
/// value, or on failure `failed` (-1, `MAP_FAILED`) with `errno` and this
/// thread's last message set; a panic too.
pub(crate) fn posix<T: Copy>(failed: T, body: impl FnOnce() -> Result<T, Failure>) -> T {
    guard(failed, || {
        body().unwrap_or_else(|f| {
            record(&f);
            failed
        })
    })
}

/// Remembers `f` as this thread's last failure and sets `errno`.
pub(crate) fn record(f: &Failure) {
    let text = CString::new(f.message.replace('\0', " ")).unwrap_or_default();
    LAST.with(|l| *l.borrow_mut() = text);
    set_errno(f.errno);
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno, valid for
    // writes for the thread's lifetime.
    unsafe { *libc::__errno_location() = e }
}

#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
fn set_errno(e: c_int) {
    // SAFETY: __error returns this thread's errno, valid for writes for the
    // thread's lifetime.
    unsafe { *libc::__error() = e }
}

/// The message of the last call that failed on this thread (any function
/// of fmmap.h or rmmap.h), or `""` if none has. Calls that succeed leave it
/// as it was, as they leave `errno`.
///
/// Owned by the library: valid until the next failing call on this
/// thread; copy it to keep it. Never NULL; never free it.
#[unsafe(no_mangle)]
pub extern "C" fn rmmap_strerror_last() -> *const c_char {
    guard(c"".as_ptr(), || LAST.with(|l| l.borrow().as_ptr()))
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;

    fn last() -> String {
        // SAFETY: rmmap_strerror_last returns a valid C string.
        unsafe { CStr::from_ptr(rmmap_strerror_last()) }
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn a_panic_becomes_an_internal_error_with_its_message() {
        let r = status(|| panic!("the invariant broke"));
        assert_eq!(r, rmmap_error::RMMAP_INTERNAL);
        assert!(last().contains("the invariant broke"), "{}", last());
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EIO)
        );
    }

    #[test]
    fn a_failure_sets_the_message_and_errno_of_this_thread_only() {
        let r = status(|| Err(Failure::invalid("path is NULL")));
        assert_eq!(r, rmmap_error::RMMAP_INVALID_ARGUMENT);
        assert_eq!(last(), "path is NULL");
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EINVAL)
        );
        std::thread::spawn(|| assert_eq!(last(), ""))
            .join()
            .unwrap();
        assert_eq!(status(|| Ok(())), rmmap_error::RMMAP_OK);
        assert_eq!(last(), "path is NULL", "success leaves the message");
    }
}
