//! The simulated disk's faults: slow store requests that finish out of
//! order, and periods when the disk is full or broken, short writes and
//! failing fsyncs, all on the cluster's [`MemStore`].

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use rmmap_core::Instant;
use rmmap_core::harness::DiskHook;
use rmmap_core::store::{DiskFault, MemStore, StoreOp, StoreRequest};

use crate::rng::SimRng;

/// How the disk misbehaves now, and what it did.
#[derive(Debug)]
pub(crate) struct DiskFaults {
    rng: SimRng,
    /// Store requests delayed, per mille.
    pub(crate) slow_pm: u64,
    /// The longest delay, in microseconds.
    pub(crate) slow_max_us: u64,
    /// The disk is full until then.
    full_until: Option<Instant>,
    /// Every request fails with an I/O error until then.
    broken_until: Option<Instant>,
    /// Every store request since the last drain (only when `traced`).
    pub(crate) requests: Vec<String>,
    pub(crate) traced: bool,
    /// Store requests delayed.
    pub(crate) delayed: u64,
}

impl DiskFaults {
    pub(crate) fn new(rng: SimRng) -> Rc<RefCell<Self>> {
        Rc::new(RefCell::new(DiskFaults {
            rng,
            slow_pm: 0,
            slow_max_us: 0,
            full_until: None,
            broken_until: None,
            requests: Vec::new(),
            traced: false,
            delayed: 0,
        }))
    }

    /// How long `req` takes: mostly short delays, some long ones, so that
    /// requests that may run together finish in any order.
    fn delay(&mut self, req: &StoreRequest) -> Duration {
        let d = if self.slow_pm > 0 && self.rng.chance(self.slow_pm) {
            self.delayed += 1;
            if self.rng.chance(850) {
                self.rng.micros(50, 20_000.min(self.slow_max_us))
            } else {
                self.rng.micros(50, self.slow_max_us.max(51))
            }
        } else {
            Duration::ZERO
        };
        if self.traced {
            let mut op = match &req.op {
                StoreOp::Write { file, runs } => format!(
                    "Write {file:?} {:?}",
                    runs.iter().map(|r| (r.offset, r.len())).collect::<Vec<_>>()
                ),
                other => format!("{other:?}"),
            };
            op.truncate(160);
            self.requests
                .push(format!("  store {:?} {op} takes {d:?}", req.id));
        }
        d
    }

    /// The hook to install in the cluster.
    pub(crate) fn hook(this: &Rc<RefCell<Self>>) -> DiskHook {
        let me = Rc::clone(this);
        Box::new(move |req| me.borrow_mut().delay(req))
    }

    /// The disk is full until `until`.
    pub(crate) fn fill(&mut self, store: &MemStore, until: Instant) {
        self.full_until = Some(self.full_until.map_or(until, |u| u.max(until)));
        store.inject(DiskFault::Full);
    }

    /// Every request fails with an I/O error until `until`.
    pub(crate) fn break_down(&mut self, store: &MemStore, until: Instant) {
        self.broken_until = Some(self.broken_until.map_or(until, |u| u.max(until)));
        store.inject(DiskFault::Broken);
    }

    /// The next moment a period of faults ends, after `now`.
    pub(crate) fn next_change(&self, now: Instant) -> Option<Instant> {
        [self.full_until, self.broken_until]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min()
    }

    /// Ends the periods that are over at `now`; says whether one ended.
    pub(crate) fn apply(&mut self, store: &MemStore, now: Instant) -> bool {
        let over = |t: &mut Option<Instant>| {
            let ended = t.is_some_and(|u| u <= now);
            if ended {
                *t = None;
            }
            ended
        };
        let ended = over(&mut self.full_until) | over(&mut self.broken_until);
        if ended {
            self.reinstate(store);
        }
        ended
    }

    /// Heals the store, then puts back the periods still running (a heal
    /// also drops one-shot faults not yet met).
    fn reinstate(&self, store: &MemStore) {
        store.heal();
        if self.full_until.is_some() {
            store.inject(DiskFault::Full);
        }
        if self.broken_until.is_some() {
            store.inject(DiskFault::Broken);
        }
    }

    /// Every fault stops: the disk is healthy and fast from now on.
    pub(crate) fn heal(&mut self, store: &MemStore) {
        self.full_until = None;
        self.broken_until = None;
        self.slow_pm = 0;
        self.reinstate(store);
    }
}
