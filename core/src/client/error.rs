//! What can go wrong with an application operation.

use std::fmt;

use crate::protocol::ErrorCode;

use super::MappingId;

/// Why a session was lost.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SessionLossReason {
    /// The server restarted: writes it had not synced may be gone.
    ServerRestarted,
    /// The client was out of touch longer than its lease and the server
    /// ended the session: dirty pages it had not written back are gone.
    LeaseExpired,
    /// The cluster member serving the file stopped serving it without
    /// handing it over (it died, or was cut off from etcd past its lease),
    /// and another member serves it now: writes that member had not synced
    /// may be gone, as after a server restart.
    MemberLost,
}

impl fmt::Display for SessionLossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionLossReason::ServerRestarted => "the server restarted",
            SessionLossReason::LeaseExpired => {
                "the lease ran out while the client was out of touch"
            }
            SessionLossReason::MemberLost => {
                "the cluster member serving the file stopped serving it; another member serves it now"
            }
        })
    }
}

/// ` (file page(s) 1,2,3 and 40 more)`.
fn write_pages(f: &mut fmt::Formatter<'_>, pages: &[u64]) -> fmt::Result {
    const SHOWN: usize = 16;
    let shown: Vec<String> = pages.iter().take(SHOWN).map(u64::to_string).collect();
    write!(f, " (file page(s) {}", shown.join(","))?;
    if pages.len() > SHOWN {
        write!(f, " and {} more", pages.len() - SHOWN)?;
    }
    write!(f, ")")
}

/// Why a mapping lost writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LossCause {
    /// The session was lost.
    Session(SessionLossReason),
    /// The server refused or failed a write-back (the message says why).
    WriteBackFailed(String),
}

impl fmt::Display for LossCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossCause::Session(r) => write!(f, "session lost: {r}"),
            LossCause::WriteBackFailed(m) => write!(f, "a write-back failed: {m}"),
        }
    }
}

/// What a mapping lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostWrites {
    /// The file.
    pub path: String,
    /// Why.
    pub cause: LossCause,
    /// Pages written by this client and not yet written back to the server
    /// (or whose write-back was unconfirmed): their changes are gone.
    pub dirty_pages: u64,
    /// The server restarted after writes since the last `sync` of this
    /// mapping: some of them may be gone.
    pub unsynced_writes: bool,
    /// The mapping could not be re-established on the new session.
    pub remap_error: Option<Box<str>>,
    /// The file pages (page numbers of the file, ascending) whose writes
    /// were lost: the `dirty_pages` and unconfirmed ones.
    pub pages: Vec<u64>,
    /// With `unsynced_writes`: the file pages (ascending) written since
    /// their last sync, handed to the server but perhaps not on its disk
    /// when it restarted; the server kept some, none or all of them, and
    /// its bytes are what the mapping reads now. Empty when more than
    /// 65,536 pages were written without a sync (they are not named).
    pub unsynced_pages: Box<[u64]>,
}

impl fmt::Display for LostWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.cause, self.path)?;
        if self.dirty_pages > 0 {
            write!(
                f,
                "; {} page(s) of writes not yet written back are lost",
                self.dirty_pages
            )?;
        }
        if !self.pages.is_empty() {
            write_pages(f, &self.pages)?;
        }
        if self.unsynced_writes {
            write!(f, "; writes since the last sync may be lost")?;
            if !self.unsynced_pages.is_empty() {
                write_pages(f, &self.unsynced_pages)?;
            }
        }
        if let Some(e) = &self.remap_error {
            write!(f, "; the mapping could not be restored: {e}")?;
        }
        match self.cause {
            // Reported once; the mapping then goes on (see `OpError::SessionLost`).
            LossCause::Session(_) if self.remap_error.is_some() => {
                write!(f, ". It is mapped again at its next use")
            }
            LossCause::Session(_) => write!(
                f,
                ". The mapping goes on with the server's bytes for those pages"
            ),
            LossCause::WriteBackFailed(_) => write!(f, ". Unmap and map again to continue"),
        }
    }
}

/// An application operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The server refused the request.
    #[error("{code}: {message}")]
    Server {
        /// Its code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// An offset or length outside the mapping.
    #[error("{len} bytes at offset {offset} reach past the end of the {mapping_len}-byte mapping")]
    OutOfRange {
        /// Requested offset (relative to the mapping).
        offset: u64,
        /// Requested length.
        len: u64,
        /// The mapping's length.
        mapping_len: u64,
    },
    /// A range whose end comes before its start (given to `map`).
    #[error("the range {start}..{end} ends before it starts")]
    ReversedRange {
        /// Where it starts.
        start: u64,
        /// Where it ends.
        end: u64,
    },
    /// A read larger than this process can allocate a buffer for.
    #[error("a buffer for {len} bytes cannot be allocated; read less at a time")]
    TooLarge {
        /// The length asked for.
        len: u64,
    },
    /// A write or atomic on a read-only mapping.
    #[error("the mapping is read-only")]
    ReadOnly,
    /// An atomic operation on a word that is not 8-byte aligned in the file.
    #[error("offset {0} is not 8-byte aligned in the file")]
    Misaligned(u64),
    /// No such mapping (never mapped, or unmapped).
    #[error("no such mapping")]
    UnknownMapping,
    /// The mapping was unmapped while the operation waited.
    #[error("the mapping was unmapped")]
    MappingClosed,
    /// The mapping lost writes (with its session, or in a failed write-back).
    ///
    /// Reported once per loss: to the operations waiting on the mapping
    /// when it happened, or else to the next operation on it, or else by its
    /// `unmap` (or the client's `close`). After a loss with its session has
    /// been reported the mapping is mapped again and goes on with the
    /// server's bytes (a memory mapping hears it in one fault, then faults
    /// the lost pages in again); after a failed write-back its operations
    /// keep failing until it is unmapped.
    #[error("{0}")]
    SessionLost(LostWrites),
    /// The operation was in flight when the session was lost: it may or may
    /// not have happened (at most once).
    #[error(
        "the session was lost while the operation was in flight; it may or may not have taken effect"
    )]
    OutcomeUnknown,
    /// The client has been disconnected for too long.
    #[error("disconnected from the server for {0:?}; still trying to reconnect")]
    Disconnected(std::time::Duration),
    /// The client was closed, or failed for good (bad credentials, version).
    #[error("the client is closed: {0}")]
    Closed(String),
    /// Too many operations are pending.
    #[error("too many operations pending ({0})")]
    Busy(usize),
    /// The operation does not apply to this mapping (the message says why).
    #[error("{0}")]
    Unsupported(&'static str),
    /// A map whose range overlaps one of this client's memory mappings of
    /// the same file (or a memory mapping over one of its mappings): a
    /// range mapped into memory is read and written through that memory
    /// only, so that no copy of its pages goes stale beside it. Kind
    /// `unsupported`.
    #[error(
        "bytes {start}..{end} of {path} overlap mapping {}, which maps them into memory: \
         read and write them through that memory mapping, or unmap it first",
        other.0
    )]
    Overlap {
        /// The file.
        path: String,
        /// The range asked for.
        start: u64,
        /// Its end.
        end: u64,
        /// The mapping it overlaps.
        other: MappingId,
    },
    /// A cluster member named another as the owner of the file (`moved`),
    /// and no connection to that member could be made. Kind
    /// `connect_failed`.
    #[error("cannot connect to {addr}, the member the request was sent on to: {reason}")]
    Unreachable {
        /// The member's address.
        addr: String,
        /// Why the connection failed.
        reason: String,
    },
    /// A bug in rmmap: a state the client should never reach. The message
    /// says what; please report it.
    #[error("internal error (a bug in rmmap; please report it): {0}")]
    Internal(String),
}

impl OpError {
    /// One lowercase word for programs and the `rmmap shell`.
    pub fn kind(&self) -> &'static str {
        match self {
            OpError::Server { code, .. } => code.kind(),
            OpError::OutOfRange { .. } | OpError::ReversedRange { .. } => "out_of_range",
            OpError::TooLarge { .. } => "too_large",
            OpError::ReadOnly => "read_only",
            OpError::Misaligned(_) => "misaligned",
            OpError::UnknownMapping => "unknown_mapping",
            OpError::MappingClosed => "unmapped",
            OpError::SessionLost(_) => "session_lost",
            OpError::OutcomeUnknown => "outcome_unknown",
            OpError::Disconnected(_) => "disconnected",
            OpError::Closed(_) => "closed",
            OpError::Busy(_) => "busy",
            OpError::Unsupported(_) | OpError::Overlap { .. } => "unsupported",
            OpError::Unreachable { .. } => "connect_failed",
            OpError::Internal(_) => "internal",
        }
    }

    pub(crate) fn server(code: ErrorCode, message: impl Into<String>) -> Self {
        OpError::Server {
            code,
            message: message.into(),
        }
    }
}

/// Why a client's required first connection failed
/// ([`Client::require_first_connection`](super::Client::require_first_connection)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The connection could not be opened.
    #[error("cannot connect to {addr}: {source}")]
    Io {
        /// The address tried.
        addr: String,
        /// What the network said.
        source: std::io::Error,
    },
    /// The connection opened but the handshake failed (wrong credentials,
    /// another protocol version, not an rmmap server, too slow).
    #[error("the handshake with {addr} failed: {reason}")]
    Handshake {
        /// The address tried.
        addr: String,
        /// Why.
        reason: String,
        /// The server's refusal, when the server refused the handshake
        /// (`Denied` for credentials it does not accept, `Busy`, ...);
        /// `None` when the handshake failed otherwise (closed, too slow).
        refused: Option<ErrorCode>,
    },
}
