//! The fault thread of a memory mapping: reads userfaultfd events and turns
//! each into [`memory_fault`](rmmap_core::client::Client::memory_fault) on
//! the core, under the client's lock.
//!
//! It never installs a page itself: the core does, in protocol order, from
//! whichever thread holds the lock (this one, when the page is already
//! cached or held; the driver, when it arrives). Installing or unprotecting
//! the page wakes the faulting thread.
//!
//! The driver is woken at once when the fault queued a request; a fault
//! resolved on the spot (a cached page, a write to a page held exclusively)
//! needs no network, so the driver, which routes completions, is woken at
//! most once per [`COLLECT`] for all of them. Completions come back to this
//! thread through a waker on an eventfd: success wakes the page once more
//! (a harmless retry if it is there already), failure sends SIGBUS to the
//! faulting thread. A failed fault never leaves a thread waiting, and
//! neither does a runtime that shuts down.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rmmap_core::client::{Completion, OpError, Pending};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::FaultMode;
use super::backing::MemoryState;
use super::uffd::{EventFd, Fault, PAGEFAULT_FLAG_WRITE, send_sigbus};
use crate::client::{Mapping, MappingInner, Shared};

/// Longest a fault resolved without the network waits for the driver to
/// collect its completion.
const COLLECT: Duration = Duration::from_millis(1);

/// While faults wait, how often the fault thread checks that the client's
/// driver still runs.
const PROBE: Duration = Duration::from_secs(1);

/// How long a driver that was woken may go without a turn, while faults
/// wait for it, before they fail: every worker of the runtime is then
/// taken (most likely blocked in faults of memory touched from async code),
/// and nothing else would ever serve them.
const STALLED: Duration = Duration::from_secs(5);

/// What faults that waited on a driver that could not run fail with.
const DRIVER_STALLED: &str = "the client's runtime has not run its driver for 5 s while threads \
    waited in faults of a memory mapping: every Tokio worker may be blocked in such a fault; \
    touch mapped memory from spawn_blocking or other threads, or use load/store, which step off \
    the worker";

/// Tells a driver that cannot run from one that waits for the network.
#[derive(Default)]
struct Watchdog {
    /// The driver's turns when last looked at.
    seen: u64,
    /// When the driver was woken without having turned since.
    woken: Option<Instant>,
}

impl Watchdog {
    /// Whether the driver has been stalled for [`STALLED`] while faults
    /// wait (`waiting`): it was woken that long ago and has not turned.
    fn stalled(&mut self, shared: &Shared, waiting: bool) -> bool {
        let turns = shared.turns();
        if !waiting || turns != self.seen {
            *self = Watchdog {
                seen: turns,
                woken: None,
            };
            return false;
        }
        match self.woken {
            None => {
                self.woken = Some(Instant::now());
                shared.wake_driver();
                false
            }
            Some(t) => t.elapsed() >= STALLED,
        }
    }
}

/// What a fault thread works with.
pub(crate) struct FaultContext {
    /// The mapping, on the member that serves its file now (a cluster
    /// client's moves there with its memory).
    pub(crate) mapping: Mapping,
    pub(crate) state: Arc<MemoryState>,
    pub(crate) runtime: tokio::runtime::Handle,
}

impl FaultContext {
    /// The client state of the connection the mapping is on now.
    fn shared(&self) -> Arc<Shared> {
        self.mapping.current().client.shared().clone()
    }
}

/// The running fault thread; stopped and joined on drop.
pub(crate) struct FaultThread {
    wake: Arc<Wakeup>,
    sentinel: AbortHandle,
    join: Option<JoinHandle<()>>,
}

/// How others wake the fault thread.
struct Wakeup {
    /// Stop now.
    stop: EventFd,
    /// A completion arrived, or the runtime went away.
    done: EventFd,
    /// The client's runtime shut down: its driver is gone.
    runtime_gone: AtomicBool,
}

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.done.signal();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.done.signal();
    }
}

/// Dropped with the runtime's tasks when the runtime shuts down.
struct RuntimeGuard(Arc<Wakeup>);

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        self.0.runtime_gone.store(true, Ordering::Release);
        self.0.done.signal();
    }
}

impl FaultThread {
    pub(crate) fn start(ctx: FaultContext) -> std::io::Result<FaultThread> {
        let wake = Arc::new(Wakeup {
            stop: EventFd::new()?,
            done: EventFd::new()?,
            runtime_gone: AtomicBool::new(false),
        });
        let guard = RuntimeGuard(wake.clone());
        let sentinel = ctx
            .runtime
            .spawn(async move {
                let _guard = guard;
                std::future::pending::<()>().await
            })
            .abort_handle();
        let w = wake.clone();
        let join = std::thread::Builder::new()
            .name(format!("rmmap-fault-{}", ctx.mapping.id().0))
            .spawn(move || run(&ctx, &w))?;
        Ok(FaultThread {
            wake,
            sentinel,
            join: Some(join),
        })
    }
}

impl Drop for FaultThread {
    fn drop(&mut self) {
        self.wake.stop.signal();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
        self.sentinel.abort();
    }
}

/// A fault handed to the core, waiting for its completion.
struct Outstanding {
    pending: Pending<()>,
    rx: oneshot::Receiver<Result<Completion, OpError>>,
    fault: Fault,
    index: u64,
    /// The mapping it was handed to (on that member).
    at: Arc<MappingInner>,
}

/// A fault of a mapping that follows its file, failed on one member,
/// waiting for the mapping to move (or to be told it stays).
struct Moving {
    rx: oneshot::Receiver<Result<(), OpError>>,
    fault: Fault,
    index: u64,
}

/// Faults that failed and what became of them.
#[derive(Default)]
struct Failed {
    moving: Vec<Moving>,
}

impl Failed {
    /// A fault on `at` failed with `error`: delivered, or, for a mapping
    /// that follows its file, first handed to the cluster client, which
    /// moves the mapping if its member let the file go (and says once
    /// what it lost there) and lets the fault run again.
    fn fault_failed(
        &mut self,
        ctx: &FaultContext,
        fault: Fault,
        index: u64,
        at: Arc<MappingInner>,
        error: OpError,
    ) {
        if !ctx.mapping.follows_file() {
            return deliver(ctx, fault, index, error);
        }
        let (tx, rx) = oneshot::channel();
        let mapping = ctx.mapping.clone();
        ctx.runtime.spawn(async move {
            let _ = tx.send(mapping.after_fault(&at, error).await);
        });
        self.moving.push(Moving { rx, fault, index });
    }
}

fn run(ctx: &FaultContext, wake: &Arc<Wakeup>) {
    // Tokio's clock reads the same from this thread.
    let _enter = ctx.runtime.enter();
    let waker = Waker::from(wake.clone());
    let mut buf = vec![0u8; 32 * 64];
    let mut outstanding: Vec<Outstanding> = Vec::new();
    let mut failed = Failed::default();
    // Faults to hand to the core (again, after a move) on the next turn.
    let mut again: Vec<Fault> = Vec::new();
    // Since when faults resolved without waking the driver wait for it.
    let mut uncollected: Option<Instant> = None;
    let mut watchdog = Watchdog::default();
    loop {
        let timeout = match uncollected.map(|t| COLLECT.saturating_sub(t.elapsed())) {
            _ if !again.is_empty() => Some(Duration::ZERO),
            None if !outstanding.is_empty() => Some(PROBE),
            t => t,
        };
        let woke = match ctx.state.region.wait(&wake.stop, &wake.done, timeout) {
            Ok(w) => w,
            Err(e) => {
                // Nothing can resolve faults any more: fail the mapping so
                // that no access waits forever.
                tracing::error!(error = %e, "memory mapping fault thread stopped");
                fail_mapping(ctx, format!("its fault thread stopped: {e}"));
                return;
            }
        };
        if woke.stop {
            return;
        }
        if woke.done {
            wake.done.drain();
        }
        if woke.faults {
            match ctx.state.region.read_faults(&mut buf) {
                Ok(faults) => again.extend(faults),
                Err(e) => {
                    tracing::error!(error = %e, "reading userfaultfd events");
                    fail_mapping(ctx, format!("reading its faults failed: {e}"));
                    return;
                }
            }
        }
        for f in std::mem::take(&mut again) {
            if let Some((o, needs_driver)) = on_fault(ctx, wake, f, &mut failed) {
                if needs_driver {
                    // Its turn routes every completion queued.
                    o.at.client.shared().wake_driver();
                    uncollected = None;
                } else {
                    uncollected.get_or_insert_with(Instant::now);
                }
                outstanding.push(o);
            }
        }
        if uncollected.is_some_and(|t| t.elapsed() >= COLLECT) {
            // Let the driver route the completions of the faults resolved
            // on the spot (and recompute its deadlines).
            ctx.shared().wake_driver();
            uncollected = None;
        }
        let gone = wake.runtime_gone.load(Ordering::Acquire);
        let mut cx = Context::from_waker(&waker);
        let mut done = Vec::new();
        outstanding.retain_mut(|o| match Pin::new(&mut o.rx).poll(&mut cx) {
            Poll::Pending if !gone => true,
            Poll::Pending => {
                let e = OpError::Closed("the client's runtime shut down".into());
                deliver(ctx, o.fault, o.index, e);
                false
            }
            Poll::Ready(r) => {
                let r = r.unwrap_or_else(|_| Err(o.at.client.shared().stopped()));
                if let Err(e) = resolved(ctx, o, r) {
                    done.push((o.fault, o.index, o.at.clone(), e));
                }
                false
            }
        });
        for (fault, index, at, e) in done {
            failed.fault_failed(ctx, fault, index, at, e);
        }
        // Faults that waited for a move: run again (next turn, at once),
        // on the member the mapping is on now, or failed. Polled last, so
        // that every one waiting is woken for.
        failed
            .moving
            .retain_mut(|m| match Pin::new(&mut m.rx).poll(&mut cx) {
                Poll::Pending if !gone => true,
                Poll::Ready(Ok(Ok(()))) => {
                    again.push(m.fault);
                    false
                }
                Poll::Ready(Ok(Err(e))) => {
                    deliver(ctx, m.fault, m.index, e);
                    false
                }
                Poll::Pending | Poll::Ready(Err(_)) => {
                    let e = OpError::Closed("the client's runtime shut down".into());
                    deliver(ctx, m.fault, m.index, e);
                    false
                }
            });
        if watchdog.stalled(&ctx.shared(), !outstanding.is_empty()) {
            tracing::error!("{DRIVER_STALLED}");
            for o in outstanding.drain(..) {
                deliver(ctx, o.fault, o.index, OpError::Unsupported(DRIVER_STALLED));
            }
            watchdog = Watchdog::default();
        }
        if outstanding.is_empty() {
            uncollected = None;
        }
    }
}

/// Hands one fault to the core: the fault waiting for its completion, and
/// whether the driver must be woken now (a request is waiting to go out).
fn on_fault(
    ctx: &FaultContext,
    wake: &Wakeup,
    f: Fault,
    failed: &mut Failed,
) -> Option<(Outstanding, bool)> {
    let region = &ctx.state.region;
    let Some(off) = (f.addr as usize)
        .checked_sub(region.base())
        .filter(|o| *o < region.len())
    else {
        tracing::warn!(addr = f.addr, "a fault outside the memory mapping");
        return None;
    };
    let index = (off / region.page()) as u64;
    let write = f.flags & PAGEFAULT_FLAG_WRITE != 0;
    if wake.runtime_gone.load(Ordering::Acquire) {
        let e = OpError::Closed("the client's runtime shut down".into());
        deliver(ctx, f, index, e);
        return None;
    }
    loop {
        let at = ctx.mapping.current();
        let id = at.mapped.mapping;
        let registered = at
            .client
            .shared()
            .register(|c, now| c.memory_fault(now, id, index, write));
        match registered {
            Ok((pending, rx, needs_driver)) => {
                return Some((
                    Outstanding {
                        pending,
                        rx,
                        fault: f,
                        index,
                        at,
                    },
                    needs_driver,
                ));
            }
            // Too many operations pending: the backlog drains by itself.
            Err(OpError::Busy(_)) => {
                at.client.shared().wake_driver();
                std::thread::sleep(COLLECT);
            }
            Err(e) => {
                failed.fault_failed(ctx, f, index, at, e);
                return None;
            }
        }
    }
}

/// A fault completed (or the driver dropped it when it stopped): the
/// error it failed with, if it did.
fn resolved(
    ctx: &FaultContext,
    o: &Outstanding,
    r: Result<Completion, OpError>,
) -> Result<(), OpError> {
    o.pending.finish(r)?;
    // The core installed or unprotected the page, which woke the thread;
    // waking again covers a page that was already there.
    if !ctx.state.region.failed() {
        let _ = ctx.state.region.wake(Some(o.index));
    }
    // The mapping works again: pages of zeros put in for earlier failed
    // faults leave, so the next access to them fetches.
    if ctx.state.has_filled() {
        let shared = ctx.shared();
        let _lock = shared.lock();
        ctx.state.drop_filled();
    }
    Ok(())
}

fn fail_mapping(ctx: &FaultContext, why: String) {
    // Under the lock, like every call the core makes on the backing.
    let shared = ctx.shared();
    let _lock = shared.lock();
    ctx.state
        .fail(OpError::Closed(format!("the memory mapping broke: {why}")));
}

/// A fault failed. In [`FaultMode::Report`] the thread goes on and the
/// failure is recorded for `MemoryMapping::checked` (see
/// `MemoryState::report`). In [`FaultMode::Signal`] the faulting thread
/// gets SIGBUS: on a failed mapping the kernel raises it (the page is woken
/// into the SIGBUS memory); otherwise it is queued to the thread, which
/// retries the access if its handler returns.
fn deliver(ctx: &FaultContext, f: Fault, index: u64, error: OpError) {
    if ctx.state.mode() == FaultMode::Report {
        tracing::debug!(%error, addr = f.addr, "memory fault failed: reported");
        let shared = ctx.shared();
        let _lock = shared.lock();
        ctx.state.report(index, error);
        return;
    }
    let region = &ctx.state.region;
    if region.failed() {
        let _ = region.wake(Some(index));
        return;
    }
    tracing::warn!(%error, addr = f.addr, tid = f.tid, "memory fault failed: sending SIGBUS");
    ctx.state.set_last_fault_error(error);
    ctx.state.count_failure();
    if let Err(e) = send_sigbus(f.tid, f.addr) {
        // The thread is gone (it was killed while it waited).
        tracing::debug!(error = %e, "cannot signal the faulting thread");
    }
}
