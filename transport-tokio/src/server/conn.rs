//! The socket side of the server: the accept loop, and a reader and a writer
//! task per connection. They move bytes and nothing else.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rmmap_core::server::ConnId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use super::core_task::{ReadState, ToCore};
use crate::net::{Listener, advance};

/// Read at most this much at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Hand at most this many chunks to one vectored write.
const MAX_IOVECS: usize = 64;

/// Accepts connections until the core goes away (or this task is aborted).
pub(super) async fn accept_loop<L: Listener>(
    mut listener: L,
    to_core: mpsc::Sender<ToCore>,
    max_connections: usize,
) {
    let limit = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (reader, writer) = tokio::io::split(stream);
        let (batches_tx, batches_rx) = mpsc::channel(1);
        let (ctl_tx, ctl_rx) = watch::channel(ReadState::Reading);
        let (reply_tx, reply_rx) = oneshot::channel();
        let open = ToCore::Open {
            writer: batches_tx,
            ctl: ctl_tx,
            reply: reply_tx,
        };
        if to_core.send(open).await.is_err() {
            return;
        }
        let Ok(conn) = reply_rx.await else { return };
        tracing::debug!(?conn, %peer, "accepted");
        tokio::spawn(write_loop(conn, writer, batches_rx, to_core.clone()));
        tokio::spawn(read_loop(conn, reader, ctl_rx, to_core.clone(), permit));
    }
}

/// Reads while the core wants input; stops when it pauses the connection,
/// ends when the connection or the core does.
async fn read_loop<S: AsyncRead>(
    conn: ConnId,
    mut reader: ReadHalf<S>,
    mut ctl: watch::Receiver<ReadState>,
    to_core: mpsc::Sender<ToCore>,
    _permit: OwnedSemaphorePermit,
) {
    let mut buf = BytesMut::new();
    loop {
        let state = *ctl.borrow_and_update();
        match state {
            ReadState::Closed => return,
            ReadState::Paused => {
                if ctl.changed().await.is_err() {
                    return;
                }
            }
            ReadState::Reading => {
                if buf.capacity() < READ_CHUNK / 4 {
                    buf.reserve(READ_CHUNK);
                }
                // `biased`, so a simulated run replays exactly: a pause or
                // close takes effect before more is read.
                tokio::select! {
                    biased;
                    changed = ctl.changed() => if changed.is_err() { return },
                    r = reader.read_buf(&mut buf) => match r {
                        Ok(n) if n > 0 => {
                            if to_core.send(ToCore::Input(conn, buf.split())).await.is_err() {
                                return;
                            }
                        }
                        _ => {
                            let _ = to_core.send(ToCore::Gone(conn)).await;
                            return;
                        }
                    },
                }
            }
        }
    }
}

/// Writes each batch the core hands over, says when it is done, and shuts
/// the socket down when the core drops its end.
async fn write_loop<S: AsyncWrite>(
    conn: ConnId,
    mut writer: WriteHalf<S>,
    mut batches: mpsc::Receiver<Vec<Bytes>>,
    to_core: mpsc::Sender<ToCore>,
) {
    while let Some(batch) = batches.recv().await {
        let mut out: VecDeque<Bytes> = batch.into();
        while !out.is_empty() {
            let slices: Vec<IoSlice<'_>> = out
                .iter()
                .take(MAX_IOVECS)
                .map(|b| IoSlice::new(b))
                .collect();
            match writer.write_vectored(&slices).await {
                Ok(n) if n > 0 => advance(&mut out, n),
                _ => {
                    let _ = to_core.send(ToCore::Gone(conn)).await;
                    return;
                }
            }
        }
        if to_core.send(ToCore::Drained(conn)).await.is_err() {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
}
