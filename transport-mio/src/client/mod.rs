//! The blocking client: one connection carrying every mapping, one
//! background IO thread, and handles that any number of threads may share.
//!
//! The core [`rmmap_core::client::Client`] sits behind a `std::sync::Mutex`.
//! Application calls lock it, try the cache (`try_read` / `try_write`: a hit
//! is served on the caller's thread without waking anyone), and otherwise
//! start an operation, register a one-shot channel under its [`OpId`], wake
//! the IO thread through a [`mio::Waker`] and block on the channel. The IO
//! thread owns a [`mio::Poll`] and the socket, runs the same [`Link`] as
//! [`EmbeddedClient`](crate::EmbeddedClient), and routes each completion to
//! its channel.

mod driver;
mod mapping;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};

use mio::{Poll, Token, Waker};
use rmmap_core::client::{ClientConfig, Completion, MapOptions, OpError, OpId};
use rmmap_secure::ClientTls;

pub use mapping::Mapping;
pub use rmmap_core::client::Access;

use crate::clock::Clock;
use crate::event::{ClientEvent, ConnectError};
use crate::link::Link;
use rmmap_secure::random_seed;

/// The IO thread's tokens.
const WAKE: Token = Token(0);
const SOCKET: Token = Token(1);
/// A watcher more than this many events behind misses the newest.
const EVENT_BACKLOG: usize = 256;

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
    pub(crate) client: rmmap_core::client::Client,
    pub(crate) waiters: BTreeMap<OpId, Waiter>,
    /// Why the IO thread stopped; every new operation fails with it.
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

    pub(crate) fn wake(&self) {
        // Fails only if the IO thread's poll is gone, and then it has stopped.
        let _ = self.waker.wake();
    }

    /// Starts an operation under the lock and blocks until it completes.
    pub(crate) fn run(
        &self,
        start: impl FnOnce(
            &mut rmmap_core::client::Client,
            rmmap_core::Instant,
        ) -> Result<OpId, OpError>,
    ) -> Result<Completion, OpError> {
        let rx = {
            let mut g = self.lock();
            if let Some(why) = &g.stopped {
                return Err(OpError::Closed(why.clone()));
            }
            let now = self.now();
            let op = start(&mut g.client, now)?;
            let (tx, rx) = sync_channel(1);
            g.waiters.insert(op, tx);
            rx
        };
        self.wake();
        match rx.recv() {
            Ok(r) => r,
            Err(_) => Err(OpError::Closed(
                self.lock()
                    .stopped
                    .clone()
                    .unwrap_or_else(|| "the client stopped".into()),
            )),
        }
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
        self.shared.lock().abandoned = true;
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
        let seed = random_seed().map_err(|source| ConnectError::Io {
            addr: addr.to_owned(),
            source,
        })?;
        Self::connect_seeded(addr, config, seed)
    }

    /// Like [`Client::connect`], over TLS with `tls`: the server's
    /// certificate must come from an authority `tls` trusts and carry its
    /// name (by default the host part of `addr`).
    pub fn connect_tls(
        addr: &str,
        config: ClientConfig,
        tls: ClientTls,
    ) -> Result<Client, ConnectError> {
        let seed = random_seed().map_err(|source| ConnectError::Io {
            addr: addr.to_owned(),
            source,
        })?;
        Self::start(addr, config, Some(tls), seed)
    }

    /// Like [`Client::connect`], with the core's seed (reconnection jitter,
    /// nonces) given instead of drawn from the operating system: for
    /// reproducible tests. Production code should not use it.
    pub fn connect_seeded(
        addr: &str,
        config: ClientConfig,
        seed: [u8; 32],
    ) -> Result<Client, ConnectError> {
        Self::start(addr, config, None, seed)
    }

    fn start(
        addr: &str,
        config: ClientConfig,
        tls: Option<ClientTls>,
        seed: [u8; 32],
    ) -> Result<Client, ConnectError> {
        let io_err = |source| ConnectError::Io {
            addr: addr.to_owned(),
            source,
        };
        let poll = Poll::new().map_err(io_err)?;
        let waker = Waker::new(poll.registry(), WAKE).map_err(io_err)?;
        let registry = poll.registry().try_clone().map_err(io_err)?;
        let link = Link::new(addr, registry, SOCKET).with_tls(tls);
        let clock = Clock::new();
        let core = rmmap_core::client::Client::new(config, seed, clock.now());
        let shared = Arc::new(Shared {
            core: Mutex::new(Inner {
                client: core,
                waiters: BTreeMap::new(),
                stopped: None,
                abandoned: false,
            }),
            waker,
            watchers: Mutex::new(Vec::new()),
            clock,
        });
        let (first_tx, first_rx) = sync_channel(1);
        let driver = driver::Driver::new(shared.clone(), poll, link, first_tx);
        std::thread::Builder::new()
            .name("rmmap-mio-client".into())
            .spawn(move || driver.run())
            .map_err(io_err)?;
        let client = Client {
            handle: Arc::new(Handle { shared }),
        };
        match first_rx.recv() {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectError::Handshake {
                addr: addr.to_owned(),
                reason: "the client's IO thread stopped".into(),
            }),
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
        self.map_with(
            path,
            range,
            MapOptions {
                access,
                create: false,
            },
        )
    }

    /// Maps with options: with `create`, a missing file is created and a
    /// short one extended (with zeros) to cover the range.
    pub fn map_with(
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
        match self
            .shared()
            .run(|c, now| c.map(now, path, start, len, opts))?
        {
            Completion::Mapped { mapping, file_len } => {
                Ok(Mapping::new(self.clone(), mapping, len, file_len))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Sets the length of the file at `path` (truncating or extending with
    /// zeros); with `create`, creates it if missing.
    pub fn set_len(&self, path: &str, len: u64, create: bool) -> Result<u64, OpError> {
        match self
            .shared()
            .run(|c, now| c.set_len(now, path, len, create))?
        {
            Completion::LenSet { len } => Ok(len),
            other => Err(unexpected(other)),
        }
    }

    /// Writes back everything dirty, ends the session and stops the IO
    /// thread. Every other pending operation fails with `closed`.
    pub fn close(&self) -> Result<(), OpError> {
        match self.shared().run(|c, now| c.close(now))? {
            Completion::Closed => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

/// A completion of the wrong kind would be a bug in the core.
pub(crate) fn unexpected(c: Completion) -> OpError {
    OpError::Closed(format!("internal error: unexpected completion {c:?}"))
}
