//! The blocking client's IO thread: a socket, a timer, a waker, a loop.
//!
//! Each turn, under the lock (once per turn), it feeds the core what the
//! socket had, lets time pass if a deadline is due, has the [`Link`] drain
//! the core (connect, disconnect, write), takes the waiters of what
//! completed, and notes the next deadline; then, without the lock, it hands
//! completions to their waiters and events to the watchers; then it sleeps
//! in `Poll::poll` until the socket is ready, the deadline passes or a
//! handle wakes it.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use mio::{Events, Poll};
use rmmap_core::client::{Completion, OpId};

use super::{SOCKET, Shared, Waiter};
use crate::clock::until;
use crate::event::{ClientEvent, ConnectError};
use crate::link::{Link, Outcome};

pub(super) struct Driver {
    shared: Arc<Shared>,
    poll: Poll,
    link: Link,
    /// Reports the first handshake to `Client::connect`.
    first: Option<SyncSender<Result<(), ConnectError>>>,
    /// The close started because every handle was dropped.
    close_op: Option<OpId>,
}

impl Driver {
    pub(super) fn new(
        shared: Arc<Shared>,
        poll: Poll,
        link: Link,
        first: SyncSender<Result<(), ConnectError>>,
    ) -> Self {
        Driver {
            shared,
            poll,
            link,
            first: Some(first),
            close_op: None,
        }
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut out = Outcome::default();
        let stopped = loop {
            // ---- one locked turn: feed, drain, note the deadline ----
            // Everything that needs the core happens under one lock per
            // turn, and the waiters of what completed are taken out in the
            // same turn: a woken caller then finds the lock free instead of
            // contending with this thread (which costs context switches).
            let (deadline, waiters) = {
                let shared = self.shared.clone();
                let mut g = shared.lock();
                let now = shared.now();
                for ev in events.iter().filter(|e| e.token() == SOCKET) {
                    self.link.handle_event(&mut g.client, now, ev, &mut out);
                }
                if g.abandoned && self.close_op.is_none() && g.stopped.is_none() {
                    match g.client.close(now) {
                        Ok(op) => self.close_op = Some(op),
                        Err(e) => break format!("the client was dropped ({e})"),
                    }
                }
                if g.client.poll_timeout().is_some_and(|t| t <= now) {
                    g.client.handle_timeout(now);
                }
                self.link.run(&mut g.client, now, &mut out);
                let waiters: Vec<Option<Waiter>> = out
                    .completed
                    .iter()
                    .map(|(op, _)| g.waiters.remove(op))
                    .collect();
                let deadline = g.client.poll_timeout().map(|t| shared.clock.deadline(t));
                (deadline, waiters)
            };
            if let Some(why) = self.act(std::mem::take(&mut out), waiters) {
                break why;
            }

            // ---- wait ----
            if let Err(e) = self.poll.poll(&mut events, until(deadline)) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    events.clear();
                    continue;
                }
                break format!("the client's poll failed: {e}");
            }
        };
        // Fail everything still waiting, and everything that comes later.
        let mut g = self.shared.lock();
        g.stopped = Some(stopped);
        g.waiters.clear();
    }

    /// Routes completions (to `waiters`, taken in the same order under the
    /// lock) and events; returns why to stop, if so.
    fn act(&mut self, out: Outcome, waiters: Vec<Option<Waiter>>) -> Option<String> {
        let mut stop = None;
        for (op, result) in &out.completed {
            if Some(*op) == self.close_op || matches!(result, Ok(Completion::Closed)) {
                stop = Some(match result {
                    Err(e) => format!("the client was closed: {e}"),
                    Ok(_) => "the client was closed".into(),
                });
            }
        }
        for ((_, result), tx) in out.completed.into_iter().zip(waiters) {
            if let Some(tx) = tx {
                let _ = tx.send(result);
            }
        }
        let mut first: Option<Result<(), ConnectError>> = None;
        let addr = self.link.addr().to_owned();
        for ev in out.events {
            match &ev {
                ClientEvent::Connected { .. } => first = first.or(Some(Ok(()))),
                ClientEvent::Failed { reason } => {
                    first = first.or_else(|| {
                        Some(Err(ConnectError::Handshake {
                            addr: addr.clone(),
                            reason: reason.clone(),
                        }))
                    });
                    stop = Some(reason.clone());
                }
                _ => {}
            }
            self.shared.publish(ev);
        }
        if let Some(source) = out.connect_failed {
            first = first.or(Some(Err(ConnectError::Io {
                addr: addr.clone(),
                source,
            })));
        }
        if out.lost || out.disconnected {
            let reason = if out.lost {
                "the server closed the connection during the handshake"
            } else {
                "the server did not complete the handshake"
            };
            first = first.or_else(|| {
                Some(Err(ConnectError::Handshake {
                    addr: addr.clone(),
                    reason: reason.into(),
                }))
            });
        }
        if let Some(r) = first
            && let Some(tx) = self.first.take()
        {
            let failed = r.is_err();
            let _ = tx.send(r);
            if failed {
                return Some("the first connection failed".into());
            }
        }
        stop
    }
}
