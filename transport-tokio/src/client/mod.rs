//! The client: one connection carrying every mapping, a background driver,
//! and handles that any number of tasks may share.
//!
//! The core [`rmmap_core::client::Client`] decides everything and sits
//! behind a `std::sync::Mutex` that is never held across an `.await`. Every
//! call runs the same way ([`Shared::run`]): under the lock the core either
//! finishes it on the spot (a cache hit, served on the caller's thread
//! without waking anyone) or starts an operation; then the operation's
//! oneshot is registered under its id, the driver is woken, and the caller
//! awaits. The driver task owns the socket, runs the drive loop, and routes
//! each completion to its oneshot; the operation's typed
//! [`Pending`] reads it. What differs from the mio client is only how to
//! wait.

mod driver;
mod homed;
mod mapping;
mod members;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use rmmap_core::client::{Completion, IntoStarted, MapOptions, OpError, OpId, Pending, Started};
use rmmap_secure::random_seed;
use tokio::sync::{Notify, broadcast, oneshot};

pub(crate) use homed::Home;
pub use mapping::Mapping;
pub(crate) use mapping::MappingInner;
pub use members::ClusterClient;
pub use rmmap_core::client::{Access, ClientConfig, ClientEvent, ConnectError};

use crate::clock::Clock;
use crate::net::{Connector, TcpConnector};

type Core = rmmap_core::client::Client;
type Waiter = oneshot::Sender<Result<Completion, OpError>>;

/// The state the driver and the handles share.
pub(crate) struct Shared {
    core: Mutex<Inner>,
    /// Wakes the driver: new operations, bytes to send, shutting down.
    wake: Notify,
    events: broadcast::Sender<ClientEvent>,
    clock: Clock,
    /// Turns of the driver's loop so far: how a memory mapping's fault
    /// thread tells a driver that cannot run (every worker of the runtime
    /// blocked) from one that is waiting.
    turns: std::sync::atomic::AtomicU64,
}

pub(crate) struct Inner {
    pub(crate) client: Core,
    /// Who waits for which operation.
    waiters: BTreeMap<OpId, Waiter>,
}

type Receiver = oneshot::Receiver<Result<Completion, OpError>>;

impl Inner {
    /// Registers the waiter of `pending`: the driver completes it.
    fn wait_for<T>(&mut self, pending: &Pending<T>) -> Receiver {
        let (tx, rx) = oneshot::channel();
        self.waiters.insert(pending.id(), tx);
        rx
    }
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

    /// Runs a command and waits for its result.
    pub(crate) async fn run<S: IntoStarted>(
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
                        self.wake_driver();
                    }
                    return Ok(t);
                }
                Started::Waiting(pending) => {
                    let rx = g.wait_for(&pending);
                    (pending, rx)
                }
            }
        };
        self.wake_driver();
        pending.finish(rx.await.unwrap_or_else(|_| Err(self.stopped())))
    }

    /// Starts an operation under the lock, from any thread, and registers
    /// its waiter; also says whether the core has bytes to send (the caller
    /// must then [wake the driver](Shared::wake_driver)).
    pub(crate) fn register<T>(
        &self,
        command: impl FnOnce(&mut Core, rmmap_core::Instant) -> Result<Pending<T>, OpError>,
    ) -> Result<(Pending<T>, Receiver, bool), OpError> {
        let mut g = self.lock();
        let now = self.now();
        let pending = command(&mut g.client, now)?;
        let rx = g.wait_for(&pending);
        Ok((pending, rx, g.client.pending_output() > 0))
    }

    /// Calls the core under the lock (the `try_` fast paths).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Core, rmmap_core::Instant) -> R) -> R {
        let mut g = self.lock();
        let now = self.now();
        f(&mut g.client, now)
    }

    /// Counts a turn of the driver's loop.
    pub(crate) fn turned(&self) {
        self.turns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Turns of the driver's loop so far.
    pub(crate) fn turns(&self) -> u64 {
        self.turns.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Wakes the driver: to send, to route completions, to recompute its
    /// next deadline.
    pub(crate) fn wake_driver(&self) {
        self.wake.notify_one();
    }

    /// The error for an operation whose waiter went away unanswered (the
    /// runtime dropped the driver).
    pub(crate) fn stopped(&self) -> OpError {
        self.lock()
            .client
            .closed()
            .unwrap_or_else(|| OpError::Closed("the client's driver stopped".into()))
    }
}

/// Keeps the driver alive while any [`Client`] or [`Mapping`] exists; when
/// the last one goes, the client closes in the background.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.with(|c, now| c.abandon(now));
        self.shared.wake_driver();
    }
}

/// A client of one rmmap server: one connection carrying every mapping.
///
/// Cheap to clone; every clone and every [`Mapping`] shares the connection,
/// and requests from many tasks are pipelined on it. Reconnection and
/// session resumption are automatic; [`Client::events`] tells what happened.
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
    pub async fn connect(addr: &str, config: ClientConfig) -> Result<Client, ConnectError> {
        Self::connect_with(TcpConnector, addr, config).await
    }

    /// Like [`Client::connect`], over any [`Connector`].
    pub async fn connect_with<C: Connector>(
        connector: C,
        addr: &str,
        config: ClientConfig,
    ) -> Result<Client, ConnectError> {
        let seed = random_seed().map_err(|source| ConnectError::Io {
            addr: addr.to_owned(),
            source,
        })?;
        Self::connect_seeded(connector, addr, config, seed).await
    }

    /// Like [`Client::connect_with`], with the core's seed (reconnection
    /// jitter, nonces) given instead of drawn from the operating system:
    /// for reproducible simulations. Production code should not use it.
    pub async fn connect_seeded<C: Connector>(
        connector: C,
        addr: &str,
        config: ClientConfig,
        seed: [u8; 32],
    ) -> Result<Client, ConnectError> {
        let clock = Clock::new();
        let mut core = Core::new(config, seed, clock.now());
        core.require_first_connection(addr);
        let (events, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            core: Mutex::new(Inner {
                client: core,
                waiters: BTreeMap::new(),
            }),
            wake: Notify::new(),
            events,
            clock,
            turns: std::sync::atomic::AtomicU64::new(0),
        });
        tokio::spawn(driver::run(shared.clone(), connector, addr.to_owned()));
        let client = Client {
            handle: Arc::new(Handle { shared }),
        };
        match client.shared().run(|c, now| c.wait_connected(now)).await {
            Ok(()) => Ok(client),
            Err(e) => Err(client.shared().lock().client.connect_error(e)),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Connection events from now on: lost, reconnected, session lost. A
    /// watcher that falls more than 256 events behind misses the oldest
    /// (`RecvError::Lagged`).
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.shared().events.subscribe()
    }

    /// Whether the handshake has completed on the current connection.
    pub fn is_connected(&self) -> bool {
        self.shared().lock().client.is_connected()
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

    /// The server's page size, once connected.
    pub fn page_size(&self) -> Option<u32> {
        self.shared().lock().client.page_size()
    }

    /// Maps `range` of the file at `path` (relative to the export root).
    /// The range must lie within the file.
    pub async fn map(
        &self,
        path: &str,
        range: Range<u64>,
        access: Access,
    ) -> Result<Mapping, OpError> {
        let opts = MapOptions {
            access,
            create: false,
        };
        self.map_with(path, range, opts).await
    }

    /// Maps with options: with `create`, a missing file is created and a
    /// short one extended (with zeros) to cover the range.
    pub async fn map_with(
        &self,
        path: &str,
        range: Range<u64>,
        opts: MapOptions,
    ) -> Result<Mapping, OpError> {
        let m = self
            .shared()
            .run(|c, now| c.map(now, path, range, opts))
            .await?;
        Ok(Mapping::new(self.clone(), m))
    }

    /// Asks this member whether it serves `range` of `path` with a
    /// read-only mapping that a memory mapping of the range here does not
    /// refuse (see `rmmap_core::client::Client::probe_map`): nothing is
    /// read or written through it.
    pub(crate) async fn probe_map(
        &self,
        path: &str,
        range: Range<u64>,
    ) -> Result<Mapping, OpError> {
        let m = self
            .shared()
            .run(|c, now| c.probe_map(now, path, range))
            .await?;
        Ok(Mapping::new(self.clone(), m))
    }

    /// Sets the length of the file at `path` (truncating or extending with
    /// zeros); with `create`, creates it if missing. Returns the new length.
    pub async fn set_len(&self, path: &str, len: u64, create: bool) -> Result<u64, OpError> {
        self.shared()
            .run(|c, now| c.set_len(now, path, len, create))
            .await
    }

    /// Writes back everything dirty, ends the session and stops the driver.
    /// Every other pending operation fails with `closed`.
    pub async fn close(&self) -> Result<(), OpError> {
        self.shared().run(|c, now| c.close(now)).await
    }
}
