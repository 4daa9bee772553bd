//! The server: one mio event loop on one thread owns the listening socket,
//! every connection and the core.
//!
//! [`ServerLoop`] is the loop itself; run it on a thread of your choosing
//! with [`ServerLoop::run`], or let [`Server::bind`] start a thread for it.
//! [`ShutdownHandle`] asks for a graceful shutdown from any thread (through a
//! [`mio::Waker`]): the loop stops accepting, the core recalls every dirty
//! page and syncs every file, every client gets a `Goodbye`, and the loop
//! returns once every connection is closed, or when
//! [`ServeOptions::shutdown_timeout`] runs out.
//!
//! Hostile peers are bounded by the core (frame limits checked before a
//! body is buffered, a handshake timeout, leases that end silent sessions
//! and close their connections) and by the loop: input is read in bounded
//! chunks and not at all while the core has paused a connection, a peer that
//! takes no bytes for [`ServeOptions::write_timeout`] loses its connection,
//! and a failing `accept` (out of file descriptors) backs off instead of
//! spinning.
//!
//! The core never touches the disk: its store requests run on a
//! [`DiskPool`](rmmap_store::DiskPool) of [`ServeOptions::disk_threads`]
//! threads, which wake the loop through its [`mio::Waker`] when one
//! finishes, so a slow disk never stalls the sockets.

mod conns;
mod event_loop;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rmmap_core::server::{ConfigError, StartError};
use rmmap_core::store::StoreError;
use rmmap_store::RootError;

pub use event_loop::ServerLoop;

/// How the server runs (as opposed to what it serves).
#[derive(Clone, Debug)]
pub struct ServeOptions {
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
    /// draws it from the operating system. Never reuse a seed across runs in
    /// production: a restarted server must get a new epoch.
    pub seed: Option<[u8; 32]>,
    /// Serve TLS with these settings (rustls over the same non-blocking
    /// sockets, in the same loop). Default `None`: plaintext.
    pub tls: Option<rmmap_secure::ServerTls>,
    /// Threads that run store requests. Default 4 (at least one).
    pub disk_threads: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            shutdown_timeout: Duration::from_secs(10),
            max_connections: 4096,
            write_timeout: None,
            seed: None,
            tls: None,
            disk_threads: 4,
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
    /// The configuration makes the server a cluster member: the mio server
    /// cannot be one (the etcd client is Tokio-based); rmmap-tokio's can.
    #[error(
        "the mio server cannot serve as a cluster member (its etcd client needs Tokio): \
         use the Tokio server (rmmap serve --transport tokio)"
    )]
    ClusterUnsupported,
    /// No random seed, no poll instance, or no thread for the loop.
    #[error("cannot start the server: {0}")]
    Start(io::Error),
    /// Waiting for events failed.
    #[error("the server's event loop failed: {0}")]
    Poll(io::Error),
    /// The graceful shutdown did not finish in time: some clients may not
    /// have written back their dirty pages.
    #[error("the graceful shutdown did not finish within {0:?}")]
    ShutdownTimedOut(Duration),
    /// The graceful shutdown finished, but the disk would not take the data
    /// of these files: what was written to them and not synced is lost (the
    /// clients concerned were told).
    #[error("the disk would not take the data of {}", .0.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "))]
    Unwritten(Vec<rmmap_core::path::ExportPath>),
    /// The loop's thread ended unexpectedly (it panicked).
    #[error("the server's event loop stopped unexpectedly")]
    Crashed,
}

/// The shared half of a shutdown request.
#[derive(Debug)]
pub(crate) struct Control {
    requested: AtomicBool,
    waker: mio::Waker,
}

impl Control {
    pub(crate) fn new(waker: mio::Waker) -> Self {
        Control {
            requested: AtomicBool::new(false),
            waker,
        }
    }

    pub(crate) fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Wakes the loop (it then looks at what changed).
    pub(crate) fn wake(&self) {
        // Fails only if the loop's poll is gone, and then it has stopped.
        let _ = self.waker.wake();
    }
}

/// Asks a [`ServerLoop`] to shut down gracefully, from any thread.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    control: Arc<Control>,
}

impl ShutdownHandle {
    pub(crate) fn new(control: Arc<Control>) -> Self {
        ShutdownHandle { control }
    }

    /// Starts the graceful shutdown (once; later calls do nothing more).
    /// Returns at once: [`ServerLoop::run`] returns when it is done.
    pub fn shutdown(&self) {
        self.control.requested.store(true, Ordering::Release);
        // Fails only if the loop's poll is gone, and then it has stopped.
        let _ = self.control.waker.wake();
    }
}

/// A server running its [`ServerLoop`] on a thread of its own. Dropping it
/// starts a graceful shutdown in the background; [`Server::shutdown`]
/// waits for it.
#[derive(Debug)]
pub struct Server {
    local_addr: std::net::SocketAddr,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Server {
    /// Listens on `addr` (`host:port`; port 0 picks a free one) and serves
    /// the directory `config.root` on a new thread.
    pub fn bind(addr: &str, config: rmmap_store::ServerConfig) -> Result<Server, ServeError> {
        Self::bind_with(addr, config, ServeOptions::default())
    }

    /// Like [`Server::bind`], with options.
    pub fn bind_with(
        addr: &str,
        config: rmmap_store::ServerConfig,
        options: ServeOptions,
    ) -> Result<Server, ServeError> {
        Self::spawn(ServerLoop::bind(addr, config, options)?)
    }

    /// Runs `event_loop` on a new thread.
    pub fn spawn(event_loop: ServerLoop) -> Result<Server, ServeError> {
        let local_addr = event_loop.local_addr();
        let handle = event_loop.shutdown_handle();
        let thread = std::thread::Builder::new()
            .name("rmmap-mio-server".into())
            .spawn(move || event_loop.run())
            .map_err(ServeError::Start)?;
        tracing::info!(%local_addr, "serving");
        Ok(Server {
            local_addr,
            handle,
            thread: Some(thread),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    /// A handle that starts the graceful shutdown from anywhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Shuts down gracefully: stops accepting, recalls every dirty page,
    /// syncs every file, says goodbye to every client, then stops. Blocks
    /// until done.
    pub fn shutdown(self) -> Result<(), ServeError> {
        self.handle.shutdown();
        self.join()
    }

    /// Blocks until the loop stops (after a [`ShutdownHandle::shutdown`]).
    pub fn join(mut self) -> Result<(), ServeError> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) | None => Err(ServeError::Crashed),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.handle.shutdown();
        }
    }
}
