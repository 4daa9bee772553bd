//! What the connection tasks and the core task hand each other: the
//! messages to the core, the reader's on/off switch, and the shared writing
//! half. Both sides import it; neither imports the other.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use rmmap_core::server::ConnId;
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, oneshot, watch};

/// Whether a connection's reader should read.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum ReadState {
    Reading,
    /// The core has too much output queued for it.
    Paused,
    /// The connection is closing.
    Closed,
}

/// What the connection tasks tell the core.
pub(super) enum ToCore {
    /// A new connection; the reply names it.
    Open {
        direct: SharedWriter,
        writer: mpsc::Sender<Vec<Bytes>>,
        ctl: watch::Sender<ReadState>,
        reply: oneshot::Sender<ConnId>,
    },
    /// Bytes read from a connection.
    Input(ConnId, BytesMut),
    /// A connection's writer finished its batch.
    Drained(ConnId),
    /// A connection broke or its peer closed it.
    Gone(ConnId),
}

/// A connection's writing half, shared by its writer task and the core
/// task: the core task writes a batch itself when the writer is idle and
/// the socket takes it at once (see `CoreTask::feed_writer`), so a reply
/// costs no hand-off to another thread; the writer task takes what is left.
/// Only one of them uses it at a time (the writer only while it has a
/// batch), so the lock is never contended for long.
pub(super) type SharedWriter = Arc<Mutex<Pin<Box<dyn AsyncWrite + Send>>>>;

pub(super) fn lock(w: &SharedWriter) -> std::sync::MutexGuard<'_, Pin<Box<dyn AsyncWrite + Send>>> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}
