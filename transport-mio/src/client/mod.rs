//! The blocking client: one connection carrying every mapping, one
//! background IO thread, and handles that any number of threads may share.
//!
//! The core [`rmmap_core::client::Client`] decides everything and sits
//! behind a `std::sync::Mutex`. Every call runs the same way
//! ([`Shared::run`]): under the lock the core either finishes it on the spot
//! (a cache hit, served on the caller's thread without waking anyone) or
//! starts an operation; then a one-shot channel is registered under the
//! operation's id, the IO thread is woken through a [`mio::Waker`], and the
//! caller blocks on the channel. The IO thread owns a [`mio::Poll`] and the
//! socket, runs the same [`Link`] as
//! [`EmbeddedClient`](crate::EmbeddedClient), and routes each completion to
//! its channel; the operation's typed [`Pending`] reads it. What differs
//! from the Tokio client is only how to wait.

mod driver;
mod homed;
mod mapping;
mod members;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};

use mio::{Poll, Token, Waker};
use rmmap_core::client::{
    ClientConfig, ClientEvent, Completion, ConnectError, IntoStarted, MapOptions, OpError, OpId,
    Started,
};
use rmmap_secure::{ClientTls, random_seed};

pub use mapping::Mapping;
pub use members::ClusterClient;
pub use rmmap_core::client::Access;

use crate::clock::Clock;
use crate::link::Link;

/// The IO thread's tokens.
const WAKE: Token = Token(0);
const SOCKET: Token = Token(1);
/// A watcher more than this many events behind misses the newest.
const EVENT_BACKLOG: usize = 256;

type Core = rmmap_core::client::Client;
type Waiter = SyncSender<Result<Completion, OpError>>;

/// The state the IO thread and the handles share.
pub(crate) struct Shared {
    core: Mutex<Inner>,
    /// Wakes the IO thread: new operations, bytes to send, shutting down.
    waker: Waker,
    watchers: Mutex<Vec<SyncSender<ClientEvent>>>,
    clock: Clock,
}

pub(crate) struct Inner {
    pub(crate) client: Core,
    /// Who waits for which operation.
    waiters: BTreeMap<OpId, Waiter>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough state for
        // failing the remaining operations.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn now(&self) -> rmmap_core::Instant {
        self.clock.now()
    }

    pub(crate) fn wake(&self) {
        // Fails only if the IO thread's poll is gone, and then it has stopped.
        let _ = self.waker.wake();
    }

    /// Runs a command and blocks until its result.
    pub(crate) fn run<S: IntoStarted>(
        &self,
        command: impl FnOnce(&mut Core, rmmap_core::Instant) -> Result<S, OpError>,
    ) -> Result<S::Output, OpError> {
        let (pending, rx) = {
            let mut g = self.lock();
            let now = self.now();
            match command(&mut g.client, now)?.into_started() {
                Started::Done(t) => {
                    let to_send = g.client.pending_output() > 0;
                    drop(g);
                    if to_send {
                        self.wake();
                    }
                    return Ok(t);
                }
                Started::Waiting(pending) => {
                    let (tx, rx) = sync_channel(1);
                    g.waiters.insert(pending.id(), tx);
                    (pending, rx)
                }
            }
        };
        self.wake();
        let result = rx.recv().unwrap_or_else(|_| {
            Err(self
                .lock()
                .client
                .closed()
                .unwrap_or_else(|| OpError::Closed("the client's IO thread stopped".into())))
        });
        pending.finish(result)
    }

    /// Calls the core under the lock (the `try_` fast paths).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Core, rmmap_core::Instant) -> R) -> R {
        let mut g = self.lock();
        let now = self.now();
        f(&mut g.client, now)
    }

    /// Tells every watcher; forgets the ones that went away.
    pub(crate) fn publish(&self, ev: ClientEvent) {
        let mut w = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        w.retain(|tx| !matches!(tx.try_send(ev.clone()), Err(TrySendError::Disconnected(_))));
    }
}

/// Keeps the IO thread alive while any [`Client`] or [`Mapping`] exists;
/// when the last one goes, the client closes in the background.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.with(|c, now| c.abandon(now));
        self.shared.wake();
    }
}

/// A blocking client of one rmmap server: one connection carrying every
/// mapping, driven by one background IO thread.
///
/// Cheap to clone; every clone and every [`Mapping`] shares the connection,
/// and requests from many threads are pipelined on it. Reconnection (with
/// backoff) and session resumption are automatic; [`Client::events`] tells
/// what happened.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("core", &self.shared().lock().client)
            .finish()
    }
}

impl Client {
    /// Connects over TCP to `addr` (`host:port`) and completes the
    /// handshake. Fails if this first connection cannot be made; later
    /// losses are repaired in the background.
    pub fn connect(addr: &str, config: ClientConfig) -> Result<Client, ConnectError> {
        Self::start(addr, config, None, None)
    }

    /// Like [`Client::connect`], over TLS with `tls`: the server's
    /// certificate must come from an authority `tls` trusts and carry its
    /// name (by default the host part of `addr`).
    pub fn connect_tls(
        addr: &str,
        config: ClientConfig,
        tls: ClientTls,
    ) -> Result<Client, ConnectError> {
        Self::start(addr, config, Some(tls), None)
    }

    /// Like [`Client::connect`], with the core's seed (reconnection jitter,
    /// nonces) given instead of drawn from the operating system: for
    /// reproducible tests. Production code should not use it.
    pub fn connect_seeded(
        addr: &str,
        config: ClientConfig,
        seed: [u8; 32],
    ) -> Result<Client, ConnectError> {
        Self::start(addr, config, None, Some(seed))
    }

    fn start(
        addr: &str,
        config: ClientConfig,
        tls: Option<ClientTls>,
        seed: Option<[u8; 32]>,
    ) -> Result<Client, ConnectError> {
        let io_err = |source| ConnectError::Io {
            addr: addr.to_owned(),
            source,
        };
        let seed = match seed {
            Some(s) => s,
            None => random_seed().map_err(io_err)?,
        };
        let poll = Poll::new().map_err(io_err)?;
        let waker = Waker::new(poll.registry(), WAKE).map_err(io_err)?;
        let registry = poll.registry().try_clone().map_err(io_err)?;
        let link = Link::new(addr, registry, SOCKET).with_tls(tls);
        let clock = Clock::new();
        let mut core = Core::new(config, seed, clock.now());
        core.require_first_connection(addr);
        let shared = Arc::new(Shared {
            core: Mutex::new(Inner {
                client: core,
                waiters: BTreeMap::new(),
            }),
            waker,
            watchers: Mutex::new(Vec::new()),
            clock,
        });
        let driver = driver::Driver::new(shared.clone(), poll, link);
        std::thread::Builder::new()
            .name("rmmap-mio-client".into())
            .spawn(move || driver.run())
            .map_err(io_err)?;
        let client = Client {
            handle: Arc::new(Handle { shared }),
        };
        match client.shared().run(|c, now| c.wait_connected(now)) {
            Ok(()) => Ok(client),
            Err(e) => Err(client.shared().lock().client.connect_error(e)),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Connection events from now on: lost, reconnected, session lost. A
    /// watcher that falls more than 256 events behind misses the newest
    /// ones until it catches up.
    pub fn events(&self) -> Receiver<ClientEvent> {
        let (tx, rx) = sync_channel(EVENT_BACKLOG);
        self.shared()
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }

    /// Whether `other` is this connection (or a clone of it).
    pub fn same_connection(&self, other: &Client) -> bool {
        Arc::ptr_eq(&self.handle, &other.handle)
    }

    /// Whether `other` talks to the same server run as this connection
    /// (its epoch, 64 random bits, is the same): the same member, whatever
    /// address each was given.
    pub(crate) fn same_server(&self, other: &Client) -> bool {
        let epoch = |c: &Client| c.shared().lock().client.session_epoch();
        matches!((epoch(self), epoch(other)), (Some(a), Some(b)) if a == b)
    }

    /// Whether the handshake has completed on the current connection.
    pub fn is_connected(&self) -> bool {
        self.shared().lock().client.is_connected()
    }

    /// The server's page size, once connected.
    pub fn page_size(&self) -> Option<u32> {
        self.shared().lock().client.page_size()
    }

    /// Maps `range` of the file at `path` (relative to the export root).
    /// The range must lie within the file.
    pub fn map(&self, path: &str, range: Range<u64>, access: Access) -> Result<Mapping, OpError> {
        let opts = MapOptions {
            access,
            create: false,
        };
        self.map_with(path, range, opts)
    }

    /// Maps with options: with `create`, a missing file is created and a
    /// short one extended (with zeros) to cover the range.
    pub fn map_with(
        &self,
        path: &str,
        range: Range<u64>,
        opts: MapOptions,
    ) -> Result<Mapping, OpError> {
        let m = self.shared().run(|c, now| c.map(now, path, range, opts))?;
        Ok(Mapping::new(self.clone(), m))
    }

    /// Sets the length of the file at `path` (truncating or extending with
    /// zeros); with `create`, creates it if missing. Returns the new length.
    pub fn set_len(&self, path: &str, len: u64, create: bool) -> Result<u64, OpError> {
        self.shared()
            .run(|c, now| c.set_len(now, path, len, create))
    }

    /// Writes back everything dirty, ends the session and stops the IO
    /// thread. Every other pending operation fails with `closed`.
    pub fn close(&self) -> Result<(), OpError> {
        self.shared().run(|c, now| c.close(now))
    }
}
