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
    /// Read; a frame may be up to `frame_limit` bytes long (what the core
    /// accepts now: the reader may size a buffer for one that long).
    Reading { frame_limit: u32 },
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
    /// Bytes read from a connection. Pieces of one frame come from one
    /// allocation where the reader could size it (see `conn::read_loop`),
    /// so the core joins them with [`BytesMut::unsplit`], without a copy.
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

/// Whether `next` starts where `inbox` ends in memory (a later piece the
/// reader split off the same buffer), so that `unsplit` joins them without
/// copying.
pub(super) fn follows(inbox: &BytesMut, next: &BytesMut) -> bool {
    inbox.as_ptr().wrapping_add(inbox.len()) == next.as_ptr()
}
