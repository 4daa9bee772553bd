//! The client's background driver: a socket, a timer, a waker, a loop.
//!
//! Each turn feeds the core what happened (bytes, a connection opening or
//! breaking, time passing), then drains it under the lock: it notes whether
//! to connect or disconnect, takes the waiters of what completed, publishes
//! connection events and takes the bytes to send; then it hands the
//! completions to their waiters and waits for the socket, the core's next
//! deadline, or a wake-up from a handle. It stops when the core says the
//! client is closed. Reading and writing are both always armed, so a server
//! that stops reading while we write cannot deadlock us.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rmmap_core::client::{Completion, Event, OpError};
use rmmap_core::protocol::{Outbox, READ_CHUNK, RecvBuffer};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use super::{Inner, Shared, Waiter};
use crate::net::Connector;

/// How long the last bytes for a closed connection (a `Bye`) may take.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

type Connecting<S> = Pin<Box<dyn Future<Output = io::Result<S>> + Send>>;

struct Conn<S> {
    reader: ReadHalf<S>,
    writer: WriteHalf<S>,
}

/// What one drain of the core asks of the loop.
#[derive(Default)]
struct Drained {
    connect: bool,
    disconnect: bool,
    /// Completions, with their waiters, to hand over once the loop has
    /// acted (after a close's last bytes are written).
    completed: Vec<(Waiter, Result<Completion, OpError>)>,
}

pub(super) async fn run<C: Connector>(shared: Arc<Shared>, connector: C, addr: String) {
    let connector = Arc::new(connector);
    let mut conn: Option<Conn<C::Stream>> = None;
    let mut connecting: Option<Connecting<C::Stream>> = None;
    let mut out = Outbox::new();
    let mut inbuf = RecvBuffer::new();
    // Bytes were written since the last flush: a stream that buffers (TLS)
    // may still hold some.
    let mut unflushed = false;

    loop {
        shared.turned();
        // ---- drain the core ----
        let (drained, deadline, last, closed) = {
            let mut g = shared.lock();
            let d = drain(&shared, &mut g);
            // After a Disconnect, what the core still queued (a `Bye`) is
            // the last of the old connection; otherwise it is for this one.
            let mut last = Vec::new();
            if d.disconnect || conn.is_some() {
                while let Some(b) = g.client.poll_transmit() {
                    last.push(b);
                }
            }
            let deadline = g.client.poll_timeout().map(|t| shared.clock.deadline(t));
            (d, deadline, last, g.client.closed().is_some())
        };
        if drained.disconnect || closed {
            // The connection is over. Its last bytes (a `Bye` after a
            // close) go out before anyone hears that the close completed.
            if let Some(c) = conn.take()
                && !last.is_empty()
            {
                out.extend(last);
                final_flush(c.writer, std::mem::take(&mut out)).await;
            }
            connecting = None;
            out.clear();
            inbuf.clear();
            unflushed = false;
        } else {
            out.extend(last);
        }
        for (tx, result) in drained.completed {
            let _ = tx.send(result);
        }
        if closed {
            // Every operation has completed; the core refuses new ones.
            return;
        }
        if drained.connect {
            conn = None;
            out.clear();
            inbuf.clear();
            unflushed = false;
            let (c, a) = (connector.clone(), addr.clone());
            connecting = Some(Box::pin(async move { c.connect(&a).await }));
        }

        // ---- wait ----
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let connected = conn.is_some();
        let want_write = connected && (!out.is_empty() || unflushed);
        inbuf.make_room(READ_CHUNK);
        let (read, write) = match conn.as_mut() {
            Some(c) => (Some(&mut c.reader), Some(&mut c.writer)),
            None => (None, None),
        };
        // `biased`: branches are polled in this order rather than from a
        // random start, so a run under simulated time (turmoil) replays
        // exactly from its seed. The order cannot starve anything: a due
        // timer fires first and moves the deadline into the future; writing
        // stops when the socket's buffer is full; a wake-up only asks for
        // another turn, and every turn drains the core anyway.
        let step = tokio::select! {
            biased;
            _ = timer => Step::Timeout,
            r = write_some(write, &out), if want_write => match r {
                Ok(None) => Step::Flushed,
                Ok(Some(0)) | Err(_) => Step::Lost,
                Ok(Some(n)) => Step::Wrote(n),
            },
            r = async { read.expect("armed only when connected").read_buf(inbuf.bytes()).await }, if connected => {
                match r {
                    Ok(0) | Err(_) => Step::Lost,
                    Ok(_) => Step::Input,
                }
            }
            r = async { connecting.as_mut().expect("armed only when connecting").await }, if connecting.is_some() => {
                Step::Opened(r)
            }
            _ = shared.wake.notified() => Step::Woken,
        };

        // ---- feed the core ----
        let now = shared.now();
        tracing::trace!(step = step.name(), "client driver");
        match step {
            Step::Input => shared.lock().client.handle_input(now, inbuf.bytes()),
            Step::Wrote(n) => {
                out.advance(n);
                unflushed = true;
            }
            Step::Flushed => unflushed = false,
            Step::Lost => {
                conn = None;
                out.clear();
                inbuf.clear();
                unflushed = false;
                shared.lock().client.handle_disconnected(now);
            }
            Step::Opened(Ok(stream)) => {
                connecting = None;
                let (reader, writer) = tokio::io::split(stream);
                conn = Some(Conn { reader, writer });
                shared.lock().client.handle_connected(now);
            }
            Step::Opened(Err(error)) => {
                connecting = None;
                tracing::debug!(%addr, %error, "connection attempt failed");
                shared.lock().client.handle_connect_failed(now, error);
            }
            Step::Woken => {}
            Step::Timeout => shared.lock().client.handle_timeout(now),
        }
    }
}

impl<S> Step<S> {
    fn name(&self) -> &'static str {
        match self {
            Step::Input => "input",
            Step::Wrote(_) => "wrote",
            Step::Flushed => "flushed",
            Step::Lost => "lost",
            Step::Opened(_) => "opened",
            Step::Woken => "woken",
            Step::Timeout => "timeout",
        }
    }
}

enum Step<S> {
    Input,
    Wrote(usize),
    Flushed,
    Lost,
    Opened(io::Result<S>),
    Woken,
    Timeout,
}

/// Takes the core's events: what the loop must do, the waiters of what
/// completed; connection events go to the watchers.
fn drain(shared: &Shared, g: &mut Inner) -> Drained {
    let mut d = Drained::default();
    while let Some(ev) = g.client.poll_event() {
        tracing::trace!(?ev, "client event");
        match ev {
            Event::Connect => d.connect = true,
            Event::Disconnect => {
                d.disconnect = true;
                d.connect = false;
            }
            Event::Completed { op, result } => {
                if let Some(tx) = g.waiters.remove(&op) {
                    d.completed.push((tx, result));
                }
            }
            Event::Connection(ev) => {
                let _ = shared.events.send(ev);
            }
            _ => {}
        }
    }
    d
}

/// Writes from the front of the queue (`Some(n)`), or flushes when the
/// queue is empty (`None`).
async fn write_some<W: AsyncWrite + Unpin>(
    w: Option<&mut W>,
    out: &Outbox,
) -> io::Result<Option<usize>> {
    let w = w.expect("armed only when connected");
    if out.is_empty() {
        return w.flush().await.map(|()| None);
    }
    w.write_vectored(&out.io_slices()).await.map(Some)
}

async fn final_flush<W: AsyncWrite + Unpin>(mut w: W, chunks: Outbox) {
    let _ = tokio::time::timeout(FINAL_FLUSH, async {
        for b in chunks.into_chunks() {
            w.write_all(&b).await?;
        }
        w.shutdown().await
    })
    .await;
}
