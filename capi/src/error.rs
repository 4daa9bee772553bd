//! What went wrong, as a C enum: the protocol's error kinds under their
//! wire numbers, then the client's own kinds; and as `errno` for the seed's
//! calls.

use std::ffi::{CStr, c_char, c_int};

use rmmap_tokio::{ConnectError, ErrorCode, MemoryError, OpError};

/// What went wrong (`RMMAP_OK`, 0, when nothing did). Values 1 to 99 are
/// the protocol's error kinds under their numbers on the wire
/// (docs/PROTOCOL.md, section 9); values from 100 are the client's own.
/// `rmmap_error_name` gives each one's word (`"not_found"`), and
/// `rmmap_strerror_last` the message of the last failure.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum rmmap_error {
    /// Success.
    RMMAP_OK = 0,
    /// A frame could not be parsed.
    RMMAP_MALFORMED = 1,
    /// The server speaks another protocol version.
    RMMAP_UNSUPPORTED_VERSION = 2,
    /// A valid frame arrived where the protocol does not allow it.
    RMMAP_PROTOCOL = 3,
    /// Authentication failed, or the client lacks the right.
    RMMAP_DENIED = 4,
    /// No such file.
    RMMAP_NOT_FOUND = 5,
    /// An offset or length outside the mapping or the file.
    RMMAP_OUT_OF_RANGE = 6,
    /// A write, atomic, creation or length change on something read-only.
    RMMAP_READ_ONLY = 7,
    /// The path is not a plain relative path under the export root.
    RMMAP_BAD_PATH = 8,
    /// The session has as many mappings as the server allows.
    RMMAP_TOO_MANY_MAPPINGS = 9,
    /// The session has as many requests in flight as the server allows.
    RMMAP_TOO_MANY_REQUESTS = 10,
    /// No such mapping.
    RMMAP_UNKNOWN_MAPPING = 11,
    /// The server's file system failed (the message names the file and why).
    RMMAP_IO = 12,
    /// Busy: too many operations pending, or the server's open files are
    /// all in use; may succeed later.
    RMMAP_BUSY = 13,
    /// The mapping lost writes with its session: reported once, then it goes
    /// on with the server's bytes. (After a failed write-back: unmap it and
    /// map again.)
    RMMAP_SESSION_LOST = 14,
    /// The server is shutting down.
    RMMAP_SHUTTING_DOWN = 15,
    /// The server has as many sessions as it allows.
    RMMAP_TOO_MANY_SESSIONS = 16,
    /// The path names something other than a regular file.
    RMMAP_NOT_A_FILE = 17,
    /// Written-back data for a page the session does not own.
    RMMAP_NOT_OWNER = 18,
    /// The session holds as many pages as the server allows.
    RMMAP_TOO_MANY_PAGES = 19,
    /// The peer took too long.
    RMMAP_TIMEOUT = 20,
    /// A frame longer than the negotiated maximum.
    RMMAP_FRAME_TOO_LARGE = 21,
    /// An atomic operation on a word that is not 8-byte aligned in the file.
    RMMAP_MISALIGNED = 22,
    /// The request was cancelled because its mapping was unmapped.
    RMMAP_CANCELLED = 23,
    /// The server's disk is full: written data is kept in the server's
    /// memory and not yet on its disk (a sync says so), or no more writes
    /// are accepted until space is freed.
    RMMAP_NO_SPACE = 24,
    /// The file's shard is owned by another member of a cluster (the
    /// message is its address): map it there.
    RMMAP_MOVED = 25,
    /// The mapping was unmapped while the operation waited.
    RMMAP_UNMAPPED = 100,
    /// The session was lost while the operation was in flight: it may or
    /// may not have taken effect.
    RMMAP_OUTCOME_UNKNOWN = 101,
    /// Disconnected from the server for longer than the give-up time; the
    /// client keeps trying to reconnect.
    RMMAP_DISCONNECTED = 102,
    /// The client was closed, or failed for good.
    RMMAP_CLOSED = 103,
    /// The operation does not apply (the message says why).
    RMMAP_UNSUPPORTED = 104,
    /// The first connection could not be opened.
    RMMAP_CONNECT_FAILED = 105,
    /// The connection opened but the handshake failed (credentials, TLS,
    /// protocol version, not an rmmap server).
    RMMAP_HANDSHAKE_FAILED = 106,
    /// An argument is invalid: a NULL pointer, a string that is not UTF-8,
    /// unknown flags, a handle of the wrong kind.
    RMMAP_INVALID_ARGUMENT = 107,
    /// Memory mappings are not available here (the message says what is
    /// missing: userfaultfd, its write-protection, the page size).
    RMMAP_NO_MEMORY_MAPPINGS = 108,
    /// A local file (CA certificate, token) could not be used.
    RMMAP_CONFIG = 109,
    /// A bug in librmmap (a Rust panic, caught at the boundary).
    RMMAP_INTERNAL = 110,
    /// The server sent an error code this library does not know.
    RMMAP_UNKNOWN = 111,
}

use rmmap_error::*;

/// Every code with its word: the protocol's kinds are spelled as
/// `ErrorCode::kind` spells them, the client's as `OpError::kind`.
const NAMES: &[(rmmap_error, &CStr)] = &[
    (RMMAP_OK, c"ok"),
    (RMMAP_MALFORMED, c"malformed"),
    (RMMAP_UNSUPPORTED_VERSION, c"unsupported_version"),
    (RMMAP_PROTOCOL, c"protocol"),
    (RMMAP_DENIED, c"denied"),
    (RMMAP_NOT_FOUND, c"not_found"),
    (RMMAP_OUT_OF_RANGE, c"out_of_range"),
    (RMMAP_READ_ONLY, c"read_only"),
    (RMMAP_BAD_PATH, c"bad_path"),
    (RMMAP_TOO_MANY_MAPPINGS, c"too_many_mappings"),
    (RMMAP_TOO_MANY_REQUESTS, c"too_many_requests"),
    (RMMAP_UNKNOWN_MAPPING, c"unknown_mapping"),
    (RMMAP_IO, c"io"),
    (RMMAP_BUSY, c"busy"),
    (RMMAP_SESSION_LOST, c"session_lost"),
    (RMMAP_SHUTTING_DOWN, c"shutting_down"),
    (RMMAP_TOO_MANY_SESSIONS, c"too_many_sessions"),
    (RMMAP_NOT_A_FILE, c"not_a_file"),
    (RMMAP_NOT_OWNER, c"not_owner"),
    (RMMAP_TOO_MANY_PAGES, c"too_many_pages"),
    (RMMAP_TIMEOUT, c"timeout"),
    (RMMAP_FRAME_TOO_LARGE, c"frame_too_large"),
    (RMMAP_MISALIGNED, c"misaligned"),
    (RMMAP_CANCELLED, c"cancelled"),
    (RMMAP_NO_SPACE, c"no_space"),
    (RMMAP_MOVED, c"moved"),
    (RMMAP_UNMAPPED, c"unmapped"),
    (RMMAP_OUTCOME_UNKNOWN, c"outcome_unknown"),
    (RMMAP_DISCONNECTED, c"disconnected"),
    (RMMAP_CLOSED, c"closed"),
    (RMMAP_UNSUPPORTED, c"unsupported"),
    (RMMAP_CONNECT_FAILED, c"connect_failed"),
    (RMMAP_HANDSHAKE_FAILED, c"handshake_failed"),
    (RMMAP_INVALID_ARGUMENT, c"invalid_argument"),
    (RMMAP_NO_MEMORY_MAPPINGS, c"no_memory_mappings"),
    (RMMAP_CONFIG, c"config"),
    (RMMAP_INTERNAL, c"internal"),
    (RMMAP_UNKNOWN, c"unknown"),
];

impl rmmap_error {
    /// The code's word, e.g. `not_found`.
    pub(crate) fn name(self) -> &'static CStr {
        NAMES
            .iter()
            .find(|(e, _)| *e == self)
            .map_or(c"unknown", |(_, n)| n)
    }

    /// The code whose number is `n`, if any.
    pub(crate) fn from_number(n: c_int) -> Option<rmmap_error> {
        NAMES.iter().map(|(e, _)| *e).find(|e| *e as c_int == n)
    }

    /// The code for a kind word (`OpError::kind`, `ErrorCode::kind`).
    fn from_kind(kind: &str) -> rmmap_error {
        NAMES
            .iter()
            .find(|(_, n)| n.to_bytes() == kind.as_bytes())
            .map_or(RMMAP_UNKNOWN, |(e, _)| *e)
    }
}

/// A failure: its code, its message, and the `errno` the seed's calls set.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: rmmap_error,
    pub(crate) message: String,
    pub(crate) errno: c_int,
}

impl Failure {
    pub(crate) fn new(code: rmmap_error, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            errno: errno_of(code),
        }
    }

    /// A bad argument from the caller.
    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(RMMAP_INVALID_ARGUMENT, message)
    }

    /// The same failure with another `errno`.
    pub(crate) fn with_errno(mut self, errno: c_int) -> Failure {
        self.errno = errno;
        self
    }
}

/// The `errno` of each code, as fmmap.h documents them: `ENOENT` missing
/// file, `EACCES` outside the root or denied, `EINVAL` out of range, a bad
/// argument or setting, `EROFS` a refused write, `ENOSPC` the server's disk
/// is full, `ENOTCONN` disconnected for longer than the give-up time, `EIO`
/// otherwise.
fn errno_of(code: rmmap_error) -> c_int {
    match code {
        RMMAP_OK => 0,
        RMMAP_NOT_FOUND => libc::ENOENT,
        RMMAP_DENIED | RMMAP_BAD_PATH => libc::EACCES,
        RMMAP_OUT_OF_RANGE
        | RMMAP_INVALID_ARGUMENT
        | RMMAP_MISALIGNED
        | RMMAP_UNKNOWN_MAPPING
        | RMMAP_CONFIG => libc::EINVAL,
        RMMAP_READ_ONLY => libc::EROFS,
        RMMAP_NO_SPACE => libc::ENOSPC,
        RMMAP_MOVED => libc::EREMOTE,
        RMMAP_DISCONNECTED | RMMAP_CLOSED => libc::ENOTCONN,
        RMMAP_CONNECT_FAILED => libc::ECONNREFUSED,
        RMMAP_TIMEOUT => libc::ETIMEDOUT,
        _ => libc::EIO,
    }
}

impl From<OpError> for Failure {
    fn from(e: OpError) -> Failure {
        let code = rmmap_error::from_kind(e.kind());
        Failure::new(code, e.to_string())
    }
}

impl From<ConnectError> for Failure {
    fn from(e: ConnectError) -> Failure {
        let message = e.to_string();
        match e {
            // The TLS handshake runs inside the connector: its failures
            // (certificate, name, a plaintext server) come as these kinds.
            ConnectError::Io { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                Failure::new(RMMAP_HANDSHAKE_FAILED, message)
            }
            ConnectError::Io { source, .. } => {
                let errno = connect_errno(&source);
                Failure::new(RMMAP_CONNECT_FAILED, message).with_errno(errno)
            }
            // The server refused these credentials: `EACCES`, as fmmap.h
            // promises for "denied"; the code stays the handshake's.
            ConnectError::Handshake {
                refused: Some(ErrorCode::Denied),
                ..
            } => Failure::new(RMMAP_HANDSHAKE_FAILED, message).with_errno(libc::EACCES),
            _ => Failure::new(RMMAP_HANDSHAKE_FAILED, message),
        }
    }
}

impl From<MemoryError> for Failure {
    fn from(e: MemoryError) -> Failure {
        match e {
            MemoryError::Map(op) => op.into(),
            // A rule of the API, not a missing capability.
            e @ MemoryError::Overlap { .. } => Failure::new(RMMAP_UNSUPPORTED, e.to_string()),
            other => Failure::new(RMMAP_NO_MEMORY_MAPPINGS, other.to_string()),
        }
    }
}

/// `ECONNREFUSED`, `ETIMEDOUT` or `EHOSTUNREACH` for a connection that
/// could not be opened, as the seed's `rmmap` promises; `EIO` for the rest.
fn connect_errno(e: &std::io::Error) -> c_int {
    use std::io::ErrorKind::*;
    match e.raw_os_error() {
        Some(n @ (libc::ECONNREFUSED | libc::ETIMEDOUT | libc::EHOSTUNREACH)) => n,
        Some(libc::ENETUNREACH | libc::EADDRNOTAVAIL) => libc::EHOSTUNREACH,
        _ => match e.kind() {
            ConnectionRefused => libc::ECONNREFUSED,
            TimedOut => libc::ETIMEDOUT,
            HostUnreachable | NetworkUnreachable => libc::EHOSTUNREACH,
            _ => libc::EIO,
        },
    }
}

/// The word of the code numbered `code` (`"not_found"` for
/// `RMMAP_NOT_FOUND`), or `"unknown"` for a number that is no code.
///
/// Owned by the library: a static string, never freed.
#[unsafe(no_mangle)]
pub extern "C" fn rmmap_error_name(code: c_int) -> *const c_char {
    crate::boundary::guard(c"internal".as_ptr(), || {
        rmmap_error::from_number(code)
            .map_or(c"unknown", rmmap_error::name)
            .as_ptr()
    })
}

#[cfg(test)]
mod tests {
    use rmmap_core::protocol::ErrorCode;

    use super::*;

    #[test]
    fn every_protocol_error_kind_has_its_wire_number_and_word_in_the_c_enum() {
        let mut known = 0;
        for n in 0..=u16::MAX {
            let code = ErrorCode::from_u16(n);
            if matches!(code, ErrorCode::Unknown(_)) {
                continue;
            }
            known += 1;
            let c = rmmap_error::from_number(c_int::from(n)).unwrap_or_else(|| {
                panic!("protocol code {n} ({code}) is missing from rmmap_error")
            });
            assert_eq!(c.name().to_str().unwrap(), code.kind(), "code {n}");
            assert!(n < 100, "protocol codes must stay below the client's own");
        }
        assert!(known >= 25);
        // And nothing below 100 that the protocol does not have.
        for (e, name) in NAMES {
            let n = *e as c_int;
            if (1..100).contains(&n) {
                let wire = ErrorCode::from_u16(n as u16);
                assert_eq!(wire.kind(), name.to_str().unwrap(), "rmmap_error {n}");
            }
        }
    }

    #[test]
    fn every_client_error_kind_has_a_c_code() {
        let errors = [
            OpError::OutOfRange {
                offset: 1,
                len: 1,
                mapping_len: 1,
            },
            OpError::ReadOnly,
            OpError::Misaligned(3),
            OpError::UnknownMapping,
            OpError::MappingClosed,
            OpError::OutcomeUnknown,
            OpError::Disconnected(std::time::Duration::from_secs(1)),
            OpError::Closed("x".into()),
            OpError::Busy(1),
            OpError::Unsupported("x"),
        ];
        for e in errors {
            let f = Failure::from(e.clone());
            assert_ne!(f.code, RMMAP_UNKNOWN, "{e:?}");
            assert_eq!(f.code.name().to_str().unwrap(), e.kind());
        }
    }

    #[test]
    fn a_server_out_of_reach_sets_the_errno_the_seed_promises() {
        use std::io::{Error, ErrorKind};
        let cases = [
            (
                Error::from_raw_os_error(libc::ECONNREFUSED),
                libc::ECONNREFUSED,
            ),
            (Error::from_raw_os_error(libc::ETIMEDOUT), libc::ETIMEDOUT),
            (
                Error::from_raw_os_error(libc::EHOSTUNREACH),
                libc::EHOSTUNREACH,
            ),
            (
                Error::from_raw_os_error(libc::ENETUNREACH),
                libc::EHOSTUNREACH,
            ),
            (Error::from(ErrorKind::TimedOut), libc::ETIMEDOUT),
            (Error::from(ErrorKind::HostUnreachable), libc::EHOSTUNREACH),
            (Error::from(ErrorKind::PermissionDenied), libc::EIO),
        ];
        for (source, errno) in cases {
            let what = source.to_string();
            let f = Failure::from(ConnectError::Io {
                addr: "192.0.2.1:7878".into(),
                source,
            });
            assert_eq!(f.code, RMMAP_CONNECT_FAILED);
            assert_eq!(f.errno, errno, "{what}");
        }
        let tls = Error::new(ErrorKind::InvalidData, "not signed by a trusted authority");
        let f = Failure::from(ConnectError::Io {
            addr: "localhost:7878".into(),
            source: tls,
        });
        assert_eq!((f.code, f.errno), (RMMAP_HANDSHAKE_FAILED, libc::EIO));
    }

    #[test]
    fn names_are_unique_and_numbers_round_trip() {
        for (i, (e, n)) in NAMES.iter().enumerate() {
            assert_eq!(rmmap_error::from_number(*e as c_int), Some(*e));
            assert!(NAMES[i + 1..].iter().all(|(f, m)| f != e && m != n));
        }
        assert_eq!(rmmap_error::from_number(99), None);
    }
}
