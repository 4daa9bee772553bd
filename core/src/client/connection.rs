//! The connection to the server, as the client keeps it: whether it is
//! connecting, handshaking, ready or failed for good; the session it
//! carries and the limits the server set; reconnection backoff; the lease
//! and the pings that renew it; and the bytes waiting to be written.
//!
//! It knows nothing of mappings, pages or operations: the client's input
//! handlers (`input.rs`) ask it what state it is in and tell it what
//! happened.

use std::time::Duration;

use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::Instant;
use crate::auth::{ProofRole, proof, proofs_match};
use crate::protocol::{
    Authenticate, ChunkQueue, ErrorCode, Hello, Message, Nonce, PROTOCOL_VERSION, Ping, Pong,
    Resume, ResumeToken, SessionId, Welcome,
};

use super::{ClientConfig, ConnectError, OpError};

/// The session the server gave us, to resume after a lost connection.
#[derive(Clone, Debug)]
struct SessionInfo {
    id: SessionId,
    token: ResumeToken,
    epoch: u64,
}

/// Limits and sizes learned from the server's `Welcome`.
#[derive(Clone, Debug)]
pub(crate) struct Params {
    pub(crate) page_size: u64,
    pub(crate) lease: Duration,
    pub(crate) max_pages: u32,
    pub(crate) max_frame: u32,
    /// Requests in flight at most.
    pub(crate) window: u64,
}

#[derive(Debug)]
enum LinkState {
    Disconnected { retry_at: Instant },
    Connecting { since: Instant },
    Handshaking { since: Instant },
    Ready,
    Failed,
}

/// What time brought to a ready connection ([`Connection::tick`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tick {
    Nothing,
    /// Time to open a connection.
    Connect,
    /// The attempt, the handshake or the last ping took too long.
    TimedOut,
}

/// The connection to the server and the session it carries.
#[derive(Debug)]
pub(crate) struct Connection {
    state: LinkState,
    rng: ChaCha20Rng,
    /// Failed attempts since the last success (the backoff's exponent).
    attempts: u32,
    disconnected_since: Option<Instant>,
    /// Why the client ended, once it has (closed or failed for good).
    failed: Option<String>,
    session: Option<SessionInfo>,
    params: Option<Params>,
    client_nonce: Nonce,
    server_nonce: Option<Nonce>,
    /// Reads may be served from the cache until then.
    lease_until: Option<Instant>,
    /// A ping in flight: its nonce and when it went.
    ping: Option<(u64, Instant)>,
    next_ping_at: Option<Instant>,
    ping_nonce: u64,
    out: ChunkQueue,
    /// A failed first connection ends the client: the server's address,
    /// until a handshake completes.
    first_required: Option<String>,
    /// Why the required first connection failed, until taken.
    connect_error: Option<ConnectError>,
}

impl Connection {
    /// Not connected; the first attempt is due at `now`.
    pub(crate) fn new(seed: [u8; 32], now: Instant) -> Self {
        Connection {
            state: LinkState::Disconnected { retry_at: now },
            rng: ChaCha20Rng::from_seed(seed),
            attempts: 0,
            disconnected_since: None,
            failed: None,
            session: None,
            params: None,
            client_nonce: [0; 16],
            server_nonce: None,
            lease_until: None,
            ping: None,
            next_ping_at: None,
            ping_nonce: 0,
            out: ChunkQueue::new(),
            first_required: None,
            connect_error: None,
        }
    }

    // ---- what it is ----

    /// The handshake completed on the current connection.
    pub(crate) fn is_ready(&self) -> bool {
        matches!(self.state, LinkState::Ready)
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        matches!(self.state, LinkState::Handshaking { .. })
    }

    /// An attempt asked for by `Event::Connect` is under way.
    pub(crate) fn is_connecting(&self) -> bool {
        matches!(self.state, LinkState::Connecting { .. })
    }

    /// Bytes from the server are expected.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, LinkState::Handshaking { .. } | LinkState::Ready)
    }

    /// A socket exists or is being opened.
    pub(crate) fn is_live(&self) -> bool {
        matches!(
            self.state,
            LinkState::Connecting { .. } | LinkState::Handshaking { .. } | LinkState::Ready
        )
    }

    /// Why the client ended, once it has.
    pub(crate) fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The server knows us (possibly from an earlier connection).
    pub(crate) fn has_session(&self) -> bool {
        self.session.is_some()
    }

    pub(crate) fn session_id(&self) -> Option<SessionId> {
        self.session.as_ref().map(|s| s.id)
    }

    pub(crate) fn session_epoch(&self) -> Option<u64> {
        self.session.as_ref().map(|s| s.epoch)
    }

    /// What the server said in its last `Welcome`.
    pub(crate) fn params(&self) -> Option<&Params> {
        self.params.as_ref()
    }

    pub(crate) fn page_size(&self) -> Option<u64> {
        self.params.as_ref().map(|p| p.page_size)
    }

    /// Until when the cache may serve reads.
    pub(crate) fn lease_until(&self) -> Option<Instant> {
        self.lease_until
    }

    pub(crate) fn lease_valid(&self, now: Instant) -> bool {
        self.lease_until.is_some_and(|u| now < u)
    }

    /// Since when the client has had no ready connection.
    pub(crate) fn disconnected_since(&self) -> Option<Instant> {
        self.disconnected_since
    }

    /// The request window, if requests may be sent now (a session exists
    /// and the client has not failed).
    pub(crate) fn window(&self) -> Option<u64> {
        match (&self.params, &self.session, &self.state) {
            (_, _, LinkState::Failed) | (None, _, _) | (_, None, _) => None,
            (Some(p), Some(_), _) => Some(p.window),
        }
    }

    // ---- output ----

    /// Queues a message if connected (requests are also kept in the log to
    /// be sent again after a resume).
    pub(crate) fn transmit(&mut self, msg: &Message) {
        if self.is_ready() {
            self.out.push_message(msg);
        }
    }

    /// Queues a message whatever the state (a `Bye`, the last words).
    pub(crate) fn push(&mut self, msg: &Message) {
        self.out.push_message(msg);
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Bytes> {
        self.out.pop()
    }

    pub(crate) fn pending_output(&self) -> usize {
        self.out.len()
    }

    // ---- time ----

    /// What time brought.
    pub(crate) fn tick(&mut self, now: Instant, config: &ClientConfig) -> Tick {
        match self.state {
            LinkState::Disconnected { retry_at } if now >= retry_at => {
                self.state = LinkState::Connecting { since: now };
                Tick::Connect
            }
            LinkState::Connecting { since } | LinkState::Handshaking { since }
                if now >= since + config.handshake_timeout =>
            {
                Tick::TimedOut
            }
            LinkState::Ready => {
                if let Some((_, sent)) = self.ping {
                    if now >= sent + self.pong_timeout(config) {
                        return Tick::TimedOut;
                    }
                } else if self.next_ping_at.is_some_and(|t| now >= t) {
                    self.send_ping(now);
                }
                Tick::Nothing
            }
            _ => Tick::Nothing,
        }
    }

    /// When [`Connection::tick`] has something to do next.
    pub(crate) fn next_tick(&self, config: &ClientConfig) -> Option<Instant> {
        match self.state {
            LinkState::Disconnected { retry_at } => Some(retry_at),
            LinkState::Connecting { since } | LinkState::Handshaking { since } => {
                Some(since + config.handshake_timeout)
            }
            LinkState::Ready => match self.ping {
                Some((_, sent)) => Some(sent + self.pong_timeout(config)),
                None => self.next_ping_at,
            },
            LinkState::Failed => None,
        }
    }

    fn pong_timeout(&self, config: &ClientConfig) -> Duration {
        let lease = self
            .params
            .as_ref()
            .map_or(Duration::from_secs(10), |p| p.lease);
        config.pong_timeout.unwrap_or(lease / 2)
    }

    // ---- the handshake ----

    /// The socket opened: says hello (resuming the session if there is
    /// one), and pipelines a ping when no authentication will come first.
    /// False if no attempt was under way.
    pub(crate) fn opened(&mut self, now: Instant, config: &ClientConfig) -> bool {
        if !self.is_connecting() {
            return false;
        }
        self.out.clear();
        self.state = LinkState::Handshaking { since: now };
        self.rng.fill_bytes(&mut self.client_nonce);
        self.server_nonce = None;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            max_frame: config.max_frame,
            client_nonce: self.client_nonce,
            client_name: Bytes::from(config.name.clone().into_bytes()),
            resume: self.session.as_ref().map(|s| Resume {
                session: s.id,
                token: s.token,
                epoch: s.epoch,
            }),
        };
        self.out.push_message(&Message::Hello(hello));
        if config.secret.is_none() {
            // Pipelined: the server answers it right after its Welcome.
            self.send_ping(now);
        }
        true
    }

    /// Answers the server's challenge with our proof, or says why not.
    pub(crate) fn answer_challenge(
        &mut self,
        now: Instant,
        config: &ClientConfig,
        server_nonce: Nonce,
    ) -> Result<(), String> {
        let Some(secret) = &config.secret else {
            return Err(
                "the server requires authentication; give the client a name and a token".into(),
            );
        };
        self.server_nonce = Some(server_nonce);
        let p = proof(
            secret,
            ProofRole::Client,
            config.name.as_bytes(),
            &self.client_nonce,
            &server_nonce,
        );
        self.out
            .push_message(&Message::Authenticate(Authenticate { proof: p }));
        self.send_ping(now);
        Ok(())
    }

    /// The session parameters of a `Welcome`, or why it cannot be trusted.
    pub(crate) fn check_welcome(
        &self,
        config: &ClientConfig,
        w: &Welcome,
    ) -> Result<Params, String> {
        if w.version != PROTOCOL_VERSION {
            return Err(format!(
                "the server answered with protocol version {}",
                w.version
            ));
        }
        if let Some(secret) = &config.secret {
            let Some(sn) = self.server_nonce else {
                return Err("the server did not authenticate, but this client has a token: refusing to trust it".into());
            };
            let expected = proof(
                secret,
                ProofRole::Server,
                config.name.as_bytes(),
                &self.client_nonce,
                &sn,
            );
            if !proofs_match(&expected, &w.server_proof) {
                return Err("the server could not prove that it knows this client's token".into());
            }
        }
        if !w.page_size.is_power_of_two()
            || w.page_size < 512
            || w.lease_ms == 0
            || w.max_pages_per_request == 0
        {
            return Err("the server sent impossible parameters".into());
        }
        Ok(Params {
            page_size: w.page_size as u64,
            lease: Duration::from_millis(w.lease_ms as u64),
            max_pages: w.max_pages_per_request,
            max_frame: w.max_frame,
            window: (config.max_inflight.min(w.max_inflight).max(1)) as u64,
        })
    }

    /// The handshake completed with `w` (checked): the connection is ready.
    /// A new session starts without a lease.
    pub(crate) fn established(&mut self, w: &Welcome, params: Params, resumed: bool) {
        self.session = Some(SessionInfo {
            id: w.session,
            token: w.token,
            epoch: w.epoch,
        });
        self.params = Some(params);
        self.state = LinkState::Ready;
        self.attempts = 0;
        self.disconnected_since = None;
        if !resumed {
            self.lease_until = None;
        }
        self.first_required = None;
    }

    /// Sends a ping unless one is in flight (its pong renews the lease).
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

    /// A pong: true when it answers our ping and renewed the lease.
    pub(crate) fn pong(&mut self, now: Instant, config: &ClientConfig, p: &Pong) -> bool {
        let Some((nonce, sent)) = self.ping else {
            return false;
        };
        if nonce != p.nonce {
            return false;
        }
        self.ping = None;
        let mut renewed = false;
        if p.renewed
            && let Some(params) = &self.params
        {
            let lease = params.lease;
            let margin = config.lease_margin.unwrap_or(lease / 10).min(lease / 2);
            let until = sent + lease - margin;
            self.lease_until = Some(self.lease_until.map_or(until, |u| u.max(until)));
            renewed = true;
        }
        self.schedule_ping(now);
        renewed
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

    /// The session is gone: the lease with it.
    pub(crate) fn forget_lease(&mut self) {
        self.lease_until = None;
    }

    // ---- losing it ----

    /// The next attempt comes without backoff.
    pub(crate) fn reset_backoff(&mut self) {
        self.attempts = 0;
    }

    /// The connection (or attempt) ended; the next attempt is scheduled
    /// with backoff. Returns whether it was ready.
    pub(crate) fn lost(&mut self, now: Instant, config: &ClientConfig) -> bool {
        let was_ready = self.is_ready();
        self.out.clear();
        self.ping = None;
        self.next_ping_at = None;
        if self.disconnected_since.is_none() {
            self.disconnected_since = Some(now);
        }
        let shift = self.attempts.min(20);
        self.attempts = self.attempts.saturating_add(1);
        let base = config
            .reconnect_initial
            .saturating_mul(1u32 << shift)
            .min(config.reconnect_max);
        // Full jitter on the upper half: spreads reconnecting clients apart.
        let half = base / 2;
        let jitter = Duration::from_nanos(self.rng.next_u64() % (half.as_nanos() as u64 + 1));
        self.state = LinkState::Disconnected {
            retry_at: now + half + jitter,
        };
        was_ready
    }

    /// The client ends for good (`reason`; `refused` when the server
    /// refused its handshake with that code): no connection from now on. A
    /// required first connection that had not been made fails with it.
    pub(crate) fn end(&mut self, reason: &str, refused: Option<ErrorCode>) {
        if let Some(addr) = self.first_required.take() {
            self.connect_error = Some(ConnectError::Handshake {
                addr,
                reason: reason.to_owned(),
                refused,
            });
        }
        self.state = LinkState::Failed;
        self.failed = Some(reason.to_owned());
    }

    // ---- the first connection ----

    /// A failed first connection ends the client (see
    /// `Client::require_first_connection`).
    pub(crate) fn require_first(&mut self, addr: &str) {
        if self.session.is_none() {
            self.first_required = Some(addr.to_owned());
        }
    }

    /// The first connection is required and not made yet.
    pub(crate) fn first_required(&self) -> bool {
        self.first_required.is_some()
    }

    /// A connection attempt failed with `error`: if it was the required
    /// first one, records why and returns the reason the client ends with.
    pub(crate) fn first_attempt_failed(&mut self, error: std::io::Error) -> Option<String> {
        let addr = self.first_required.take()?;
        let reason = format!("cannot connect to {addr}: {error}");
        self.connect_error = Some(ConnectError::Io {
            addr,
            source: error,
        });
        Some(reason)
    }

    /// Why the required first connection failed, given the error the wait
    /// for it failed with.
    pub(crate) fn connect_error(&mut self, failed: OpError) -> ConnectError {
        self.connect_error
            .take()
            .unwrap_or_else(|| ConnectError::Handshake {
                addr: self.first_required.clone().unwrap_or_default(),
                reason: failed.to_string(),
                refused: None,
            })
    }
}
