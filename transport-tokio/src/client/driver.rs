//! The client's background driver: a socket, a timer, a waker, a loop.
//!
//! Each turn feeds the core what happened (bytes, a connection opening or
//! breaking, time passing), then drains it under the lock: events are acted
//! on (connect, disconnect, route a completion to its waiter, publish a
//! connection event) and bytes to send are queued; then it waits for the
//! socket, the core's next deadline, or a wake-up from a handle. Reading and
//! writing are both always armed, so a server that stops reading while we
//! write cannot deadlock us.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rmmap_core::client::{Completion, Event, OpError, OpId};
use rmmap_core::protocol::{Outbox, READ_CHUNK, RecvBuffer};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::oneshot;

use super::{ClientEvent, ConnectError, Inner, Shared};
use crate::net::Connector;

/// How long the last bytes for a closed connection (a `Bye`) may take.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

type Connecting<S> = Pin<Box<dyn Future<Output = io::Result<S>> + Send>>;

struct Conn<S> {
    reader: ReadHalf<S>,
    writer: WriteHalf<S>,
}

/// What the driver learned while draining the core.
#[derive(Default)]
struct Drained {
    connect: bool,
    disconnect: bool,
    stop: Option<String>,
    first: Option<Result<(), String>>,
    /// Completions to hand to their waiters once the loop has acted.
    completed: Vec<(OpId, Result<Completion, OpError>)>,
}

pub(super) async fn run<C: Connector>(
    shared: Arc<Shared>,
    connector: C,
    addr: String,
    first: oneshot::Sender<Result<(), ConnectError>>,
) {
    let connector = Arc::new(connector);
    let mut first = Some(first);
    let mut conn: Option<Conn<C::Stream>> = None;
    let mut connecting: Option<Connecting<C::Stream>> = None;
    let mut out = Outbox::new();
    let mut inbuf = RecvBuffer::new();
    let mut close_op: Option<OpId> = None;
    // Bytes were written since the last flush: a stream that buffers (TLS)
    // may still hold some.
    let mut unflushed = false;

    let stopped = loop {
        // ---- drain the core ----
        let (mut drained, deadline, last) = {
            let mut g = shared.lock();
            if g.abandoned && close_op.is_none() && g.stopped.is_none() {
                let now = shared.now();
                match g.client.close(now) {
                    Ok(op) => close_op = Some(op),
                    Err(e) => break format!("the client was dropped ({e})"),
                }
            }
            let d = drain(&shared, &mut g, close_op);
            // After a Disconnect, what the core still queued (a `Bye`) is
            // the last of the old connection; otherwise it is for this one.
            let mut last = Vec::new();
            if d.disconnect || conn.is_some() {
                while let Some(b) = g.client.poll_transmit() {
                    last.push(b);
                }
            }
            let deadline = g.client.poll_timeout().map(|t| shared.clock.deadline(t));
            (d, deadline, last)
        };
        if drained.disconnect || drained.stop.is_some() {
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
        route(&shared, std::mem::take(&mut drained.completed));
        if let Some(r) = drained.first
            && let Some(tx) = first.take()
        {
            let r = r.map_err(|reason| ConnectError::Handshake {
                addr: addr.clone(),
                reason,
            });
            let failed = r.is_err();
            let _ = tx.send(r);
            if failed {
                break "the first connection failed".into();
            }
        }
        if let Some(why) = drained.stop {
            break why;
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
                if let Some(tx) = first.take() {
                    let reason = "the server closed the connection during the handshake".to_owned();
                    let _ = tx.send(Err(ConnectError::Handshake {
                        addr: addr.clone(),
                        reason,
                    }));
                    break "the first connection failed".into();
                }
                shared.lock().client.handle_disconnected(now);
            }
            Step::Opened(Ok(stream)) => {
                connecting = None;
                let (reader, writer) = tokio::io::split(stream);
                conn = Some(Conn { reader, writer });
                shared.lock().client.handle_connected(now);
            }
            Step::Opened(Err(source)) => {
                connecting = None;
                if let Some(tx) = first.take() {
                    let _ = tx.send(Err(ConnectError::Io {
                        addr: addr.clone(),
                        source,
                    }));
                    break "the first connection failed".into();
                }
                tracing::debug!(%addr, error = %source, "reconnection attempt failed");
                shared.lock().client.handle_connect_failed(now);
            }
            Step::Woken => {}
            Step::Timeout => shared.lock().client.handle_timeout(now),
        }
    };

    // Fail everything still waiting, and everything that comes later.
    let mut g = shared.lock();
    g.stopped = Some(stopped);
    g.waiters.clear();
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

/// Acts on the core's events; returns what the loop must do.
fn drain(shared: &Shared, g: &mut Inner, close_op: Option<OpId>) -> Drained {
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
                if Some(op) == close_op {
                    d.stop = Some(match &result {
                        Ok(_) => "the client was closed".into(),
                        Err(e) => format!("the client was closed: {e}"),
                    });
                }
                if matches!(result, Ok(Completion::Closed)) && d.stop.is_none() {
                    d.stop = Some("the client was closed".into());
                }
                d.completed.push((op, result));
            }
            Event::Connected { resumed } => {
                d.first = Some(Ok(()));
                let _ = shared.events.send(ClientEvent::Connected { resumed });
            }
            Event::ConnectionLost => {
                let _ = shared.events.send(ClientEvent::ConnectionLost);
            }
            Event::SessionLost { reason, lost } => {
                let _ = shared
                    .events
                    .send(ClientEvent::SessionLost { reason, lost });
            }
            Event::Failed { reason } => {
                let _ = shared.events.send(ClientEvent::Failed {
                    reason: reason.clone(),
                });
                if d.first.is_none() {
                    d.first = Some(Err(reason.clone()));
                }
                d.stop = Some(reason);
            }
            _ => {}
        }
    }
    if d.disconnect && d.first.is_none() {
        d.first = Some(Err("the server did not complete the handshake".into()));
    }
    d
}

/// Hands completed operations to whoever waits for them.
fn route(shared: &Shared, completed: Vec<(OpId, Result<Completion, OpError>)>) {
    if completed.is_empty() {
        return;
    }
    let mut g = shared.lock();
    for (op, result) in completed {
        if let Some(tx) = g.waiters.remove(&op) {
            let _ = tx.send(result);
        }
    }
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
