//! The network level: the real `rmmap-tokio` client and server over
//! turmoil's simulated TCP, under a fault schedule, with the history checked
//! by the same checker as the core level.
//!
//! One server host serves a [`MemStore`](rmmap_core::store::MemStore) (shared across its restarts, so a
//! crash loses exactly what was not synced) and N client hosts each run one
//! client process that keeps every file mapped. A controller outside the
//! simulation steps turmoil one tick at a time; between steps it applies the
//! faults that are due (partitions, one-way partitions, holds, flapping
//! links, latency changes, client crashes and reboots, server crashes and
//! reboots, see [`Fault`]) and posts operations to the clients (the same
//! random workload as the core level, or a scenario's script).
//!
//! A run has three phases, as at the core level: faults; liveness (links
//! healed, crashed hosts rebooted, every client connected with every file
//! mapped and nothing pending within [`NetConfig::liveness_bound`]); read-back
//! (every client syncs, then reads every cell). Then the history is checked.
//!
//! # Recording the history of an asynchronous client
//!
//! turmoil runs all hosts on one thread, one after another, and every
//! record goes through one shared lab, so the order of records is a true
//! real-time order of the run. An operation is recorded as invoked just
//! before its future is first polled (a cache hit completes in that poll)
//! and as completed when its task resumes, which can only be later than the
//! real completion: that widens the interval, which is sound. Times are
//! turmoil's simulation time (each host's own `tokio::time::Instant` restarts
//! with the host).
//!
//! Sessions: each boot of a client host is a new logical client (new
//! values, new mappings). Its incarnation is the number of `SessionLost`
//! events seen; its server run is the run it was in when its first
//! handshake completed or a `Connected { resumed: false }` arrived. Events
//! are read from the client's broadcast channel before anything else is
//! recorded for that client, so an event published before a completion is
//! recorded before it.
//!
//! # Determinism
//!
//! Everything derives from the seed: turmoil's generator (latencies),
//! the workload and the fault schedule (the simulator's own generators),
//! and the seeds of rmmap-tokio's client and server cores
//! (`Client::connect_seeded`, `ServeOptions::seed`; a server reboot gets a
//! new seed, hence a new epoch). Two things had to be pinned down: tokio's
//! `select!` starts from a random branch unless `biased` (rmmap-tokio's
//! selects are biased), and a crashing host's runtime drops its tasks in an
//! order that depends on tokio's process-wide task ids, while every dropped
//! stream draws a latency for its FIN from turmoil's generator (so the
//! crashing host's links get one fixed latency while it goes down).
//! `--twice` and `tests/net_determinism.rs` run seeds twice in one process.
//!
//! What the network level does not check: the per-step invariants of the
//! core level (the server's bookkeeping, cross-client caches) need the
//! cores, which `rmmap-tokio` keeps private; the history checks cover what
//! they would show.

mod config;
mod control;
mod faults;
mod hosts;
mod lab;
mod sabotage;
pub mod scenarios;
mod sockets;

use std::time::Duration;

pub use config::{Dir, Fault, NetConfig, Plan, Scenario, ScriptOp};
pub use control::run_net_seed;

use crate::checker::Violation;
use crate::history::History;

/// What happened in a network-level run, in numbers.
#[derive(Clone, Debug, Default)]
pub struct NetStats {
    /// Operations invoked.
    pub ops: u64,
    /// Two-way partitions (flaps count each time the link goes down).
    pub partitions: u64,
    /// One-way partitions.
    pub one_way: u64,
    /// Holds.
    pub holds: u64,
    /// Link faults longer than the lease.
    pub long_faults: u64,
    /// Latency changes.
    pub latency_changes: u64,
    /// Client host crashes.
    pub client_crashes: u64,
    /// Of those, crashes of a client with writes it had not synced (dirty
    /// pages, unless a recall had written them back).
    pub crashes_with_unsynced_writes: u64,
    /// Server host restarts.
    pub server_restarts: u64,
    /// Of those, restarts where the store lost what was not synced.
    pub store_crashes: u64,
    /// `SessionLost` events.
    pub sessions_lost: u64,
    /// Completed handshakes.
    pub connects: u64,
    /// First connections of a client process whose connection opened but
    /// whose handshake failed (cut by a fault, then timed out).
    pub handshakes_cut: u64,
    /// How long the clients took to settle once the faults stopped (all
    /// connected, every file mapped, nothing pending); over many runs, the
    /// longest.
    pub settle: Duration,
    /// turmoil steps.
    pub steps: u64,
    /// Virtual time simulated.
    pub virtual_time: Duration,
}

impl NetStats {
    /// Faults applied, of every kind.
    pub fn faults(&self) -> u64 {
        self.partitions
            + self.one_way
            + self.holds
            + self.latency_changes
            + self.client_crashes
            + self.server_restarts
    }

    /// Adds another run's counts.
    pub fn add(&mut self, o: &NetStats) {
        self.ops += o.ops;
        self.partitions += o.partitions;
        self.one_way += o.one_way;
        self.holds += o.holds;
        self.long_faults += o.long_faults;
        self.latency_changes += o.latency_changes;
        self.client_crashes += o.client_crashes;
        self.crashes_with_unsynced_writes += o.crashes_with_unsynced_writes;
        self.server_restarts += o.server_restarts;
        self.store_crashes += o.store_crashes;
        self.sessions_lost += o.sessions_lost;
        self.connects += o.connects;
        self.handshakes_cut += o.handshakes_cut;
        self.settle = self.settle.max(o.settle);
        self.steps += o.steps;
        self.virtual_time += o.virtual_time;
    }
}

/// The result of one network-level seed.
#[derive(Clone, Debug)]
pub struct NetReport {
    /// The seed.
    pub seed: u64,
    /// Everything found (empty: the run is consistent and settled).
    pub violations: Vec<Violation>,
    /// Operation outcomes the checker looked at.
    pub ops_checked: u64,
    /// Hash of the trace: equal for equal seeds.
    pub trace_hash: u64,
    /// The trace text (when [`NetConfig::keep_trace`]).
    pub trace: Vec<String>,
    /// The history.
    pub history: History,
    /// Scenario operation → its history id (`None`: it was not run).
    pub scripted: Vec<Option<usize>>,
    /// Counts.
    pub stats: NetStats,
}

/// Runs a seed, catching panics (of the simulation or of rmmap) as a
/// violation.
pub fn run_net_seed_guarded(seed: u64, cfg: &NetConfig) -> NetReport {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_net_seed(seed, cfg))) {
        Ok(r) => r,
        Err(p) => {
            let msg = crate::panic_message(p.as_ref());
            NetReport {
                seed,
                violations: vec![Violation::new("panic", None, msg, Vec::new())],
                ops_checked: 0,
                trace_hash: 0,
                trace: Vec::new(),
                history: History::default(),
                scripted: Vec::new(),
                stats: NetStats::default(),
            }
        }
    }
}

/// The command that replays a network-level seed.
pub fn net_replay_command(seed: u64, cfg: &NetConfig) -> String {
    let mut s = format!("cargo run -p rmmap-sim --release -- --net --seed {seed}");
    match &cfg.plan {
        Plan::Scenario(sc) => s.push_str(&format!(" --scenario {}", sc.name)),
        Plan::Random => {
            if cfg.clients != NetConfig::default().clients {
                s.push_str(&format!(" --clients {}", cfg.clients));
            }
        }
    }
    let d = NetConfig::default();
    if cfg.op_rate != d.op_rate {
        s.push_str(&format!(" --op-rate {}", cfg.op_rate));
    }
    if cfg.fault_time != d.fault_time && matches!(cfg.plan, Plan::Random) {
        s.push_str(&format!(" --fault-secs {}", cfg.fault_time.as_secs()));
    }
    if cfg.lying_disk_from.is_some() {
        s.push_str(" --lying-disk");
    }
    s
}
