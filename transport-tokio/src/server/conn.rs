//! The socket side of the server: the accept loop, and a reader and a writer
//! task per connection. They move bytes and nothing else, and none of them
//! can be held up by a peer: accept failures back off, read buffers are
//! bounded, writes time out.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rmmap_core::server::ConnId;
use tokio::io::{AsyncRead, AsyncReadExt, ReadHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use super::channels::{ReadState, SharedWriter, ToCore, lock};
use rmmap_core::protocol::{Outbox, READ_CHUNK};

use crate::net::Listener;

/// A connection's first reads take at most this much (the largest frame
/// before the handshake); the buffer grows, up to [`READ_CHUNK`], only while
/// reads fill it, so idle connections stay small.
const FIRST_READ: usize = 4096;
/// Wait this long before accepting again after `accept` failed (typically
/// out of file descriptors: the connection stays in the backlog), instead of
/// spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections until the core goes away (or this task is aborted).
/// Each writer gives up on a peer that takes no bytes for `write_timeout`.
pub(super) async fn accept_loop<L: Listener>(
    mut listener: L,
    to_core: mpsc::Sender<ToCore>,
    max_connections: usize,
    write_timeout: Duration,
) {
    let limit = Arc::new(Semaphore::new(max_connections.max(1)));
    // Failed accepts in a row: logged once when they start and once when
    // they end, not twenty times a second.
    let mut failures: u64 = 0;
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => {
                if failures > 0 {
                    tracing::info!(failures, "accepting connections again");
                    failures = 0;
                }
                x
            }
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(error = %e, "accept failed; retrying every {ACCEPT_BACKOFF:?}");
                }
                failures += 1;
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let (reader, writer) = tokio::io::split(stream);
        let writer: SharedWriter = Arc::new(Mutex::new(Box::pin(writer)));
        let (batches_tx, batches_rx) = mpsc::channel(1);
        let (ctl_tx, ctl_rx) = watch::channel(ReadState::Reading);
        let (reply_tx, reply_rx) = oneshot::channel();
        let open = ToCore::Open {
            direct: writer.clone(),
            writer: batches_tx,
            ctl: ctl_tx,
            reply: reply_tx,
        };
        if to_core.send(open).await.is_err() {
            return;
        }
        let Ok(conn) = reply_rx.await else { return };
        tracing::debug!(?conn, %peer, "accepted");
        tokio::spawn(write_loop(
            conn,
            writer,
            batches_rx,
            to_core.clone(),
            write_timeout,
        ));
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
    let mut want = FIRST_READ;
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
                if buf.capacity() < want / 4 {
                    buf.reserve(want);
                }
                let room = buf.capacity() - buf.len();
                // `biased`, so a simulated run replays exactly: a pause or
                // close takes effect before more is read.
                tokio::select! {
                    biased;
                    changed = ctl.changed() => if changed.is_err() { return },
                    r = reader.read_buf(&mut buf) => match r {
                        Ok(n) if n > 0 => {
                            if n == room {
                                want = (want * 2).min(READ_CHUNK);
                            }
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
/// the socket down when the core drops its end. A peer that takes no bytes
/// for `write_timeout` (it stopped reading) loses its connection, so a
/// closing connection cannot linger with its socket and its last batch.
async fn write_loop(
    conn: ConnId,
    writer: SharedWriter,
    mut batches: mpsc::Receiver<Vec<Bytes>>,
    to_core: mpsc::Sender<ToCore>,
    write_timeout: Duration,
) {
    while let Some(batch) = batches.recv().await {
        let mut out = Outbox::from(batch);
        while !out.is_empty() {
            let slices = out.io_slices();
            let write = poll_fn(|cx| lock(&writer).as_mut().poll_write_vectored(cx, &slices));
            match tokio::time::timeout(write_timeout, write).await {
                Ok(Ok(n)) if n > 0 => out.advance(n),
                stalled_or_broken => {
                    if stalled_or_broken.is_err() {
                        tracing::info!(
                            ?conn,
                            timeout = ?write_timeout,
                            "the peer took no bytes within the write timeout; closing"
                        );
                    }
                    let _ = to_core.send(ToCore::Gone(conn)).await;
                    return;
                }
            }
        }
        // A stream that buffers (TLS) may hold the batch's last bytes until
        // flushed; plain TCP flushes at once.
        let flush = poll_fn(|cx| lock(&writer).as_mut().poll_flush(cx));
        if !matches!(tokio::time::timeout(write_timeout, flush).await, Ok(Ok(()))) {
            let _ = to_core.send(ToCore::Gone(conn)).await;
            return;
        }
        if to_core.send(ToCore::Drained(conn)).await.is_err() {
            break;
        }
    }
    let shutdown = poll_fn(|cx| lock(&writer).as_mut().poll_shutdown(cx));
    let _ = tokio::time::timeout(Duration::from_secs(1), shutdown).await;
}

/// Accept errors that concern only the connection being accepted (it was
/// reset before we took it): accept the next one at once.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
}
