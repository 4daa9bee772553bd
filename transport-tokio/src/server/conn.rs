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
use rmmap_core::protocol::{
    FRAME_RESERVE_MAX, FrameCursor, HANDSHAKE_MAX_FRAME, Outbox, READ_CHUNK,
};

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
        let (ctl_tx, ctl_rx) = watch::channel(ReadState::Reading {
            frame_limit: HANDSHAKE_MAX_FRAME,
        });
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
    let mut frames = FrameCursor::default();
    loop {
        let state = *ctl.borrow_and_update();
        match state {
            ReadState::Closed => return,
            ReadState::Paused => {
                if ctl.changed().await.is_err() {
                    return;
                }
            }
            ReadState::Reading { frame_limit } => {
                make_room(&mut buf, &frames, want);
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
                            frames.advance(&buf[buf.len() - n..]);
                            for piece in pieces(&mut buf, &frames, frame_limit, want) {
                                if to_core.send(ToCore::Input(conn, piece)).await.is_err() {
                                    return;
                                }
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

/// Makes room in `buf` for the next read: `want` bytes once little is left,
/// except that the end of a frame that fits in what is left is read there
/// (beside its start, see [`pieces`]).
fn make_room(buf: &mut BytesMut, frames: &FrameCursor, want: usize) {
    let finishing = frames.rest() > 0 && frames.rest() <= buf.capacity() - buf.len();
    if buf.capacity() < want / 4 && !finishing {
        buf.reserve(want);
    }
}

/// Takes what was read out of `buf`, as one piece or two. When the frame
/// under way started in `buf` and its rest, up to `frame_limit` (and
/// [`FRAME_RESERVE_MAX`]), does not fit in what is left of the allocation,
/// its start moves into a new allocation sized for all of it (a copy of
/// one read at most), so that its later pieces land beside it and the core
/// joins them without copying (a 1 MiB write-back frame read 64 KiB at a
/// time was otherwise copied whole on the core thread).
fn pieces(
    buf: &mut BytesMut,
    frames: &FrameCursor,
    frame_limit: u32,
    want: usize,
) -> impl Iterator<Item = BytesMut> {
    let (got, rest) = (frames.received(), frames.rest());
    let fits = got + rest <= (frame_limit as usize).min(FRAME_RESERVE_MAX);
    let before = if rest == 0 || rest <= buf.capacity() - buf.len() || got > buf.len() || !fits {
        None
    } else {
        let start = buf.split_off(buf.len() - got);
        let before = buf.split();
        *buf = BytesMut::with_capacity((got + rest).max(want));
        buf.extend_from_slice(&start);
        Some(before)
    };
    [before, Some(buf.split())]
        .into_iter()
        .flatten()
        .filter(|p| !p.is_empty())
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

#[cfg(test)]
mod tests {
    use super::super::channels::follows;
    use super::*;

    /// Feeds `stream` through `pieces` in reads of `read` bytes, joining
    /// the pieces as the core task does and taking whole frames off the
    /// front as the core does; returns how many bytes the joins copied.
    fn copied_by_joins(stream: &[u8], read: usize, frame_limit: u32) -> usize {
        let (mut buf, mut frames, mut inbox) =
            (BytesMut::new(), FrameCursor::default(), BytesMut::new());
        let (mut copied, mut seen) = (0, Vec::new());
        let mut at = 0;
        while at < stream.len() {
            // As `read_loop` and `read_buf`: room made as there, a read
            // takes at most the room left.
            make_room(&mut buf, &frames, READ_CHUNK);
            let n = (buf.capacity() - buf.len())
                .min(read)
                .min(stream.len() - at);
            let chunk = &stream[at..at + n];
            at += n;
            buf.extend_from_slice(chunk);
            frames.advance(chunk);
            for piece in pieces(&mut buf, &frames, frame_limit, READ_CHUNK) {
                if inbox.is_empty() {
                    inbox = piece;
                } else if follows(&inbox, &piece) {
                    inbox.unsplit(piece);
                } else {
                    copied += piece.len();
                    inbox.extend_from_slice(&piece);
                }
                while let Some(p) = inbox.first_chunk::<4>() {
                    let total = u32::from_be_bytes(*p) as usize + 4;
                    if inbox.len() < total {
                        break;
                    }
                    seen.extend_from_slice(&inbox.split_to(total));
                }
            }
        }
        assert_eq!(seen, stream, "the core sees the stream as sent");
        copied
    }

    fn frame(body: usize) -> Vec<u8> {
        let mut f = (body as u32).to_be_bytes().to_vec();
        f.extend((0..body).map(|i| i as u8));
        f
    }

    #[test]
    fn a_large_frame_read_in_pieces_is_joined_without_copies() {
        let mut stream = frame(100);
        stream.extend(frame(1 << 20));
        stream.extend(frame(10));
        assert_eq!(copied_by_joins(&stream, READ_CHUNK, 2 << 20), 0);
        // A frame over what the core accepts gets no buffer sized for it:
        // its pieces are copied (the core refuses it at its prefix anyway).
        assert!(copied_by_joins(&stream, READ_CHUNK, 4096) > 0);
    }
}
