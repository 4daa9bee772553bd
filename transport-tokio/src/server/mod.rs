//! The server: an accept loop, a reader and a writer task per connection,
//! and one task that owns the core.
//!
//! # Where the core runs
//!
//! The core [`rmmap_core::server::Server`] makes every decision; it never
//! touches the disk, it asks for store requests, which run on a
//! [`DiskPool`](rmmap_store::DiskPool) of [`ServeOptions::disk_threads`]
//! threads (several at once: the core only hands out requests that
//! commute), and whose results come back to the core task on a channel. So
//! a slow disk stalls nothing but the requests that wait for it. By default
//! ([`ServeOptions::dedicated_thread`]) the task that owns the core runs on
//! its own OS thread with a single-threaded Tokio runtime, with no lock
//! around the core. Under a simulated network (turmoil) everything must run
//! on the simulation's runtime and be reproducible, so the core task can
//! instead be spawned there, and store requests run inline
//! (`disk_threads: 0`).
//!
//! Connection tasks talk to the core over one bounded channel (bytes read,
//! writer drained, connection gone); the core hands each writer at most one
//! batch at a time, so unsent bytes stay in the core's queue, where its
//! output limits and [`InputStatus::Paused`](rmmap_core::server::InputStatus)
//! see them. A paused connection's reader stops reading until its output
//! drains.
//!
//! # Hostile peers
//!
//! What a peer sends is bounded by the core (frame limits checked before a
//! body is buffered, a handshake timeout, leases that end silent sessions
//! and close their connections) and by the tasks here: a reader holds at
//! most one partial frame plus one read, and none while its connection is
//! paused; a writer gives up on a peer that takes no bytes for
//! [`ServeOptions::write_timeout`]; the accept loop backs off when `accept`
//! fails (out of file descriptors) instead of spinning, and stops accepting
//! at [`ServeOptions::max_connections`].

mod channels;
mod conn;
mod coordinator;
mod core_task;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use rmmap_core::server::{ConfigError, StartError};
use rmmap_core::store::{Store, StoreError};
use rmmap_store::{RootError, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::net::Listener;
use crate::tls::TlsListener;
use rmmap_secure::random_seed;

/// How the server runs (as opposed to what it serves).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Run the core on its own OS thread (see the module docs). Default
    /// true; a simulation sets it to false.
    pub dedicated_thread: bool,
    /// A graceful shutdown gives up after this long. Default 10 s.
    pub shutdown_timeout: Duration,
    /// Most open connections; further ones wait to be accepted. Default 4096.
    pub max_connections: usize,
    /// A connection whose peer takes none of the bytes written to it for
    /// this long is closed (its socket, not its session). `None`, the
    /// default, means one lease: a client that reads nothing for that long
    /// has stopped reading its pongs and would reconnect anyway.
    pub write_timeout: Option<Duration>,
    /// The core's seed (epoch, resume tokens, nonces). `None`, the default,
    /// draws it from the operating system; a simulation gives one to be
    /// reproducible. Never reuse a seed across runs in production: a
    /// restarted server must get a new epoch.
    pub seed: Option<[u8; 32]>,
    /// Serve TLS with these settings, over whatever listener is given (see
    /// [`TlsListener`]). Default `None`: plaintext.
    pub tls: Option<rmmap_secure::ServerTls>,
    /// Threads that run store requests. Default 4; 0 runs them one at a
    /// time on the core's task (reproducible, for simulations).
    pub disk_threads: usize,
    /// The etcd connection of a cluster member: required when the
    /// configuration's [`cluster`](rmmap_core::server::ServerConfig::cluster)
    /// is set. Its requests run on the runtime that starts the server.
    /// Default `None`.
    #[cfg(feature = "cluster")]
    pub coordinator: Option<crate::cluster::EtcdCoordinator>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            dedicated_thread: true,
            shutdown_timeout: Duration::from_secs(10),
            max_connections: 4096,
            write_timeout: None,
            seed: None,
            tls: None,
            disk_threads: 4,
            #[cfg(feature = "cluster")]
            coordinator: None,
        }
    }
}

/// Why the server could not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// What the system said.
        source: io::Error,
    },
    /// The export root could not be opened.
    #[error(transparent)]
    Root(#[from] RootError),
    /// The settings do not work together.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The export's run state cannot be read, or is damaged.
    #[error(transparent)]
    RunState(#[from] StartError),
    /// The store failed before the server could start.
    #[error("cannot read the export's run state: {0}")]
    Store(#[from] StoreError),
    /// The configuration makes the server a cluster member, and this
    /// server cannot be one (no etcd connection, or a build without feature
    /// `cluster`).
    #[error("cannot serve as a cluster member: {0}")]
    Cluster(String),
    /// No random seed, or no thread for the core.
    #[error("cannot start the server: {0}")]
    Start(io::Error),
    /// The graceful shutdown did not finish in time: some clients may not
    /// have written back their dirty pages.
    #[error("the graceful shutdown did not finish within {0:?}")]
    ShutdownTimedOut(Duration),
    /// The graceful shutdown finished, but the disk would not take the data
    /// of these files: what was written to them and not synced is lost (the
    /// clients concerned were told).
    #[error("the disk would not take the data of {}", list(.0))]
    Unwritten(Vec<rmmap_core::path::ExportPath>),
    /// The core task ended unexpectedly (it panicked).
    #[error("the server's core task stopped unexpectedly")]
    Crashed,
}

/// `a, b, c` for an error message.
fn list(paths: &[rmmap_core::path::ExportPath]) -> String {
    paths
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A running server. Dropping it starts a graceful shutdown in the
/// background; [`Server::shutdown`] waits for it.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    done: oneshot::Receiver<core_task::Stopped>,
    shutdown_timeout: Duration,
}

impl Server {
    /// Listens on `addr` (`host:port`; port 0 picks a free one) over TCP and
    /// serves the directory `config.root`. Must be called within a Tokio
    /// runtime.
    pub async fn bind(addr: &str, config: ServerConfig) -> Result<Server, ServeError> {
        Self::bind_with(addr, config, ServeOptions::default()).await
    }

    /// Like [`Server::bind`], with options.
    pub async fn bind_with(
        addr: &str,
        config: ServerConfig,
        options: ServeOptions,
    ) -> Result<Server, ServeError> {
        let store = config.open_store()?;
        config.core.validate()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        Self::serve(listener, config.core, store, options)
    }

    /// Serves `store` to connections from any [`Listener`], over TLS when
    /// `options.tls` is set. Must be called within a Tokio runtime: the
    /// connection tasks are spawned on it.
    pub fn serve<L, S>(
        listener: L,
        config: rmmap_core::server::ServerConfig,
        store: S,
        options: ServeOptions,
    ) -> Result<Server, ServeError>
    where
        L: Listener,
        S: Store + Send + Sync + 'static,
    {
        let local_addr = listener.local_addr().map_err(ServeError::Start)?;
        let seed = match options.seed {
            Some(s) => s,
            None => random_seed().map_err(ServeError::Start)?,
        };
        let write_timeout = options.write_timeout.unwrap_or(config.lease);
        let coordinator = coordinator::Coordinator::new(&config, &options)?;
        // Leaving the cluster comes first and may take up to two lease TTLs.
        let shutdown_timeout = options.shutdown_timeout
            + config
                .cluster
                .as_ref()
                .map_or(Duration::ZERO, |c| c.lease_ttl * 2);
        let clock = Clock::new();
        let run_state = store.load_run_state()?;
        let core =
            rmmap_core::server::Server::new(config, seed, clock.now(), run_state.as_deref())?;
        let disk = core_task::Disk::new(store, options.disk_threads).map_err(ServeError::Start)?;
        let (to_core, from_conns) = mpsc::channel(1024);
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let max = options.max_connections;
        let accept = match options.tls {
            Some(tls) => {
                let listener = TlsListener::new(listener, tls).map_err(ServeError::Start)?;
                tokio::spawn(conn::accept_loop(listener, to_core, max, write_timeout))
            }
            None => tokio::spawn(conn::accept_loop(listener, to_core, max, write_timeout)),
        };
        let task = core_task::CoreTask::new(
            core,
            disk,
            coordinator,
            clock,
            from_conns,
            accept.abort_handle(),
            shutdown_timeout,
        );
        let run = task.run(shutdown_rx, done_tx);
        if options.dedicated_thread {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(ServeError::Start)?;
            std::thread::Builder::new()
                .name("rmmap-core".into())
                .spawn(move || rt.block_on(run))
                .map_err(ServeError::Start)?;
        } else {
            tokio::spawn(run);
        }
        tracing::info!(%local_addr, "serving");
        Ok(Server {
            local_addr,
            shutdown: Some(shutdown_tx),
            done: done_rx,
            shutdown_timeout,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Shuts down gracefully: stops accepting, recalls every dirty page,
    /// syncs every file, says goodbye to every client, then stops. A
    /// cluster member first leaves the cluster (hands every shard over);
    /// that may add up to two lease TTLs to
    /// [`ServeOptions::shutdown_timeout`].
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match (&mut self.done).await {
            Ok(s) if !s.clean => Err(ServeError::ShutdownTimedOut(self.shutdown_timeout)),
            Ok(s) if !s.unwritten.is_empty() => Err(ServeError::Unwritten(s.unwritten)),
            Ok(_) => Ok(()),
            Err(_) => Err(ServeError::Crashed),
        }
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), ServeError> {
        signal.await;
        self.shutdown().await
    }
}
