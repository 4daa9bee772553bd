//! The connection: reconnection with backoff, the handshake, the lease, and
//! the dispatch of everything the server sends.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand_core::Rng;

use crate::Instant;
use crate::auth::{ProofRole, proof, proofs_match};
use crate::protocol::{
    Authenticate, ErrorCode, Hello, Message, PROTOCOL_VERSION, Ping, Resume, ResumeStatus, Welcome,
    decode_frame,
};

use super::error::SessionLossReason;
use super::{Client, ClientEvent, Conn, ConnectError, Event, OpError, Params, SessionInfo};

impl Client {
    /// The connection asked for by [`Event::Connect`] is open.
    pub fn handle_connected(&mut self, now: Instant) {
        if !matches!(self.conn, Conn::Connecting { .. }) {
            return;
        }
        self.out.clear();
        self.conn = Conn::Handshaking { since: now };
        self.rng.fill_bytes(&mut self.client_nonce);
        self.server_nonce = None;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            max_frame: self.config.max_frame,
            client_nonce: self.client_nonce,
            client_name: Bytes::from(self.config.name.clone().into_bytes()),
            resume: self.session.as_ref().map(|s| Resume {
                session: s.id,
                token: s.token,
                epoch: s.epoch,
            }),
        };
        self.out.push_message(&Message::Hello(hello));
        if self.config.secret.is_none() {
            // Pipelined: the server answers it right after its Welcome.
            self.send_ping(now);
        }
    }

    /// The connection asked for by [`Event::Connect`] could not be opened
    /// (`error` says why).
    pub fn handle_connect_failed(&mut self, now: Instant, error: std::io::Error) {
        if matches!(self.conn, Conn::Connecting { .. }) {
            match self.first_required.take() {
                Some(addr) => {
                    let reason = format!("cannot connect to {addr}: {error}");
                    self.connect_error = Some(ConnectError::Io {
                        addr,
                        source: error,
                    });
                    self.fail_for_good(now, reason);
                }
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
        if self.session.is_none() {
            self.first_required = Some(addr.to_owned());
        }
    }

    /// Why the required first connection failed, given the error that
    /// [`Client::wait_connected`] failed with.
    pub fn connect_error(&mut self, failed: OpError) -> ConnectError {
        self.connect_error
            .take()
            .unwrap_or_else(|| ConnectError::Handshake {
                addr: self.first_required.clone().unwrap_or_default(),
                reason: failed.to_string(),
            })
    }

    /// The adapter cannot drive the client any more (its event loop
    /// failed): every operation fails with [`OpError::Closed`] and `reason`,
    /// and so does every later command.
    pub fn fail(&mut self, now: Instant, reason: impl Into<String>) {
        if self.failed.is_none() {
            self.fail_for_good(now, reason.into());
        }
        self.pump(now);
    }

    /// Why the client ended (closed, or failed for good), once it has: its
    /// operations are done and its adapter may stop.
    pub fn closed(&self) -> Option<OpError> {
        self.failed.clone().map(OpError::Closed)
    }

    /// The connection broke or the server closed it.
    pub fn handle_disconnected(&mut self, now: Instant) {
        if matches!(
            self.conn,
            Conn::Connecting { .. } | Conn::Handshaking { .. } | Conn::Ready
        ) {
            self.lost_connection(now, false);
        }
        self.pump(now);
    }

    /// Bytes arrived. Whole frames are taken off the front of `buf`.
    pub fn handle_input(&mut self, now: Instant, buf: &mut BytesMut) {
        loop {
            if !matches!(self.conn, Conn::Handshaking { .. } | Conn::Ready) {
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
        match self.conn {
            Conn::Disconnected { retry_at } if now >= retry_at => {
                self.conn = Conn::Connecting { since: now };
                self.events.push_back(Event::Connect);
            }
            Conn::Connecting { since } | Conn::Handshaking { since }
                if now >= since + self.config.handshake_timeout =>
            {
                self.lost_connection(now, true);
            }
            Conn::Ready => {
                if let Some((_, sent)) = self.ping {
                    if now >= sent + self.pong_timeout() {
                        self.lost_connection(now, true);
                    }
                } else if self.next_ping_at.is_some_and(|t| now >= t) {
                    self.send_ping(now);
                }
            }
            _ => {}
        }
        if let (Some(since), Some(limit)) = (self.disconnected_since, self.config.give_up_after)
            && now >= since + limit
        {
            let waited = now - since;
            let ops: Vec<_> = self.ops.ids();
            for op in ops {
                self.complete(op, Err(OpError::Disconnected(waited)));
            }
        }
        self.pump(now);
    }

    /// When [`Client::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conn = match self.conn {
            Conn::Disconnected { retry_at } => Some(retry_at),
            Conn::Connecting { since } | Conn::Handshaking { since } => {
                Some(since + self.config.handshake_timeout)
            }
            Conn::Ready => match self.ping {
                Some((_, sent)) => Some(sent + self.pong_timeout()),
                None => self.next_ping_at,
            },
            Conn::Failed => None,
        };
        let give_up = match (self.disconnected_since, self.config.give_up_after) {
            (Some(since), Some(limit)) if !self.ops.is_empty() => Some(since + limit),
            _ => None,
        };
        // Pages in memory must leave it when the lease view ends.
        let memory = if self.memory_installed {
            self.lease_until
        } else {
            None
        };
        [conn, give_up, memory].into_iter().flatten().min()
    }

    fn pong_timeout(&self) -> Duration {
        let lease = self
            .params
            .as_ref()
            .map_or(Duration::from_secs(10), |p| p.lease);
        self.config.pong_timeout.unwrap_or(lease / 2)
    }

    fn lease_margin(&self, lease: Duration) -> Duration {
        self.config
            .lease_margin
            .unwrap_or(lease / 10)
            .min(lease / 2)
    }

    pub(crate) fn send_ping(&mut self, now: Instant) {
        if self.ping.is_some() {
            return;
        }
        self.ping_nonce += 1;
        self.ping = Some((self.ping_nonce, now));
        self.next_ping_at = None;
        self.out.push_message(&Message::Ping(Ping {
            nonce: self.ping_nonce,
        }));
    }

    fn schedule_ping(&mut self, now: Instant) {
        let Some(p) = &self.params else { return };
        let lease = p.lease;
        let left = self.lease_until.map_or(Duration::ZERO, |u| u - now);
        // Renew early; renew often once less than half the lease is left.
        let every = if left < lease / 2 {
            lease / 16
        } else {
            lease / 4
        };
        self.next_ping_at = Some(now + every);
    }

    /// Ends the current connection attempt or connection. `ours`: the
    /// client decided it (the adapter must be told to close the socket).
    pub(crate) fn lost_connection(&mut self, now: Instant, ours: bool) {
        let was_ready = matches!(self.conn, Conn::Ready);
        if !was_ready && self.first_required.is_some() {
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
        self.out.clear();
        self.ping = None;
        self.next_ping_at = None;
        if self.disconnected_since.is_none() {
            self.disconnected_since = Some(now);
        }
        if was_ready {
            self.events
                .push_back(Event::Connection(ClientEvent::ConnectionLost));
        }
        self.schedule_retry(now);
    }

    fn schedule_retry(&mut self, now: Instant) {
        let shift = self.attempts.min(20);
        self.attempts = self.attempts.saturating_add(1);
        let base = self
            .config
            .reconnect_initial
            .saturating_mul(1u32 << shift)
            .min(self.config.reconnect_max);
        // Full jitter on the upper half: spreads reconnecting clients apart.
        let half = base / 2;
        let jitter = Duration::from_nanos(self.rng.next_u64() % (half.as_nanos() as u64 + 1));
        self.conn = Conn::Disconnected {
            retry_at: now + half + jitter,
        };
    }

    fn fail_for_good(&mut self, now: Instant, reason: String) {
        if let Some(addr) = self.first_required.take() {
            self.connect_error = Some(ConnectError::Handshake {
                addr,
                reason: reason.clone(),
            });
        }
        self.events.push_back(Event::Disconnect);
        self.events
            .push_back(Event::Connection(ClientEvent::Failed {
                reason: reason.clone(),
            }));
        self.conn = Conn::Failed;
        self.failed = Some(reason.clone());
        let ops: Vec<_> = self.ops.ids();
        for op in ops {
            self.complete(op, Err(OpError::Closed(reason.clone())));
        }
        let _ = now;
    }

    fn on_message(&mut self, now: Instant, msg: Message) {
        let handshaking = matches!(self.conn, Conn::Handshaking { .. });
        match msg {
            Message::Challenge(c) if handshaking => {
                let Some(secret) = self.config.secret.clone() else {
                    return self.fail_for_good(
                        now,
                        "the server requires authentication; give the client a name and a token"
                            .into(),
                    );
                };
                self.server_nonce = Some(c.server_nonce);
                let p = proof(
                    &secret,
                    ProofRole::Client,
                    self.config.name.as_bytes(),
                    &self.client_nonce,
                    &c.server_nonce,
                );
                self.out
                    .push_message(&Message::Authenticate(Authenticate { proof: p }));
                self.send_ping(now);
            }
            Message::Welcome(w) if handshaking => self.on_welcome(now, w),
            Message::Error(e) if e.req.0 == 0 => {
                self.on_connection_error(now, e.code, &e.message, handshaking)
            }
            Message::Goodbye(g) => {
                if g.code == ErrorCode::ShuttingDown {
                    self.server_synced_everything();
                }
                self.attempts = 0;
                self.lost_connection(now, true);
            }
            Message::Pong(p) if !handshaking => self.on_pong(now, p),
            m if matches!(self.conn, Conn::Ready) => self.on_reply(now, m),
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
                self.fail_for_good(now, format!("{code}: {text}"));
            }
            // The very first handshake refused (busy, too many sessions, ...):
            // say why instead of retrying in silence; the adapter's connect
            // reports it.
            _ if handshaking && self.session.is_none() => {
                self.fail_for_good(now, format!("{code}: {text}"));
            }
            ErrorCode::SessionLost => {
                // Reconnect at once: the server will say the session expired.
                self.attempts = 0;
                self.lost_connection(now, true);
            }
            _ => self.lost_connection(now, true),
        }
    }

    fn on_welcome(&mut self, now: Instant, w: Welcome) {
        if w.version != PROTOCOL_VERSION {
            return self.fail_for_good(
                now,
                format!("the server answered with protocol version {}", w.version),
            );
        }
        if let Some(secret) = self.config.secret.clone() {
            let Some(sn) = self.server_nonce else {
                return self.fail_for_good(
                    now,
                    "the server did not authenticate, but this client has a token: refusing to trust it".into(),
                );
            };
            let expected = proof(
                &secret,
                ProofRole::Server,
                self.config.name.as_bytes(),
                &self.client_nonce,
                &sn,
            );
            if !proofs_match(&expected, &w.server_proof) {
                return self.fail_for_good(
                    now,
                    "the server could not prove that it knows this client's token".into(),
                );
            }
        }
        if !w.page_size.is_power_of_two()
            || w.page_size < 512
            || w.lease_ms == 0
            || w.max_pages_per_request == 0
        {
            return self.fail_for_good(now, "the server sent impossible parameters".into());
        }
        let params = Params {
            page_size: w.page_size as u64,
            lease: Duration::from_millis(w.lease_ms as u64),
            max_pages: w.max_pages_per_request,
            max_frame: w.max_frame,
            window: (self.config.max_inflight.min(w.max_inflight).max(1)) as u64,
        };
        let asked = self.session.is_some();
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
                        .params
                        .as_ref()
                        .is_some_and(|p| p.page_size != params.page_size);
                    self.on_session_lost(now, reason, page_size_changed);
                }
            }
        }
        self.session = Some(SessionInfo {
            id: w.session,
            token: w.token,
            epoch: w.epoch,
        });
        self.params = Some(params);
        self.conn = Conn::Ready;
        self.attempts = 0;
        self.disconnected_since = None;
        let resumed = w.status == ResumeStatus::Resumed;
        if resumed {
            self.requests.confirm_acks(w.rev_acked);
            self.resend_log();
        } else {
            self.lease_until = None;
        }
        self.first_required = None;
        self.events
            .push_back(Event::Connection(ClientEvent::Connected { resumed }));
        if self.ping.is_none() {
            self.send_ping(now);
        }
        self.ops.wake_all();
    }

    fn on_pong(&mut self, now: Instant, p: crate::protocol::Pong) {
        self.requests.confirm_acks(p.rev_acked);
        let Some((nonce, sent)) = self.ping else {
            return;
        };
        if nonce != p.nonce {
            return;
        }
        self.ping = None;
        if p.renewed
            && let Some(params) = &self.params
        {
            let lease = params.lease;
            let until = sent + lease - self.lease_margin(lease);
            self.lease_until = Some(self.lease_until.map_or(until, |u| u.max(until)));
            self.ops.wake_lease();
        }
        self.schedule_ping(now);
    }

    /// Sends again, in their original order, every request without a reply
    /// and every recall acknowledgement not yet confirmed.
    fn resend_log(&mut self) {
        for m in self.requests.to_resend() {
            self.out.push_message(m);
        }
    }

    /// A `Goodbye` after a graceful shutdown: the server synced every file.
    fn server_synced_everything(&mut self) {
        let dirty: std::collections::BTreeSet<_> = self
            .files
            .iter()
            .filter(|(_, f)| {
                f.pages
                    .values()
                    .any(|p| p.dirty.is_some() || p.writebacks > 0)
            })
            .map(|(id, _)| *id)
            .collect();
        for m in self.mappings.values_mut() {
            if m.file.is_none_or(|f| !dirty.contains(&f)) {
                m.synced_seq = m.write_seq;
            }
        }
    }

    /// Queues a message for the server if connected (requests are also kept
    /// in the log to be sent again after a resume).
    pub(crate) fn transmit(&mut self, msg: &Message) {
        if matches!(self.conn, Conn::Ready) {
            self.out.push_message(msg);
        }
    }
}
