//! A client that lives in a mio loop the application owns.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;

use bytes::Bytes;
use mio::{Registry, Token};
use rmmap_core::client::{
    ClientConfig, ClientEvent, Completion, MapOptions, Mapped, MappingId, OpError, OpId, Pending,
};
use rmmap_core::protocol::AtomicOp;
use rmmap_secure::ClientTls;

use crate::clock::{Clock, until};
use crate::link::{Link, Outcome};
use rmmap_secure::random_seed;

/// An rmmap client driven by the application's own [`mio::Poll`] loop.
///
/// Its socket is registered in the application's [`Registry`] under the
/// [`Token`] it is given. The application hands it every event for that
/// token ([`EmbeddedClient::handle_event`]), calls
/// [`EmbeddedClient::handle_timeout`] when [`EmbeddedClient::next_timeout`]
/// has passed, and collects finished operations with
/// [`EmbeddedClient::poll_completion`]. Commands ([`EmbeddedClient::map`],
/// [`EmbeddedClient::read`], ...) return a [`Pending`] operation at once and
/// never block; its [`finish`](Pending::finish) turns the completion that
/// carries its id into the command's own result type. The `try_` variants
/// serve cache hits on the spot.
///
/// Nothing here spawns a thread or blocks, except resolving a host name when
/// connecting: give an IP address to avoid even that.
///
/// Dropping it closes the socket without a goodbye: dirty pages not yet
/// written back are lost and the server keeps the session until its lease
/// runs out. Call [`EmbeddedClient::close`] and wait for its completion
/// first.
///
/// ```no_run
/// use mio::{Events, Poll, Token};
/// use rmmap_mio::{ClientConfig, EmbeddedClient, MapOptions};
///
/// # fn main() -> std::io::Result<()> {
/// let mut poll = Poll::new()?;
/// let mut client = EmbeddedClient::new(
///     "127.0.0.1:7878",
///     ClientConfig::default(),
///     poll.registry(),
///     Token(7),
/// )?;
/// let op = client.map("data.bin", 0..4096, MapOptions::read_only()).unwrap();
/// let mut events = Events::with_capacity(64);
/// loop {
///     let timeout = client
///         .next_timeout()
///         .map(|t| t.saturating_duration_since(std::time::Instant::now()));
///     poll.poll(&mut events, timeout)?;
///     for ev in events.iter() {
///         if ev.token() == client.token() {
///             client.handle_event(ev);
///         }
///     }
///     client.handle_timeout();
///     while let Some((done, result)) = client.poll_completion() {
///         if done == op {
///             let mapped = op.finish(result);
///             println!("mapped: {mapped:?}");
///             return Ok(());
///         }
///     }
/// }
/// # }
/// ```
pub struct EmbeddedClient {
    core: rmmap_core::client::Client,
    link: Link,
    clock: Clock,
    completions: VecDeque<(OpId, Result<Completion, OpError>)>,
    events: VecDeque<ClientEvent>,
}

impl std::fmt::Debug for EmbeddedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedClient")
            .field("addr", &self.link.addr())
            .field("token", &self.link.token())
            .field("core", &self.core)
            .finish()
    }
}

impl EmbeddedClient {
    /// A client of the server at `addr` (`host:port`) whose socket is
    /// registered in `registry` under `token`. It starts connecting at
    /// once; [`ClientEvent::Connected`] says when the handshake is done, but
    /// commands may be issued right away.
    pub fn new(
        addr: &str,
        config: ClientConfig,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Self> {
        Self::with_seed(addr, config, registry, token, random_seed()?)
    }

    /// Like [`EmbeddedClient::new`], over TLS with `tls` (the TLS handshake
    /// runs in the same loop, without blocking).
    pub fn with_tls(
        addr: &str,
        config: ClientConfig,
        tls: ClientTls,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Self> {
        Self::start(addr, config, Some(tls), registry, token, random_seed()?)
    }

    /// Like [`EmbeddedClient::new`], with the core's seed (reconnection
    /// jitter, nonces) given instead of drawn from the operating system: for
    /// reproducible tests.
    pub fn with_seed(
        addr: &str,
        config: ClientConfig,
        registry: &Registry,
        token: Token,
        seed: [u8; 32],
    ) -> io::Result<Self> {
        Self::start(addr, config, None, registry, token, seed)
    }

    fn start(
        addr: &str,
        config: ClientConfig,
        tls: Option<ClientTls>,
        registry: &Registry,
        token: Token,
        seed: [u8; 32],
    ) -> io::Result<Self> {
        let clock = Clock::new();
        let core = rmmap_core::client::Client::new(config, seed, clock.now());
        let link = Link::new(addr, registry.try_clone()?, token).with_tls(tls);
        let mut c = EmbeddedClient {
            core,
            link,
            clock,
            completions: VecDeque::new(),
            events: VecDeque::new(),
        };
        c.run();
        Ok(c)
    }

    /// The token the client's socket is registered under.
    pub fn token(&self) -> Token {
        self.link.token()
    }

    /// Hands the client a readiness event. Events for other tokens are
    /// ignored, so every event of a loop may be passed in.
    pub fn handle_event(&mut self, event: &mio::event::Event) {
        if event.token() != self.link.token() {
            return;
        }
        let now = self.clock.now();
        let mut out = Outcome::default();
        self.link.handle_event(&mut self.core, now, event, &mut out);
        self.collect(out);
    }

    /// Lets time pass: reconnections, lease renewals, timeouts. Call it
    /// when [`EmbeddedClient::next_timeout`] has passed; calling it more
    /// often does no harm.
    pub fn handle_timeout(&mut self) {
        let now = self.clock.now();
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        self.run();
    }

    /// When [`EmbeddedClient::handle_timeout`] must next be called.
    pub fn next_timeout(&self) -> Option<std::time::Instant> {
        self.core.poll_timeout().map(|t| self.clock.deadline(t))
    }

    /// How long the loop may sleep before calling
    /// [`EmbeddedClient::handle_timeout`] (for `Poll::poll`).
    pub fn timeout(&self) -> Option<std::time::Duration> {
        until(self.next_timeout())
    }

    /// The next finished operation.
    pub fn poll_completion(&mut self) -> Option<(OpId, Result<Completion, OpError>)> {
        self.completions.pop_front()
    }

    /// The next connection event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// The core state machine, to inspect (page size, mapping lengths,
    /// pending operations).
    pub fn core(&self) -> &rmmap_core::client::Client {
        &self.core
    }

    /// Whether the handshake has completed on the current connection.
    pub fn is_connected(&self) -> bool {
        self.core.is_connected()
    }

    /// Maps `range` of the file at `path`; its [`Pending`] reads the new
    /// mapping from the completion.
    pub fn map(
        &mut self,
        path: &str,
        range: Range<u64>,
        opts: MapOptions,
    ) -> Result<Pending<Mapped>, OpError> {
        self.command(|c, now| c.map(now, path, range, opts))
    }

    /// Reads `len` bytes at `offset` of the mapping.
    pub fn read(
        &mut self,
        mapping: MappingId,
        offset: u64,
        len: u64,
    ) -> Result<Pending<Bytes>, OpError> {
        self.command(|c, now| c.read(now, mapping, offset, len))
    }

    /// Writes `data` at `offset` of the mapping; completes once every later
    /// read anywhere sees it.
    pub fn write(
        &mut self,
        mapping: MappingId,
        offset: u64,
        data: Bytes,
    ) -> Result<Pending<()>, OpError> {
        self.command(|c, now| c.write(now, mapping, offset, data))
    }

    /// Serves a read from the cache: `Ok(true)` when `buf` was filled,
    /// `Ok(false)` when [`EmbeddedClient::read`] is needed.
    pub fn try_read(
        &mut self,
        mapping: MappingId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<bool, OpError> {
        self.command(|c, now| c.try_read(now, mapping, offset, buf))
    }

    /// Serves a write from the cache: `Ok(true)` when it is done,
    /// `Ok(false)` when [`EmbeddedClient::write`] is needed.
    pub fn try_write(
        &mut self,
        mapping: MappingId,
        offset: u64,
        data: &[u8],
    ) -> Result<bool, OpError> {
        self.command(|c, now| c.try_write(now, mapping, offset, data))
    }

    /// Makes every write completed so far on the mapping durable.
    pub fn sync(&mut self, mapping: MappingId) -> Result<Pending<()>, OpError> {
        self.command(|c, now| c.sync(now, mapping))
    }

    /// Writes back the mapping's dirty pages and ends it.
    pub fn unmap(&mut self, mapping: MappingId) -> Result<Pending<()>, OpError> {
        self.command(|c, now| c.unmap(now, mapping))
    }

    /// Sets the length of the file at `path` (with `create`, creates it);
    /// completes with the new length.
    pub fn set_len(&mut self, path: &str, len: u64, create: bool) -> Result<Pending<u64>, OpError> {
        self.command(|c, now| c.set_len(now, path, len, create))
    }

    /// Runs an atomic operation at the server on the 64-bit little-endian
    /// word at `offset` of the mapping; completes with the word before and
    /// whether the operation applied.
    pub fn atomic(
        &mut self,
        mapping: MappingId,
        offset: u64,
        op: AtomicOp,
    ) -> Result<Pending<(u64, bool)>, OpError> {
        self.command(|c, now| c.atomic(now, mapping, offset, op))
    }

    /// Waits until the little-endian 64-bit word at `offset` of the mapping
    /// no longer holds `current`, or `timeout` passes; completes with the
    /// new value, or `None` on a timeout (see `Client::wait_while` in
    /// rmmap-core).
    pub fn wait_while(
        &mut self,
        mapping: MappingId,
        offset: u64,
        current: u64,
        timeout: std::time::Duration,
    ) -> Result<Pending<Option<u64>>, OpError> {
        self.command(|c, now| c.wait_while(now, mapping, offset, current, timeout))
    }

    /// Writes back everything dirty, says goodbye and ends the session;
    /// once it completes the socket is closed and deregistered.
    pub fn close(&mut self) -> Result<Pending<()>, OpError> {
        self.command(|c, now| c.close(now))
    }

    /// Runs a command on the core, then lets the link act on what it says.
    fn command<R>(
        &mut self,
        f: impl FnOnce(&mut rmmap_core::client::Client, rmmap_core::Instant) -> R,
    ) -> R {
        let now = self.clock.now();
        let r = f(&mut self.core, now);
        self.run();
        r
    }

    fn run(&mut self) {
        let now = self.clock.now();
        let mut out = Outcome::default();
        self.link.run(&mut self.core, now, &mut out);
        self.collect(out);
    }

    fn collect(&mut self, out: Outcome) {
        self.completions.extend(out.completed);
        self.events.extend(out.events);
    }
}
