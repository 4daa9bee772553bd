//! Faults: partitions that outlive reconnections, and the per-frame hook.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use rmmap_core::Instant;
use rmmap_core::harness::{Cluster, Direction, Hook, Verdict};
use rmmap_core::protocol::Message;

use crate::rng::SimRng;

/// Per-frame fault rates (per mille) and what the hook did.
#[derive(Debug)]
pub(crate) struct FrameFaults {
    rng: SimRng,
    pub(crate) delay_pm: u64,
    pub(crate) duplicate_pm: u64,
    pub(crate) cut_pm: u64,
    /// What the hook did since the last drain, for the trace.
    pub(crate) log: Vec<String>,
    /// Every frame since the last drain (only when `frames_traced`).
    pub(crate) frames: Vec<String>,
    pub(crate) frames_traced: bool,
    pub(crate) delayed: u64,
    pub(crate) duplicated: u64,
    pub(crate) cut: u64,
}

impl FrameFaults {
    pub(crate) fn new(rng: SimRng) -> Rc<RefCell<Self>> {
        Rc::new(RefCell::new(FrameFaults {
            rng,
            delay_pm: 0,
            duplicate_pm: 0,
            cut_pm: 0,
            log: Vec::new(),
            frames: Vec::new(),
            frames_traced: false,
            delayed: 0,
            duplicated: 0,
            cut: 0,
        }))
    }

    fn verdict(&mut self, client: usize, dir: Direction, msg: &Message) -> Verdict {
        if self.frames_traced {
            let mut m = format!("{msg:?}");
            if m.len() > 240 {
                let mut end = 240;
                while !m.is_char_boundary(end) {
                    end -= 1;
                }
                m.truncate(end);
                m.push_str("...");
            }
            self.frames.push(format!("  frame c{client} {dir:?} {m}"));
        }
        if self.delay_pm + self.duplicate_pm + self.cut_pm == 0 {
            return Verdict::Deliver;
        }
        let roll = self.rng.below(1000);
        let v = if roll < self.cut_pm {
            self.cut += 1;
            Verdict::DropAndCut
        } else if roll < self.cut_pm + self.duplicate_pm {
            self.duplicated += 1;
            Verdict::Duplicate
        } else if roll < self.cut_pm + self.duplicate_pm + self.delay_pm {
            self.delayed += 1;
            Verdict::Delay(self.rng.micros(1_000, 300_000))
        } else {
            return Verdict::Deliver;
        };
        self.log
            .push(format!("frame c{client} {dir:?} {} -> {v:?}", msg.name()));
        v
    }

    /// The hook to install in the cluster.
    pub(crate) fn hook(this: &Rc<RefCell<Self>>) -> Hook {
        let me = Rc::clone(this);
        Box::new(move |client, dir, msg| me.borrow_mut().verdict(client, dir, msg))
    }
}

/// A client's partitions, re-applied to every new connection while they last.
#[derive(Clone, Debug, Default)]
pub(crate) struct Partition {
    /// Frames to the client are held until then.
    pub(crate) to_client_until: Option<Instant>,
    /// Frames to the server are held until then.
    pub(crate) to_server_until: Option<Instant>,
    /// Connection attempts fail until then.
    pub(crate) unreachable_until: Option<Instant>,
    /// The client crashed: unreachable for ever.
    pub(crate) crashed: bool,
}

impl Partition {
    /// The next moment one of the partitions ends, after `now`.
    pub(crate) fn next_change(&self, now: Instant) -> Option<Instant> {
        [
            self.to_client_until,
            self.to_server_until,
            self.unreachable_until,
        ]
        .into_iter()
        .flatten()
        .filter(|t| *t > now)
        .min()
    }

    /// Applies the partition to client `i`'s current link at `now`; ended
    /// partitions are dropped.
    pub(crate) fn apply(&mut self, cluster: &mut Cluster, i: usize, now: Instant) {
        let live = |t: &mut Option<Instant>| {
            if t.is_some_and(|u| u <= now) {
                *t = None;
            }
            t.is_some()
        };
        let tc = live(&mut self.to_client_until);
        let ts = live(&mut self.to_server_until);
        let un = live(&mut self.unreachable_until);
        cluster.hold(i, Direction::ToClient, tc);
        cluster.hold(i, Direction::ToServer, ts);
        cluster.nodes[i].unreachable = un || self.crashed;
    }

    /// Lifts every partition except a crash.
    pub(crate) fn clear(&mut self) {
        self.to_client_until = None;
        self.to_server_until = None;
        self.unreachable_until = None;
    }
}

/// A duration for a partition: mostly shorter than the lease, sometimes
/// longer (so the server gives the client's pages away).
pub(crate) fn partition_length(rng: &mut SimRng, lease: Duration) -> Duration {
    match rng.below(10) {
        0..=4 => rng.micros(50_000, (lease.as_micros() as u64 / 2).max(50_001)),
        5..=7 => rng.micros(
            lease.as_micros() as u64 / 2,
            lease.as_micros() as u64 * 3 / 2,
        ),
        _ => rng.micros(
            lease.as_micros() as u64 * 3 / 2,
            lease.as_micros() as u64 * 3,
        ),
    }
}
