//! Stable numeric error codes carried by `Error` frames.

use std::fmt;

macro_rules! codes {
    ($( $(#[$meta:meta])* $variant:ident = $value:literal, $kind:literal; )*) => {
        /// What went wrong, as a stable number on the wire and a stable word
        /// (the `kind`) for programs and the `rmmap shell`.
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$meta])* $variant, )*
            /// A code this implementation does not know (from a newer peer).
            Unknown(u16),
        }

        impl ErrorCode {
            /// The number on the wire.
            pub fn to_u16(self) -> u16 {
                match self {
                    $( ErrorCode::$variant => $value, )*
                    ErrorCode::Unknown(v) => v,
                }
            }

            /// The code for a number from the wire.
            pub fn from_u16(v: u16) -> Self {
                match v {
                    $( $value => ErrorCode::$variant, )*
                    other => ErrorCode::Unknown(other),
                }
            }

            /// One lowercase word with underscores, e.g. `out_of_range`.
            pub fn kind(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $kind, )*
                    ErrorCode::Unknown(_) => "unknown",
                }
            }
        }
    };
}

codes! {
    /// The frame could not be parsed.
    Malformed = 1, "malformed";
    /// The client speaks a protocol version the server does not.
    UnsupportedVersion = 2, "unsupported_version";
    /// A valid frame arrived where the protocol does not allow it.
    Protocol = 3, "protocol";
    /// Authentication failed or the client lacks the right.
    Denied = 4, "denied";
    /// No such file.
    NotFound = 5, "not_found";
    /// An offset or length lies outside the mapping or the file.
    OutOfRange = 6, "out_of_range";
    /// A write to something that is read-only.
    ReadOnly = 7, "read_only";
    /// The path is not a plain relative path under the export root.
    BadPath = 8, "bad_path";
    /// The session has as many mappings as the server allows.
    TooManyMappings = 9, "too_many_mappings";
    /// The session has as many requests in flight as the server allows.
    TooManyRequests = 10, "too_many_requests";
    /// The mapping id names no live mapping of this session.
    UnknownMapping = 11, "unknown_mapping";
    /// The server's file system failed.
    Io = 12, "io";
    /// The request conflicts with the current state and may succeed later.
    Busy = 13, "busy";
    /// The session no longer exists.
    SessionLost = 14, "session_lost";
    /// The server is shutting down.
    ShuttingDown = 15, "shutting_down";
    /// The server has as many sessions as it allows.
    TooManySessions = 16, "too_many_sessions";
    /// The path names something other than a regular file.
    NotAFile = 17, "not_a_file";
    /// Written-back data for a page the session does not own.
    NotOwner = 18, "not_owner";
    /// The session holds as many pages as the server allows.
    TooManyPages = 19, "too_many_pages";
    /// The peer took too long.
    Timeout = 20, "timeout";
    /// A frame longer than the negotiated maximum.
    FrameTooLarge = 21, "frame_too_large";
    /// An atomic operation on a word that is not 8-byte aligned.
    Misaligned = 22, "misaligned";
    /// The request was cancelled because its mapping was unmapped.
    Cancelled = 23, "cancelled";
    /// The server's file system is full: written data is kept in the
    /// server's memory and not yet on its disk, or no more can be accepted.
    NoSpace = 24, "no_space";
    /// The file's shard is owned by another cluster member; the message is its address.
    Moved = 25, "moved";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}
