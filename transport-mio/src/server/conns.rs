//! The server's connections and the core they feed: bytes in (bounded, and
//! not at all while the core has paused a connection), bytes out (a batch at
//! a time, so that unsent bytes wait in the core's queue where its output
//! limits see them; a peer that takes none of them for the write timeout is
//! dropped), closes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use mio::{Interest, Registry, Token};
use rmmap_core::protocol::{FRAME_RESERVE_MAX, Outbox, READ_CHUNK, frame_rest};
use rmmap_core::server::{ConnId, InputStatus, Server as Core, ServerEvent};
use rmmap_core::store::{StoreDone, StoreError, StoreId};

use crate::clock::Clock;
use crate::wire::Wire;

/// A connection's first reads take at most this much (the largest frame
/// before the handshake); the buffer grows, up to [`READ_CHUNK`], only while
/// reads fill it, so that idle connections stay small (the buffer is
/// zero-filled before each read, so its size is resident memory).
const FIRST_READ: usize = 4096;
/// Read at most this many chunks from one connection per turn of the loop,
/// so that one busy client cannot starve the others.
const READS_PER_TURN: usize = 16;
/// Take at most this many bytes from the core per batch.
const BATCH_BYTES: usize = 256 * 1024;
/// A closing connection gets this long to take its last bytes.
const FINAL_FLUSH: Duration = Duration::from_secs(2);
/// The first connection token; lower ones are the listener's and the waker's.
const FIRST_CONN_TOKEN: usize = 2;

pub(super) fn token_of(conn: ConnId) -> Token {
    Token(usize::try_from(conn.0).unwrap_or(usize::MAX - FIRST_CONN_TOKEN) + FIRST_CONN_TOKEN)
}

pub(super) fn conn_of(token: Token) -> ConnId {
    ConnId(token.0.saturating_sub(FIRST_CONN_TOKEN) as u64)
}

struct Slot {
    stream: Wire,
    /// Bytes read but not yet taken by the core (a partial frame, or input
    /// held back while paused).
    inbox: BytesMut,
    /// Bytes taken from the core, not yet written (at most a batch).
    out: Outbox,
    /// How much the next read asks for.
    read_size: usize,
    /// Since when the socket has taken none of `out`.
    stalled_since: Option<std::time::Instant>,
    /// The core has too much output queued for this connection.
    paused: bool,
    /// The core asked to close: flush, then disconnect, by this instant.
    closing: Option<std::time::Instant>,
}

/// Every open connection, and the core.
pub(super) struct Conns {
    core: Core,
    clock: Clock,
    registry: Registry,
    slots: BTreeMap<ConnId, Slot>,
    /// Connections that may have unread input (reading stopped before the
    /// socket would block).
    unread: BTreeSet<ConnId>,
    /// A peer that takes no bytes for this long is dropped.
    write_timeout: Duration,
}

impl Conns {
    pub(super) fn new(
        core: Core,
        clock: Clock,
        registry: Registry,
        write_timeout: Duration,
    ) -> Self {
        Conns {
            core,
            clock,
            registry,
            slots: BTreeMap::new(),
            unread: BTreeSet::new(),
            write_timeout,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub(super) fn has_unread(&self) -> bool {
        !self.unread.is_empty()
    }

    pub(super) fn poll_event(&mut self) -> Option<ServerEvent> {
        self.core.poll_event()
    }

    /// Lets time pass in the core if its deadline is due.
    pub(super) fn handle_timeout(&mut self) {
        let now = self.clock.now();
        if self.core.poll_timeout().is_none_or(|t| t <= now) {
            self.core.handle_timeout(now);
        }
    }

    /// A store request finished.
    pub(super) fn handle_store_done(&mut self, id: StoreId, result: Result<StoreDone, StoreError>) {
        self.core.handle_store_done(self.clock.now(), id, result);
    }

    pub(super) fn begin_shutdown(&mut self) {
        self.core.begin_shutdown(self.clock.now());
    }

    /// The core's next deadline, or a closing or stalled connection's.
    pub(super) fn next_deadline(&self) -> Option<std::time::Instant> {
        let core = self.core.poll_timeout().map(|t| self.clock.deadline(t));
        let stuck = self.slots.values().filter_map(|s| self.give_up_at(s)).min();
        core.into_iter().chain(stuck).min()
    }

    /// When a connection is dropped unless its peer takes bytes first.
    fn give_up_at(&self, slot: &Slot) -> Option<std::time::Instant> {
        let stalled = slot.stalled_since.map(|t| t + self.write_timeout);
        match (slot.closing, stalled) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drops closing connections that did not take their last bytes in
    /// time, and connections whose peer took no bytes for the write timeout.
    pub(super) fn expire_stuck(&mut self, now: std::time::Instant) {
        let late: Vec<ConnId> = self
            .slots
            .iter()
            .filter(|(_, s)| self.give_up_at(s).is_some_and(|d| now >= d))
            .map(|(c, _)| *c)
            .collect();
        for c in late {
            tracing::info!(conn = ?c, "the peer took no bytes in time; closing");
            self.gone(c);
        }
    }

    /// A new connection was accepted.
    pub(super) fn open(&mut self, mut stream: Wire, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let conn = self.core.handle_connect(self.clock.now());
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .registry
            .register(&mut stream, token_of(conn), interest)
        {
            tracing::warn!(error = %e, "cannot register a connection");
            self.core.handle_disconnect(self.clock.now(), conn);
            return;
        }
        tracing::debug!(?conn, %peer, "accepted");
        let slot = Slot {
            stream,
            inbox: BytesMut::new(),
            out: Outbox::new(),
            read_size: FIRST_READ,
            stalled_since: None,
            paused: false,
            closing: None,
        };
        self.slots.insert(conn, slot);
        self.unread.insert(conn);
    }

    /// A readiness event for a connection.
    pub(super) fn handle_event(&mut self, conn: ConnId, ev: &mio::event::Event) {
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.unread.insert(conn);
        }
        if ev.is_writable() || ev.is_error() {
            self.flush(conn);
        }
    }

    /// Reads from every connection that may have unread input.
    pub(super) fn read_unread(&mut self) {
        let ready: Vec<ConnId> = self.unread.iter().copied().collect();
        for c in ready {
            self.read(c);
        }
    }

    /// Reads up to [`READS_PER_TURN`] chunks, feeding the core after each;
    /// stops early when the core pauses or closes the connection.
    fn read(&mut self, conn: ConnId) {
        for _ in 0..READS_PER_TURN {
            let Some(slot) = self.slots.get_mut(&conn) else {
                self.unread.remove(&conn);
                return;
            };
            if slot.paused || slot.closing.is_some() {
                // A resumed connection is put back in `unread`.
                self.unread.remove(&conn);
                return;
            }
            let start = slot.inbox.len();
            let want = slot.read_size;
            // The rest of a frame arriving in pieces (its length already
            // accepted by the core) in one allocation, not grown piece by
            // piece, each growth copying what came before.
            slot.inbox
                .reserve(frame_rest(&slot.inbox).min(FRAME_RESERVE_MAX).max(want));
            slot.inbox.resize(start + want, 0);
            let r = slot.stream.read(&mut slot.inbox[start..]);
            let n = *r.as_ref().unwrap_or(&0);
            slot.inbox.truncate(start + n);
            if n == want {
                slot.read_size = (want * 2).min(READ_CHUNK);
            }
            match r {
                Ok(0) => return self.gone(conn),
                Ok(_) => self.feed(conn),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.unread.remove(&conn);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.gone(conn),
            }
        }
    }

    /// Gives the core the connection's buffered input and acts on its answer.
    fn feed(&mut self, conn: ConnId) {
        let now = self.clock.now();
        let Some(slot) = self.slots.get_mut(&conn) else {
            return;
        };
        let status = self.core.handle_input(now, conn, &mut slot.inbox);
        let paused = status == InputStatus::Paused;
        if paused != slot.paused {
            tracing::debug!(?conn, paused, "input flow");
        }
        if slot.paused && !paused {
            // The socket may hold input that no new event will announce.
            self.unread.insert(conn);
        }
        slot.paused = paused;
        if status == InputStatus::Closing && slot.closing.is_none() {
            // The core is closing the connection (its `Close` event is still
            // queued) or no longer knows it: either way, write what it still
            // has for it (the fatal error that names what was wrong), then
            // close.
            self.close(conn);
        }
    }

    /// The core asked to close: write what it still has, then close.
    pub(super) fn close(&mut self, conn: ConnId) {
        match self.slots.get_mut(&conn) {
            Some(slot) => {
                if slot.closing.is_none() {
                    slot.closing = Some(std::time::Instant::now() + FINAL_FLUSH);
                }
                self.unread.remove(&conn);
                self.flush(conn);
            }
            None => self.core.handle_disconnect(self.clock.now(), conn),
        }
    }

    /// Writes what the core has for the connection until the socket would
    /// block; finishes a close once everything is written.
    pub(super) fn flush(&mut self, conn: ConnId) {
        loop {
            let Some(slot) = self.slots.get_mut(&conn) else {
                // A connection already gone: discard what was queued for it.
                while self.core.poll_transmit(conn).is_some() {}
                return;
            };
            if slot.out.is_empty() {
                let mut bytes = 0;
                while bytes < BATCH_BYTES {
                    let Some(b) = self.core.poll_transmit(conn) else {
                        break;
                    };
                    bytes += b.len();
                    slot.out.push(b);
                }
                if slot.out.is_empty() {
                    // TLS records still buffered go out first.
                    match slot.stream.flush() {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            slot.stalled_since
                                .get_or_insert_with(std::time::Instant::now);
                            return;
                        }
                        Err(_) => return self.gone(conn),
                    }
                    if slot.closing.is_some() {
                        self.finish_close(conn);
                    }
                    return;
                }
                if slot.paused {
                    // The core's queue just shrank: it may take input again.
                    self.feed(conn);
                    continue;
                }
            }
            match slot.stream.write_vectored(&slot.out.io_slices()) {
                Ok(0) => return self.gone(conn),
                Ok(n) => {
                    slot.stalled_since = None;
                    slot.out.advance(n)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    slot.stalled_since
                        .get_or_insert_with(std::time::Instant::now);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.gone(conn),
            }
        }
    }

    /// Everything was written: shut the socket down and forget it.
    fn finish_close(&mut self, conn: ConnId) {
        if let Some(slot) = self.slots.get_mut(&conn) {
            slot.stream.shutdown_write();
            // Unread input would make the close a reset, which can destroy
            // the last bytes before the client reads them.
            let mut sink = [0u8; 4096];
            for _ in 0..64 {
                match slot.stream.tcp().read(&mut sink) {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
        self.gone(conn);
    }

    /// Forgets the connection (closing its socket) and tells the core.
    fn gone(&mut self, conn: ConnId) {
        self.unread.remove(&conn);
        if let Some(mut slot) = self.slots.remove(&conn) {
            let _ = self.registry.deregister(&mut slot.stream);
            self.core.handle_disconnect(self.clock.now(), conn);
        }
    }
}
