//! The server's event loop: feed the core what the sockets and the clock
//! say, drain it, wait.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use rmmap_core::server::{Server as Core, ServerEvent};
use rmmap_core::store::Store;
use rmmap_store::{DiskPool, StoreResult};

use super::conns::{Conns, conn_of};
use super::{Control, ServeError, ServeOptions, ShutdownHandle};
use crate::clock::{Clock, until};
use crate::wire::Wire;
use rmmap_secure::random_seed;

pub(super) const LISTENER: Token = Token(0);
pub(super) const WAKER: Token = Token(1);
/// Wait this long before accepting again after `accept` failed (typically
/// out of file descriptors), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The server's event loop over one listening socket: runs on the thread
/// that calls [`ServerLoop::run`] until a graceful shutdown completes.
pub struct ServerLoop {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    control: Arc<Control>,
    conns: Conns,
    disk: DiskPool,
    /// Results the disk threads finished, waiting for the loop.
    disk_done: Arc<Mutex<Vec<StoreResult>>>,
    options: ServeOptions,
    /// Accepting waits: for a free connection slot, or for this instant.
    accept_blocked: bool,
    accept_retry_at: Option<std::time::Instant>,
    /// Failed accepts in a row: logged when they start and when they end,
    /// not twenty times a second.
    accept_failures: u64,
    /// The shutdown gives up at this instant.
    shutdown_deadline: Option<std::time::Instant>,
    shutdown_complete: bool,
    /// Files the shutdown could not write.
    unwritten: Vec<rmmap_core::path::ExportPath>,
}

impl std::fmt::Debug for ServerLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerLoop")
            .field("local_addr", &self.local_addr)
            .field("shutting_down", &self.shutdown_deadline.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerLoop {
    /// Listens on `addr` (`host:port`; port 0 picks a free one) to serve
    /// the directory `config.root`.
    pub fn bind(
        addr: &str,
        config: rmmap_store::ServerConfig,
        options: ServeOptions,
    ) -> Result<Self, ServeError> {
        let store = config.open_store()?;
        config.core.validate()?;
        let bind_err = |source| ServeError::Bind {
            addr: addr.to_owned(),
            source,
        };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        Self::new(listener, config.core, store, options)
    }

    /// Serves `store` to connections on `listener` (made non-blocking here).
    pub fn new<S: Store + Send + Sync + 'static>(
        listener: std::net::TcpListener,
        config: rmmap_core::server::ServerConfig,
        store: S,
        options: ServeOptions,
    ) -> Result<Self, ServeError> {
        if config.cluster.is_some() {
            return Err(ServeError::ClusterUnsupported);
        }
        listener.set_nonblocking(true).map_err(ServeError::Start)?;
        let local_addr = listener.local_addr().map_err(ServeError::Start)?;
        let seed = match options.seed {
            Some(s) => s,
            None => random_seed().map_err(ServeError::Start)?,
        };
        let write_timeout = options.write_timeout.unwrap_or(config.lease);
        let clock = Clock::new();
        let run_state = store.load_run_state()?;
        let core = Core::new(config, seed, clock.now(), run_state.as_deref())?;
        let poll = Poll::new().map_err(ServeError::Start)?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(ServeError::Start)?;
        let waker = mio::Waker::new(poll.registry(), WAKER).map_err(ServeError::Start)?;
        let registry = poll.registry().try_clone().map_err(ServeError::Start)?;
        let control = Arc::new(Control::new(waker));
        let disk_done = Arc::new(Mutex::new(Vec::new()));
        let (done, wake) = (disk_done.clone(), control.clone());
        let disk = DiskPool::new(Arc::new(store), options.disk_threads, move |r| {
            done.lock().unwrap_or_else(|e| e.into_inner()).push(r);
            wake.wake();
        })
        .map_err(ServeError::Start)?;
        Ok(ServerLoop {
            poll,
            listener: Some(listener),
            local_addr,
            control,
            conns: Conns::new(core, clock, registry, write_timeout),
            disk,
            disk_done,
            options,
            accept_blocked: false,
            accept_retry_at: None,
            accept_failures: 0,
            shutdown_deadline: None,
            shutdown_complete: false,
            unwritten: Vec::new(),
        })
    }

    /// The address the loop listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that starts the graceful shutdown from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle::new(self.control.clone())
    }

    /// Serves until a graceful shutdown completes (`Ok`) or times out.
    pub fn run(mut self) -> Result<(), ServeError> {
        let mut events = Events::with_capacity(1024);
        loop {
            self.drain_events();
            if self.shutdown_deadline.is_some() && self.shutdown_complete && self.conns.is_empty() {
                return self.stopped();
            }
            let timeout = if self.conns.has_unread() {
                Some(Duration::ZERO)
            } else {
                until(self.next_deadline())
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(ServeError::Poll(e));
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    t => self.conns.handle_event(conn_of(t), ev),
                }
            }
            let finished =
                std::mem::take(&mut *self.disk_done.lock().unwrap_or_else(|e| e.into_inner()));
            for (id, result) in finished {
                self.conns.handle_store_done(id, result);
            }
            if self.control.requested() && self.shutdown_deadline.is_none() {
                self.begin_shutdown();
            }
            self.conns.read_unread();
            self.drain_events();
            let now = std::time::Instant::now();
            self.conns.handle_timeout();
            self.conns.expire_stuck(now);
            if self.accept_retry_at.is_some_and(|t| now >= t) {
                self.accept_retry_at = None;
                self.accept();
            }
            if self.accept_blocked && self.conns.len() < self.options.max_connections {
                self.accept();
            }
            if self.shutdown_deadline.is_some_and(|d| now >= d) {
                self.drain_events();
                if self.shutdown_complete && self.conns.is_empty() {
                    return self.stopped();
                }
                tracing::warn!(
                    open = self.conns.len(),
                    complete = self.shutdown_complete,
                    "shutdown timed out"
                );
                return Err(ServeError::ShutdownTimedOut(self.options.shutdown_timeout));
            }
        }
    }

    /// The shutdown completed: fine, unless the disk refused some data.
    fn stopped(&mut self) -> Result<(), ServeError> {
        match std::mem::take(&mut self.unwritten) {
            u if u.is_empty() => Ok(()),
            u => Err(ServeError::Unwritten(u)),
        }
    }

    fn next_deadline(&self) -> Option<std::time::Instant> {
        [
            self.conns.next_deadline(),
            self.accept_retry_at,
            self.shutdown_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn begin_shutdown(&mut self) {
        tracing::info!("shutting down");
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.conns.begin_shutdown();
        self.shutdown_deadline = Some(std::time::Instant::now() + self.options.shutdown_timeout);
    }

    /// Accepts until the listener would block or the connection limit is
    /// reached.
    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            if self.conns.len() >= self.options.max_connections.max(1) {
                self.accept_blocked = true;
                return;
            }
            use std::io::ErrorKind::*;
            match listener.accept() {
                Ok((stream, peer)) => {
                    if self.accept_failures > 0 {
                        tracing::info!(
                            failures = self.accept_failures,
                            "accepting connections again"
                        );
                        self.accept_failures = 0;
                    }
                    let tls = self.options.tls.as_ref().map(|t| &t.config);
                    match Wire::accepted(stream, tls) {
                        Ok(wire) => self.conns.open(wire, peer),
                        Err(e) => tracing::warn!(error = %e, "cannot start TLS on a connection"),
                    }
                }
                Err(e) if e.kind() == WouldBlock => break,
                // Only that connection failed (reset before we took it).
                Err(e) if matches!(e.kind(), Interrupted | ConnectionAborted) => {}
                Err(e) if e.kind() == ConnectionReset => {}
                Err(e) => {
                    if self.accept_failures == 0 {
                        tracing::warn!(error = %e, "accept failed; retrying every {ACCEPT_BACKOFF:?}");
                    }
                    self.accept_failures += 1;
                    self.accept_retry_at = Some(std::time::Instant::now() + ACCEPT_BACKOFF);
                    break;
                }
            }
        }
        self.accept_blocked = false;
    }

    /// Acts on everything the core asks for until it asks for nothing.
    fn drain_events(&mut self) {
        while let Some(ev) = self.conns.poll_event() {
            match ev {
                ServerEvent::Transmit(conn) => self.conns.flush(conn),
                ServerEvent::Close(conn) => self.conns.close(conn),
                ServerEvent::SessionStarted { session, client } => {
                    tracing::info!(?session, %client, "session started");
                }
                ServerEvent::SessionEnded { session, reason } => {
                    tracing::info!(?session, %reason, "session ended");
                }
                ServerEvent::Store(req) => {
                    if let Some((id, result)) = self.disk.run_or_submit(req) {
                        self.conns.handle_store_done(id, result);
                    }
                }
                ServerEvent::DiskTrouble { path, error } => {
                    tracing::warn!(path = ?path, %error, "the disk failed; the data is kept in memory and written again");
                }
                ServerEvent::ShutdownComplete { unwritten } => {
                    if unwritten.is_empty() {
                        tracing::info!(
                            "every dirty page recalled, every file synced, every client told"
                        );
                    } else {
                        tracing::error!(files = ?unwritten, "shutdown: the disk would not take the data of these files; their unsynced writes are lost (their clients were told)");
                    }
                    self.unwritten = unwritten;
                    self.shutdown_complete = true;
                }
                // Only a cluster member emits these, and `ServerLoop::new`
                // refuses to be one.
                ServerEvent::Coordinate { .. } | ServerEvent::Cluster(_) => {
                    tracing::error!("a cluster event in a server that is no cluster member");
                }
                _ => {}
            }
        }
    }
}

/// Keeps the compiler honest about the loop crossing threads.
#[allow(dead_code)]
fn assert_send() {
    fn is_send<T: Send>() {}
    is_send::<ServerLoop>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_do_not_collide() {
        assert_ne!(LISTENER, WAKER);
        assert!(conn_of(super::super::conns::token_of(rmmap_core::server::ConnId(1))).0 == 1);
        assert!(super::super::conns::token_of(rmmap_core::server::ConnId(1)).0 > WAKER.0);
    }
}
