//! The client: one connection carrying every mapping, a background driver,
//! and handles that any number of tasks may share.
//!
//! The core [`rmmap_core::client::Client`] sits behind a `std::sync::Mutex`
//! that is never held across an `.await`. Application calls lock it, try the
//! cache (`try_read` / `try_write`: a hit is served on the caller's thread
//! without waking anyone), and otherwise start an operation, register a
//! oneshot under its [`OpId`] and wake the driver. The driver task owns the
//! socket, runs the drive loop, and routes each `Completed` event to its
//! oneshot.

mod driver;
mod mapping;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use rmmap_core::client::{
    Completion, LostWrites, MapOptions, MappingId, OpError, OpId, SessionLossReason,
};
use tokio::sync::{Notify, broadcast, oneshot};

pub use mapping::Mapping;
pub use rmmap_core::client::{Access, ClientConfig};

use crate::clock::Clock;
use crate::net::{Connector, TcpConnector};
use rmmap_secure::random_seed;

/// Why [`Client::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The connection could not be opened.
    #[error("cannot connect to {addr}: {source}")]
    Io {
        /// The address tried.
        addr: String,
        /// What the network said.
        source: std::io::Error,
    },
    /// The connection opened but the handshake failed (wrong credentials,
    /// another protocol version, not an rmmap server, too slow).
    #[error("the handshake with {addr} failed: {reason}")]
    Handshake {
        /// The address tried.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// What happened to the client's connection, for applications that watch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A handshake completed.
    Connected {
        /// The session lived on: nothing was lost.
        resumed: bool,
    },
    /// The connection was lost; the client reconnects by itself.
    ConnectionLost,
    /// The session could not be resumed: `lost` names every mapping that lost
    /// writes (see [`Mapping::id`]); its operations fail with
    /// `session_lost` until it is unmapped.
    SessionLost {
        /// Why.
        reason: SessionLossReason,
        /// The mappings that lost writes, and what they lost.
        lost: Vec<(MappingId, LostWrites)>,
    },
    /// The client failed for good (or was closed).
    Failed {
        /// Why.
        reason: String,
    },
}

type Waiter = oneshot::Sender<Result<Completion, OpError>>;

/// The state the driver and the handles share.
pub(crate) struct Shared {
    core: Mutex<Inner>,
    /// Wakes the driver: new operations, bytes to send, shutting down.
    wake: Notify,
    events: broadcast::Sender<ClientEvent>,
    clock: Clock,
}

pub(crate) struct Inner {
    pub(crate) client: rmmap_core::client::Client,
    pub(crate) waiters: BTreeMap<OpId, Waiter>,
    /// Why the driver stopped; every new operation fails with it.
    pub(crate) stopped: Option<String>,
    /// Every handle is gone: close, then stop.
    pub(crate) abandoned: bool,
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

    /// Starts an operation under the lock and waits for it.
    pub(crate) async fn run(
        &self,
        start: impl FnOnce(
            &mut rmmap_core::client::Client,
            rmmap_core::Instant,
        ) -> Result<OpId, OpError>,
    ) -> Result<Completion, OpError> {
        let (rx, _) = self.register(start)?;
        self.wake_driver();
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(self.stopped()),
        }
    }

    /// Starts an operation under the lock and registers its waiter, from
    /// any thread; the receiver gets the result (or is dropped when the
    /// driver stops). Also says whether the core has bytes to send: the
    /// caller must then [wake the driver](Shared::wake_driver).
    pub(crate) fn register(
        &self,
        start: impl FnOnce(
            &mut rmmap_core::client::Client,
            rmmap_core::Instant,
        ) -> Result<OpId, OpError>,
    ) -> Result<(oneshot::Receiver<Result<Completion, OpError>>, bool), OpError> {
        let mut g = self.lock();
        if let Some(why) = &g.stopped {
            return Err(OpError::Closed(why.clone()));
        }
        let now = self.now();
        let op = start(&mut g.client, now)?;
        let (tx, rx) = oneshot::channel();
        g.waiters.insert(op, tx);
        Ok((rx, g.client.pending_output() > 0))
    }

    /// Wakes the driver: to send, to route completions, to recompute its
    /// next deadline.
    pub(crate) fn wake_driver(&self) {
        self.wake.notify_one();
    }

    /// The error for an operation whose waiter the stopped driver dropped.
    pub(crate) fn stopped(&self) -> OpError {
        OpError::Closed(
            self.lock()
                .stopped
                .clone()
                .unwrap_or_else(|| "the client stopped".into()),
        )
    }
}

/// Keeps the driver alive while any [`Client`] or [`Mapping`] exists; when
/// the last one goes, the client closes in the background.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().abandoned = true;
        self.shared.wake.notify_one();
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
        let core = rmmap_core::client::Client::new(config, seed, clock.now());
        let (events, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            core: Mutex::new(Inner {
                client: core,
                waiters: BTreeMap::new(),
                stopped: None,
                abandoned: false,
            }),
            wake: Notify::new(),
            events,
            clock,
        });
        let (first_tx, first_rx) = oneshot::channel();
        tokio::spawn(driver::run(
            shared.clone(),
            connector,
            addr.to_owned(),
            first_tx,
        ));
        let client = Client {
            handle: Arc::new(Handle { shared }),
        };
        match first_rx.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectError::Handshake {
                addr: addr.to_owned(),
                reason: "the client driver stopped".into(),
            }),
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
        self.map_with(
            path,
            range,
            MapOptions {
                access,
                create: false,
            },
        )
        .await
    }

    /// Maps with options: with `create`, a missing file is created and a
    /// short one extended (with zeros) to cover the range.
    pub async fn map_with(
        &self,
        path: &str,
        range: Range<u64>,
        opts: MapOptions,
    ) -> Result<Mapping, OpError> {
        let len = range
            .end
            .checked_sub(range.start)
            .ok_or(OpError::OutOfRange {
                offset: range.start,
                len: 0,
                mapping_len: 0,
            })?;
        let start = range.start;
        let r = self
            .shared()
            .run(|c, now| c.map(now, path, start, len, opts))
            .await?;
        match r {
            Completion::Mapped { mapping, file_len } => {
                Ok(Mapping::new(self.clone(), mapping, len, file_len))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Sets the length of the file at `path` (truncating or extending with
    /// zeros); with `create`, creates it if missing.
    pub async fn set_len(&self, path: &str, len: u64, create: bool) -> Result<u64, OpError> {
        match self
            .shared()
            .run(|c, now| c.set_len(now, path, len, create))
            .await?
        {
            Completion::LenSet { len } => Ok(len),
            other => Err(unexpected(other)),
        }
    }

    /// Writes back everything dirty, ends the session and stops the driver.
    /// Every other pending operation fails with `closed`.
    pub async fn close(&self) -> Result<(), OpError> {
        match self.shared().run(|c, now| c.close(now)).await? {
            Completion::Closed => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

/// A completion of the wrong kind would be a bug in the core.
pub(crate) fn unexpected(c: Completion) -> OpError {
    OpError::Closed(format!("internal error: unexpected completion {c:?}"))
}
