//! What the clients report besides completions: connection events and
//! first-connection errors.

use rmmap_core::client::{LostWrites, MappingId, SessionLossReason};

/// What happened to a client's connection, for applications that watch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A handshake completed.
    Connected {
        /// The session lived on: nothing was lost.
        resumed: bool,
    },
    /// The connection was lost; the client reconnects by itself.
    ConnectionLost,
    /// The session could not be resumed: `lost` names every mapping that lost
    /// writes; its operations fail with `session_lost` until it is unmapped.
    SessionLost {
        /// Why.
        reason: SessionLossReason,
        /// The mappings that lost writes, and what they lost.
        lost: Vec<(MappingId, LostWrites)>,
    },
    /// The client failed for good (or was closed).
    Failed {
        /// Why.
        reason: String,
    },
}

/// Why [`Client::connect`](crate::Client::connect) failed.
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
    },
}
