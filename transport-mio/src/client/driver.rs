//! The blocking client's IO thread: a socket, a timer, a waker, a loop.
//!
//! Each turn, under the lock (once per turn), it feeds the core what the
//! socket had, lets time pass if a deadline is due, has the [`Link`] drain
//! the core (connect, disconnect, write), takes the waiters of what
//! completed, and notes the next deadline; then, without the lock, it hands
//! events to the watchers and completions to their waiters; then it sleeps
//! in `Poll::poll` until the socket is ready, the deadline passes or a
//! handle wakes it. It stops when the core says the client is closed.

use std::sync::Arc;

use mio::{Events, Poll};

use super::{SOCKET, Shared};
use crate::clock::until;
use crate::link::{Link, Outcome};

pub(super) struct Driver {
    shared: Arc<Shared>,
    poll: Poll,
    link: Link,
}

impl Driver {
    pub(super) fn new(shared: Arc<Shared>, poll: Poll, link: Link) -> Self {
        Driver { shared, poll, link }
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut out = Outcome::default();
        loop {
            // ---- one locked turn: feed, drain, note the deadline ----
            // Everything that needs the core happens under one lock per
            // turn, and the waiters of what completed are taken out in the
            // same turn: a woken caller then finds the lock free instead of
            // contending with this thread (which costs context switches).
            let (deadline, waiters, closed) = {
                let shared = self.shared.clone();
                let mut g = shared.lock();
                let now = shared.now();
                for ev in events.iter().filter(|e| e.token() == SOCKET) {
                    self.link.handle_event(&mut g.client, now, ev, &mut out);
                }
                if g.client.poll_timeout().is_some_and(|t| t <= now) {
                    g.client.handle_timeout(now);
                }
                self.link.run(&mut g.client, now, &mut out);
                let waiters: Vec<_> = std::mem::take(&mut out.completed)
                    .into_iter()
                    .filter_map(|(op, result)| g.waiters.remove(&op).map(|tx| (tx, result)))
                    .collect();
                let deadline = g.client.poll_timeout().map(|t| shared.clock.deadline(t));
                (deadline, waiters, g.client.closed().is_some())
            };
            // Events first: a caller woken by a completion (connect
            // returning, say) must find the events that came before it
            // already told.
            for ev in std::mem::take(&mut out.events) {
                self.shared.publish(ev);
            }
            for (tx, result) in waiters {
                let _ = tx.send(result);
            }
            if closed {
                // Every operation has completed; the core refuses new ones.
                return;
            }

            // ---- wait ----
            if let Err(e) = self.poll.poll(&mut events, until(deadline)) {
                events.clear();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    // Nothing can drive the client any more: the next turn
                    // hands every operation its failure, then stops.
                    let why = format!("the client's poll failed: {e}");
                    self.shared.with(|c, now| c.fail(now, why));
                }
            }
        }
    }
}
