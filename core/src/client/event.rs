//! What the client tells its adapter ([`Event`]) and, through it, the
//! application watching the connection ([`ClientEvent`]).

use super::{Completion, LostWrites, MappingId, OpError, OpId, SessionLossReason};

/// What the adapter or the application must know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Open a connection to the server now, then call
    /// [`Client::handle_connected`](super::Client::handle_connected) or
    /// [`Client::handle_connect_failed`](super::Client::handle_connect_failed).
    Connect,
    /// Close the current connection (or abandon the attempt): first write
    /// what [`Client::poll_transmit`](super::Client::poll_transmit) still
    /// returns (a `Bye`, for one), then close. The client already counts
    /// the connection as gone: do not call `handle_disconnected` for it.
    Disconnect,
    /// An operation finished: hand `result` to whoever holds the operation's
    /// [`Pending`](super::Pending).
    Completed {
        /// Which.
        op: OpId,
        /// How.
        result: Result<Completion, OpError>,
    },
    /// Something happened to the connection that the application may want
    /// to know: hand it on.
    Connection(ClientEvent),
}

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
    /// The session could not be resumed: `lost` names every mapping that
    /// lost writes, and the pages. Each such mapping also reports its loss
    /// once as [`OpError::SessionLost`]: to the operations waiting on it
    /// now, or else to its next operation, or else at its unmap (or the
    /// client's close). After that report it is mapped again and goes on
    /// with the server's bytes (a memory mapping hears it in one fault).
    /// Every other mapping is mapped again without a word.
    SessionLost {
        /// Why.
        reason: SessionLossReason,
        /// The mappings that lost writes, and what they lost.
        lost: Vec<(MappingId, LostWrites)>,
    },
    /// The client failed for good (wrong credentials, unsupported version,
    /// a required first connection that could not be made), or was closed.
    Failed {
        /// Why.
        reason: String,
    },
}
