//! Identifiers that cross the wire.

use std::fmt;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident($inner:ty)) => {
        $(#[$meta])*
        #[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $inner);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id_type!(
    /// Names one request of a session. The client numbers requests 1, 2, 3...
    /// and never reuses a number within a session; a retransmission after a
    /// reconnect keeps its number, which is how the server applies it once.
    ReqId(u64)
);
id_type!(
    /// A session, unique within one server epoch.
    SessionId(u64)
);
id_type!(
    /// A mapping, as the server numbers it within one session.
    WireMappingId(u32)
);
id_type!(
    /// A file, as the server numbers it within one session. Two mappings of
    /// the same file (even by different paths) share one handle.
    FileHandle(u32)
);
id_type!(
    /// One revocation (invalidate or recall) sent to a session. Numbered 1, 2,
    /// 3... per session, in the order the server sends them.
    RevId(u64)
);

/// The index of a page in a file: page `n` covers bytes
/// `[n * page_size, (n + 1) * page_size)`.
pub type PageNo = u64;

/// The version of a page's contents at the server. Versions grow whenever the
/// server's copy changes and are never reused, not even by a later run of
/// the server (it records a floor in the export).
pub type Version = u64;

/// A secret that lets a client resume its session on a new connection.
pub type ResumeToken = [u8; 16];

/// Random bytes used once in the authentication handshake.
pub type Nonce = [u8; 16];
