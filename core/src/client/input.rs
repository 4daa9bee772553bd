//! What comes in: the connection opening, failing or breaking, bytes from
//! the server, time passing; the handshake, and the dispatch of everything
//! the server sends. The connection's own state is kept by
//! [`Connection`](super::connection::Connection); this is where the rest of
//! the client hears about it.

use bytes::BytesMut;

use crate::Instant;
use crate::protocol::{ErrorCode, Message, ResumeStatus, Welcome, decode_frame};

use super::connection::Tick;
use super::error::SessionLossReason;
use super::{Client, ClientEvent, ConnectError, Event, OpError, OpKind};

impl Client {
    /// The connection asked for by [`Event::Connect`] is open.
    pub fn handle_connected(&mut self, now: Instant) {
        self.conn.opened(now, &self.config);
    }

    /// The connection asked for by [`Event::Connect`] could not be opened
    /// (`error` says why).
    pub fn handle_connect_failed(&mut self, now: Instant, error: std::io::Error) {
        if self.conn.is_connecting() {
            match self.conn.first_attempt_failed(error) {
                Some(reason) => self.fail_for_good(now, reason),
                None => self.lost_connection(now, false),
            }
        }
        self.pump(now);
    }

    /// Makes the first connection required: if it cannot be opened, or its
    /// handshake fails, times out or is cut, the client fails for good
    /// instead of retrying, and [`Client::connect_error`] says why. `addr`
    /// names the server in that error. For a `connect` call that must
    /// succeed or say why; later connections are retried either way.
    pub fn require_first_connection(&mut self, addr: &str) {
        self.conn.require_first(addr);
    }

    /// Why the required first connection failed, given the error that
    /// [`Client::wait_connected`] failed with.
    pub fn connect_error(&mut self, failed: OpError) -> ConnectError {
        self.conn.connect_error(failed)
    }

    /// The adapter cannot drive the client any more (its event loop
    /// failed): every operation fails with [`OpError::Closed`] and `reason`,
    /// and so does every later command.
    pub fn fail(&mut self, now: Instant, reason: impl Into<String>) {
        if self.conn.failed().is_none() {
            self.fail_for_good(now, reason.into());
        }
        self.pump(now);
    }

    /// Why the client ended (closed, or failed for good), once it has: its
    /// operations are done and its adapter may stop.
    pub fn closed(&self) -> Option<OpError> {
        self.conn.failed().map(|f| OpError::Closed(f.to_owned()))
    }

    /// The connection broke or the server closed it.
    pub fn handle_disconnected(&mut self, now: Instant) {
        if self.conn.is_live() {
            self.lost_connection(now, false);
        }
        self.pump(now);
    }

    /// Bytes arrived. Whole frames are taken off the front of `buf`.
    pub fn handle_input(&mut self, now: Instant, buf: &mut BytesMut) {
        loop {
            if !self.conn.is_open() {
                buf.clear();
                break;
            }
            match decode_frame(buf, self.config.max_frame) {
                Ok(Some(m)) => {
                    self.on_message(now, m);
                    // Let operations use what this frame granted before the
                    // next frame (perhaps a recall of the same page) takes it
                    // away: without this, two writers batching grants and
                    // recalls pass a page back and forth for ever.
                    self.pump(now);
                }
                Ok(None) => break,
                Err(_) => {
                    buf.clear();
                    self.lost_connection(now, true);
                    break;
                }
            }
        }
        self.pump(now);
    }

    /// Time passed: reconnect, ping, give up on stalled connections.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.check_memory_lease(now);
        self.ops.wake_timers(now);
        match self.conn.tick(now, &self.config) {
            Tick::Connect => self.events.push_back(Event::Connect),
            Tick::TimedOut => self.lost_connection(now, true),
            Tick::Nothing => {}
        }
        if let Some(since) = self.conn.disconnected_since() {
            let waited = now - since;
            let ops: Vec<_> = self
                .ops
                .ids()
                .into_iter()
                .filter(|op| {
                    self.ops
                        .get(*op)
                        .and_then(|o| self.give_up_limit(o))
                        .is_some_and(|limit| waited >= limit)
                })
                .collect();
            for op in ops {
                self.complete(op, Err(OpError::Disconnected(waited)));
            }
        }
        self.pump(now);
    }

    /// When [`Client::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conn = self.conn.next_tick(&self.config);
        let give_up = self.conn.disconnected_since().and_then(|since| {
            let ids = self.ops.ids();
            let limits = ids
                .iter()
                .filter_map(|op| self.ops.get(*op).and_then(|o| self.give_up_limit(o)));
            limits.min().map(|l| since + l)
        });
        // Pages in memory must leave it when the lease view ends.
        let memory = if self.cache.some_installed() {
            self.conn.lease_until()
        } else {
            None
        };
        [conn, give_up, memory, self.ops.next_timer()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Ends the current connection attempt or connection. `ours`: the
    /// client decided it (the adapter must be told to close the socket).
    pub(crate) fn lost_connection(&mut self, now: Instant, ours: bool) {
        if !self.conn.is_ready() && self.conn.first_required() {
            let reason = if ours {
                "the server did not complete the handshake"
            } else {
                "the server closed the connection during the handshake"
            };
            return self.fail_for_good(now, reason.into());
        }
        if ours {
            self.events.push_back(Event::Disconnect);
        }
        if self.conn.lost(now, &self.config) {
            self.events
                .push_back(Event::Connection(ClientEvent::ConnectionLost));
        }
    }

    fn fail_for_good(&mut self, now: Instant, reason: String) {
        self.end_for_good(now, reason, None);
    }

    /// Ends the client for good; `refused` is the server's code when it
    /// refused the handshake (kept in the [`ConnectError`] the adapter's
    /// connect returns, so a caller can tell denied credentials apart).
    fn end_for_good(&mut self, now: Instant, reason: String, refused: Option<ErrorCode>) {
        self.conn.end(&reason, refused);
        self.events.push_back(Event::Disconnect);
        self.events
            .push_back(Event::Connection(ClientEvent::Failed {
                reason: reason.clone(),
            }));
        let ops: Vec<_> = self.ops.ids();
        for op in ops {
            self.complete(op, Err(OpError::Closed(reason.clone())));
        }
        let _ = now;
    }

    fn on_message(&mut self, now: Instant, msg: Message) {
        let handshaking = self.conn.is_handshaking();
        match msg {
            Message::Challenge(c) if handshaking => {
                if let Err(why) = self
                    .conn
                    .answer_challenge(now, &self.config, c.server_nonce)
                {
                    self.fail_for_good(now, why);
                }
            }
            Message::Welcome(w) if handshaking => self.on_welcome(now, w),
            Message::Error(e) if e.req.0 == 0 => {
                self.on_connection_error(now, e.code, &e.message, handshaking)
            }
            Message::Goodbye(g) => self.on_goodbye(now, g.code),
            Message::Pong(p) if !handshaking => self.on_pong(now, p),
            m if self.conn.is_ready() => self.on_reply(now, m),
            _ => self.lost_connection(now, true),
        }
    }

    fn on_connection_error(
        &mut self,
        now: Instant,
        code: ErrorCode,
        message: &[u8],
        handshaking: bool,
    ) {
        let text = String::from_utf8_lossy(message).into_owned();
        match code {
            ErrorCode::Denied | ErrorCode::UnsupportedVersion if handshaking => {
                self.end_for_good(now, format!("{code}: {text}"), Some(code));
            }
            // The very first handshake refused (busy, too many sessions, ...):
            // say why instead of retrying in silence; the adapter's connect
            // reports it.
            _ if handshaking && !self.conn.has_session() => {
                self.end_for_good(now, format!("{code}: {text}"), Some(code));
            }
            ErrorCode::SessionLost => {
                // Reconnect at once: the server will say the session expired.
                self.conn.reset_backoff();
                self.lost_connection(now, true);
            }
            _ => self.lost_connection(now, true),
        }
    }

    fn on_welcome(&mut self, now: Instant, w: Welcome) {
        let params = match self.conn.check_welcome(&self.config, &w) {
            Ok(p) => p,
            Err(why) => return self.fail_for_good(now, why),
        };
        let asked = self.conn.has_session();
        match w.status {
            ResumeStatus::Resumed if asked => {}
            ResumeStatus::Resumed => return self.lost_connection(now, true),
            ResumeStatus::New | ResumeStatus::Expired | ResumeStatus::ServerRestarted => {
                if asked {
                    let reason = if w.status == ResumeStatus::Expired {
                        SessionLossReason::LeaseExpired
                    } else {
                        SessionLossReason::ServerRestarted
                    };
                    let page_size_changed = self
                        .conn
                        .page_size()
                        .is_some_and(|ps| ps != params.page_size);
                    self.on_session_lost(now, reason, page_size_changed);
                }
            }
        }
        let resumed = w.status == ResumeStatus::Resumed;
        self.conn.established(&w, params, resumed);
        if resumed {
            self.requests.confirm_acks(w.rev_acked);
            // Everything without a reply, in its original order: the
            // server applies each request once.
            for m in self.requests.to_resend() {
                self.conn.push(m);
            }
        }
        self.events
            .push_back(Event::Connection(ClientEvent::Connected { resumed }));
        self.conn.send_ping(now);
        self.ops.wake_all();
    }

    fn on_pong(&mut self, now: Instant, p: crate::protocol::Pong) {
        self.requests.confirm_acks(p.rev_acked);
        if self.conn.pong(now, &self.config, &p) {
            self.ops.wake_lease();
        }
    }

    /// The server is going away (PROTOCOL.md section 9): the lease view
    /// ends at once (nothing more is served from the cache, memory pages
    /// leave memory), the server hears `Bye`, the connection closes, and the
    /// client reconnects at once (without backoff) to the next run. With
    /// `shutting_down`, everything handed to the server is on its disk, so
    /// nothing of it is reported lost when the next run cannot resume the
    /// session; with any other code (`io`), what was not synced may be lost
    /// and is reported as after a crash.
    fn on_goodbye(&mut self, now: Instant, code: ErrorCode) {
        if code == ErrorCode::ShuttingDown {
            self.server_synced_everything();
        }
        self.conn.forget_lease();
        self.withdraw_all_memory();
        self.conn.reset_backoff();
        self.lost_connection(now, true);
        if self.config.member_patience.is_some() {
            // A cluster member going away has left the cluster (its
            // shards were handed over first): what waits for it gives up
            // now, not after the patience, for the cluster client to find
            // the files' new owners. Faults wait as ever.
            let leaving: Vec<_> = self
                .ops
                .ids()
                .into_iter()
                .filter(|op| {
                    !matches!(
                        self.ops.get(*op),
                        Some(OpKind::Fault { .. } | OpKind::Close { .. })
                    )
                })
                .collect();
            for op in leaving {
                self.complete(op, Err(OpError::Disconnected(std::time::Duration::ZERO)));
            }
        }
        // After the connection's queue was dropped: the adapter writes it
        // before it closes the socket (see `Event::Disconnect`).
        self.conn.push(&Message::Bye);
    }

    /// A `Goodbye` after a graceful shutdown: the server synced every file,
    /// and every recall acknowledgement reached it (it answers `Goodbye` only
    /// after every recall was answered).
    fn server_synced_everything(&mut self) {
        self.requests.confirm_all_acks();
        let dirty: std::collections::BTreeSet<_> = self
            .cache
            .all()
            .filter(|(_, _, p)| p.dirty.is_some() || p.writebacks > 0)
            .map(|(f, _, _)| f)
            .collect();
        for m in self.mappings.values_mut() {
            if m.file.is_none_or(|f| !dirty.contains(&f)) {
                m.synced_all();
            }
        }
    }
}
