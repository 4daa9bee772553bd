//! The task that owns the core: it feeds the core what the connection tasks
//! and the disk report and the time, and hands out what the core wants sent
//! and written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rmmap_core::cluster::{CoordResponse, OwnershipEvent};
use rmmap_core::protocol::{FRAME_RESERVE_MAX, Outbox, frame_rest};
use rmmap_core::server::{ConnId, InputStatus, Server, ServerEvent};
use rmmap_core::store::{Store, StoreRequest};
use rmmap_store::{DiskPool, StoreResult};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;

use super::channels::{ReadState, SharedWriter, ToCore, follows};
use super::coordinator::{Answer, Coordinator};
use crate::clock::Clock;

/// A writer gets at most this many bytes per batch; the rest waits in the
/// core's queue, where its output limits count it.
const BATCH_BYTES: usize = 256 * 1024;

struct Slot {
    /// The socket's writing half, for writing without a hand-off.
    direct: SharedWriter,
    writer: mpsc::Sender<Vec<Bytes>>,
    writer_busy: bool,
    ctl: watch::Sender<ReadState>,
    /// Bytes read but not yet taken by the core (a partial frame, or input
    /// held back while paused).
    inbox: BytesMut,
    paused: bool,
    /// The core asked to close: flush, then disconnect.
    closing: bool,
}

/// How the core task stopped.
#[derive(Debug)]
pub(super) struct Stopped {
    /// The graceful shutdown completed in time.
    pub(super) clean: bool,
    /// Files whose data the disk would not take.
    pub(super) unwritten: Vec<rmmap_core::path::ExportPath>,
}

/// Where the core's store requests run.
pub(super) enum Disk<S> {
    /// On the core's own task, one at a time (deterministic: simulations).
    Inline(Arc<S>),
    /// On a pool of threads; results come back on a channel. Small reads
    /// of bytes the operating system has cached run on the core's task
    /// ([`DiskPool::run_or_submit`]), saving two thread hand-overs.
    Pool(DiskPool, mpsc::UnboundedReceiver<StoreResult>),
}

impl<S: Store + Send + Sync + 'static> Disk<S> {
    /// `threads` threads over `store`, or the core's own task for none.
    pub(super) fn new(store: S, threads: usize) -> std::io::Result<Self> {
        let store = Arc::new(store);
        if threads == 0 {
            return Ok(Disk::Inline(store));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let pool = DiskPool::new(store, threads, move |r| {
            // The core task is gone when this fails: nothing to tell.
            let _ = tx.send(r);
        })?;
        Ok(Disk::Pool(pool, rx))
    }
}

impl<S> Disk<S> {
    /// The next result from the pool (never, when requests run inline).
    async fn next_result(&mut self) -> Option<StoreResult> {
        match self {
            Disk::Pool(_, rx) => rx.recv().await,
            Disk::Inline(_) => std::future::pending().await,
        }
    }
}

pub(super) struct CoreTask<S> {
    server: Server,
    disk: Disk<S>,
    coordinator: Coordinator,
    /// The last coordinator answer was a failure (for the log).
    coordinator_failing: bool,
    clock: Clock,
    inbox: mpsc::Receiver<ToCore>,
    accept: AbortHandle,
    conns: BTreeMap<ConnId, Slot>,
    shutdown_timeout: Duration,
    shutdown_complete: bool,
    /// Files the shutdown could not write.
    unwritten: Vec<rmmap_core::path::ExportPath>,
}

impl<S: Store> CoreTask<S> {
    pub(super) fn new(
        server: Server,
        disk: Disk<S>,
        coordinator: Coordinator,
        clock: Clock,
        inbox: mpsc::Receiver<ToCore>,
        accept: AbortHandle,
        shutdown_timeout: Duration,
    ) -> Self {
        CoreTask {
            server,
            disk,
            coordinator,
            coordinator_failing: false,
            clock,
            inbox,
            accept,
            conns: BTreeMap::new(),
            shutdown_timeout,
            shutdown_complete: false,
            unwritten: Vec::new(),
        }
    }

    /// Runs until a graceful shutdown (asked for on `shutdown`, or by
    /// dropping its sender) completes or times out; reports which.
    pub(super) async fn run(
        mut self,
        mut shutdown: oneshot::Receiver<()>,
        done: oneshot::Sender<Stopped>,
    ) {
        let mut deadline: Option<tokio::time::Instant> = None;
        let clean = loop {
            self.drain_events();
            if deadline.is_some() && self.shutdown_complete && self.conns.is_empty() {
                break true;
            }
            let core_timer = self.server.poll_timeout().map(|t| self.clock.deadline(t));
            let timer = match (core_timer, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = async {
                match timer {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };

            // `biased`, so a simulated run replays exactly from its seed
            // (see the client driver): a due timer first (it cannot starve
            // the rest: its deadline moves on), then a shutdown, then input.
            tokio::select! {
                biased;
                _ = sleep => {
                    let now = self.clock.now();
                    self.server.handle_timeout(now);
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        self.drain_events();
                        break self.shutdown_complete && self.conns.is_empty();
                    }
                }
                Some((id, result)) = self.disk.next_result() => {
                    self.server.handle_store_done(self.clock.now(), id, result);
                }
                Some(answer) = self.coordinator.next() => self.on_coordinator(answer),
                _ = &mut shutdown, if deadline.is_none() => deadline = Some(self.begin_shutdown()),
                msg = self.inbox.recv() => match msg {
                    Some(m) => self.on_message(m),
                    // Nobody can reach us any more.
                    None => deadline = deadline.or_else(|| Some(self.begin_shutdown())),
                },
            }
        };
        if !clean {
            tracing::warn!(
                open = self.conns.len(),
                complete = self.shutdown_complete,
                "shutdown timed out"
            );
        }
        self.accept.abort();
        // Dropping the slots closes every remaining connection.
        self.conns.clear();
        let _ = done.send(Stopped {
            clean,
            unwritten: self.unwritten,
        });
    }

    fn on_coordinator(&mut self, answer: Answer) {
        let now = self.clock.now();
        match answer {
            Answer::Response(id, response) => {
                // Logged when it starts and when it ends, not per retry.
                match (&response, self.coordinator_failing) {
                    (CoordResponse::Failed(e), false) => {
                        tracing::warn!(%e, "the cluster's coordinator (etcd) failed; retrying");
                        self.coordinator_failing = true;
                    }
                    (CoordResponse::Failed(_), true) | (_, false) => {}
                    (_, true) => {
                        tracing::info!("the cluster's coordinator (etcd) answers again");
                        self.coordinator_failing = false;
                    }
                }
                self.server.handle_coordinator_response(now, id, response);
            }
            Answer::WatchEvents(id, events) => {
                self.server.handle_coordinator_watch(now, id, &events);
            }
            Answer::WatchEnded(id) => self.server.handle_coordinator_watch_ended(now, id),
        }
    }

    fn begin_shutdown(&mut self) -> tokio::time::Instant {
        tracing::info!("shutting down");
        self.accept.abort();
        self.server.begin_shutdown(self.clock.now());
        tokio::time::Instant::now() + self.shutdown_timeout
    }

    fn on_message(&mut self, msg: ToCore) {
        let now = self.clock.now();
        match msg {
            ToCore::Open {
                direct,
                writer,
                ctl,
                reply,
            } => {
                let conn = self.server.handle_connect(now);
                let slot = Slot {
                    direct,
                    writer,
                    writer_busy: false,
                    ctl,
                    inbox: BytesMut::new(),
                    paused: false,
                    closing: false,
                };
                self.conns.insert(conn, slot);
                if reply.send(conn).is_err() {
                    self.gone(conn);
                }
            }
            ToCore::Input(conn, bytes) => {
                let Some(slot) = self.conns.get_mut(&conn) else {
                    return;
                };
                if slot.inbox.is_empty() {
                    slot.inbox = bytes;
                } else if follows(&slot.inbox, &bytes) {
                    // The next piece of the same allocation: joined in
                    // place.
                    slot.inbox.unsplit(bytes);
                } else {
                    if !slot.paused && !slot.closing {
                        // The rest of the frame at the front (its length
                        // the core has already accepted) in one allocation,
                        // rather than growing chunk by chunk, each growth
                        // copying what came before.
                        let rest = frame_rest(&slot.inbox).min(FRAME_RESERVE_MAX);
                        slot.inbox.reserve(rest.max(bytes.len()));
                    }
                    slot.inbox.extend_from_slice(&bytes);
                }
                if !slot.paused && !slot.closing {
                    self.feed_input(conn);
                }
            }
            ToCore::Drained(conn) => {
                let Some(slot) = self.conns.get_mut(&conn) else {
                    return;
                };
                slot.writer_busy = false;
                self.feed_writer(conn);
                if self.conns.get(&conn).is_some_and(|s| s.paused) {
                    self.feed_input(conn);
                }
            }
            ToCore::Gone(conn) => self.gone(conn),
        }
    }

    /// Gives the core the connection's buffered input and acts on its answer.
    fn feed_input(&mut self, conn: ConnId) {
        let now = self.clock.now();
        let Some(slot) = self.conns.get_mut(&conn) else {
            return;
        };
        let status = self.server.handle_input(now, conn, &mut slot.inbox);
        let state = match status {
            InputStatus::Consumed => ReadState::Reading {
                frame_limit: self.server.frame_limit(conn),
            },
            InputStatus::Paused => ReadState::Paused,
            InputStatus::Closing => ReadState::Closed,
        };
        let paused = status == InputStatus::Paused;
        if paused != slot.paused {
            tracing::debug!(?conn, paused, "input flow");
        }
        slot.paused = paused;
        slot.ctl.send_if_modified(|s| {
            let changed = *s != state;
            *s = state;
            changed
        });
    }

    fn drain_events(&mut self) {
        while let Some(ev) = self.server.poll_event() {
            match ev {
                ServerEvent::Transmit(conn) => self.feed_writer(conn),
                ServerEvent::Close(conn) => match self.conns.get_mut(&conn) {
                    Some(slot) => {
                        slot.closing = true;
                        let _ = slot.ctl.send(ReadState::Closed);
                        self.feed_writer(conn);
                    }
                    None => self.server.handle_disconnect(self.clock.now(), conn),
                },
                ServerEvent::SessionStarted { session, client } => {
                    tracing::info!(?session, %client, "session started");
                }
                ServerEvent::SessionEnded { session, reason } => {
                    tracing::info!(?session, %reason, "session ended");
                }
                ServerEvent::Store(req) => self.run_store(req),
                ServerEvent::Coordinate { id, request } => self.coordinator.start(id, request),
                ServerEvent::Cluster(event) => log_ownership(&event),
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
                _ => {}
            }
        }
    }

    /// Hands a store request to the disk.
    fn run_store(&mut self, req: StoreRequest) {
        match &self.disk {
            Disk::Inline(store) => {
                let result = req.op.execute(&**store);
                self.server
                    .handle_store_done(self.clock.now(), req.id, result);
            }
            Disk::Pool(pool, _) => {
                if let Some((id, result)) = pool.run_or_submit(req) {
                    self.server.handle_store_done(self.clock.now(), id, result);
                }
            }
        }
    }

    /// Writes the connection's queued bytes: itself, as far as the socket
    /// takes them at once, and the rest through the writer task (one batch
    /// at a time, when it is idle); finishes a close once everything is
    /// written.
    fn feed_writer(&mut self, conn: ConnId) {
        let mut wrote_directly = false;
        loop {
            let Some(slot) = self.conns.get_mut(&conn) else {
                // A connection already gone: discard what was queued for it.
                while self.server.poll_transmit(conn).is_some() {}
                return;
            };
            if slot.writer_busy {
                return;
            }
            let mut batch = Vec::new();
            let mut bytes = 0;
            while bytes < BATCH_BYTES {
                let Some(b) = self.server.poll_transmit(conn) else {
                    break;
                };
                bytes += b.len();
                batch.push(b);
            }
            if batch.is_empty() {
                if slot.closing {
                    self.gone(conn);
                } else if wrote_directly && slot.paused {
                    // The core's queue shrank without a `Drained`: it may
                    // take input again.
                    self.feed_input(conn);
                }
                return;
            }
            let rest = match write_now(&slot.direct, batch) {
                Ok(None) => {
                    wrote_directly = true;
                    continue;
                }
                Ok(Some(rest)) => rest,
                Err(()) => return self.gone(conn),
            };
            // Capacity 1 and never more than one batch out: this cannot be full.
            if slot.writer.try_send(rest).is_ok() {
                slot.writer_busy = true;
            } else {
                self.gone(conn);
            }
            return;
        }
    }

    /// Forgets the connection (its tasks end as their channels close) and
    /// tells the core.
    fn gone(&mut self, conn: ConnId) {
        if self.conns.remove(&conn).is_some() {
            self.server.handle_disconnect(self.clock.now(), conn);
        }
    }
}

/// A line in the log for what the shard ownership changed.
fn log_ownership(event: &OwnershipEvent) {
    match event {
        OwnershipEvent::Registered { lease } => {
            tracing::info!(lease = format_args!("{:x}", lease.0), "joined the cluster");
        }
        OwnershipEvent::ShardAcquired { shard, epoch, .. } => {
            tracing::info!(%shard, epoch, "shard acquired");
        }
        OwnershipEvent::WritesAllowed { shard } => {
            tracing::info!(%shard, "shard's takeover grace over: writes allowed");
        }
        OwnershipEvent::DrainShard { shard, epoch } => {
            tracing::info!(%shard, epoch, "draining shard (handing it over)");
        }
        OwnershipEvent::ShardReleased { shard } => tracing::info!(%shard, "shard released"),
        OwnershipEvent::ShardLost {
            shard,
            epoch,
            reason,
        } => tracing::warn!(%shard, epoch, ?reason, "shard lost"),
        OwnershipEvent::Misconfigured { message } => {
            tracing::error!(%message, "cluster misconfigured: serving nothing");
        }
        OwnershipEvent::Left => tracing::info!("left the cluster"),
    }
}

/// Writes as much of `batch` as the socket takes without waiting, from this
/// thread: `Ok(None)` when all of it went out (and was flushed), otherwise
/// what is left for the writer task (possibly nothing but a flush).
/// Called only while the writer task is idle, so nobody else uses the socket
/// and the writer's own waker is not displaced while it waits.
fn write_now(direct: &SharedWriter, batch: Vec<Bytes>) -> Result<Option<Vec<Bytes>>, ()> {
    let Ok(mut w) = direct.try_lock() else {
        return Ok(Some(batch));
    };
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Outbox::from(batch);
    while !out.is_empty() {
        let slices = out.io_slices();
        match w.as_mut().poll_write_vectored(&mut cx, &slices) {
            Poll::Ready(Ok(n)) if n > 0 => out.advance(n),
            Poll::Ready(_) => return Err(()),
            Poll::Pending => return Ok(Some(out.into_chunks())),
        }
    }
    match w.as_mut().poll_flush(&mut cx) {
        Poll::Ready(Ok(())) => Ok(None),
        Poll::Ready(Err(_)) => Err(()),
        // Buffered (TLS): the writer task flushes.
        Poll::Pending => Ok(Some(Vec::new())),
    }
}
