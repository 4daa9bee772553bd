//! The cluster level: shard ownership under faults (docs/CLUSTER.md).
//!
//! [`run_cluster_seed`] runs the ownership machines
//! ([`rmmap_core::cluster::ShardOwnership`]) of a few members against the
//! in-memory coordinator with etcd's semantics
//! ([`rmmap_core::cluster::mem::MemCoordinator`]), as a discrete-event
//! simulation in real (virtual) time. The coordinator's clock is real time;
//! every member has its own clock, with its own offset and a rate drawn
//! inside the drift bound the design assumes (`ρ`, 1%), and the machine only
//! ever sees that clock.
//!
//! Everything derives from the seed: request and answer latencies (some
//! long), and a fault schedule of member kills (the process vanishes; a new
//! incarnation with the same id starts later), member–coordinator partitions
//! (requests and answers lost, the watch stream broken; a third of them
//! longer than the lease), planned leaves (SIGTERM: drain, release, revoke;
//! the member comes back later) and latency spikes. A member's server is
//! modelled by what the ownership machine asks of it: it stops serving a
//! shard at once on `ShardLost`, and answers `DrainShard` after a random
//! drain time.
//!
//! # What is checked
//!
//! A member *serves* a shard from the first instant its machine answers
//! `Local` for it until the earliest of: the real instant its own clock
//! reaches the `serve_until` it was promised, the instant the machine stops
//! answering `Local` (a loss, a drain reported done), its death.
//!
//! * **exclusive** (`cluster-overlap`): no two members (or incarnations)
//!   serve a shard at the same real instant;
//! * **grace** (`cluster-grace`): when a shard changes hands without a clean
//!   handover (the previous owner did not finish a drain), the new owner's
//!   write ownership starts at least one client lease after the previous
//!   owner stopped serving, so that no client of the old owner still trusts
//!   its cache;
//! * **liveness** (`cluster-liveness`): once faults stop and every member is
//!   back, every shard is served by exactly one member within the bound.
//!
//! With `bug` set, member 0 keeps serving after its lease is lost
//! ([`OwnershipBug::ServeAfterLeaseLoss`](rmmap_core::cluster::OwnershipBug));
//! the exclusive check must catch it.

mod claims;
mod world;

use std::time::Duration;

use crate::checker::Violation;

pub use world::run_cluster_seed;

/// A deliberate bug of the ownership machine (feature `bug-injection`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ClusterBug {
    /// Member 0 keeps serving after its serving window closed.
    ServeAfterLeaseLoss,
}

/// The parameters of a cluster run.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Members.
    pub members: usize,
    /// Shards.
    pub shards: u32,
    /// The members' etcd lease TTL.
    pub lease_ttl: Duration,
    /// The safety margin.
    pub safety_margin: Duration,
    /// The drift bound the members assume, in ppm.
    pub drift_ppm: u32,
    /// How far member clocks actually drift, in ppm (each member's rate is
    /// drawn in `±clock_drift_ppm`); within `drift_ppm` unless a test breaks
    /// the assumption on purpose.
    pub clock_drift_ppm: u32,
    /// The servers' client lease (the takeover grace derives from it).
    pub client_lease: Duration,
    /// How long the fault schedule runs.
    pub fault_time: Duration,
    /// Every shard must have one owner this long after faults stop.
    pub liveness_bound: Duration,
    /// An adapter answers `Failed` when a request has had no answer this long.
    pub request_timeout: Duration,
    /// Keep the trace's text.
    pub keep_trace: bool,
    /// A deliberate bug.
    pub bug: Option<ClusterBug>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            members: 3,
            shards: 8,
            lease_ttl: Duration::from_secs(2),
            safety_margin: Duration::from_millis(400),
            drift_ppm: 10_000,
            clock_drift_ppm: 10_000,
            client_lease: Duration::from_millis(1500),
            fault_time: Duration::from_secs(60),
            liveness_bound: Duration::from_secs(30),
            request_timeout: Duration::from_secs(1),
            keep_trace: false,
            bug: None,
        }
    }
}

/// Counts of what a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Members killed.
    pub kills: u64,
    /// Member–coordinator partitions.
    pub partitions: u64,
    /// Partitions longer than the lease TTL.
    pub long_partitions: u64,
    /// Planned leaves.
    pub leaves: u64,
    /// Shards acquired after a grace (the key was absent).
    pub takeovers: u64,
    /// Shards acquired from a clean handover.
    pub clean_handovers: u64,
    /// Shards lost because the serving window closed.
    pub windows_closed: u64,
    /// Coordinator requests sent.
    pub requests: u64,
    /// Virtual time simulated.
    pub virtual_time: Duration,
}

impl ClusterStats {
    /// Adds another run's counts.
    pub fn add(&mut self, o: &ClusterStats) {
        self.kills += o.kills;
        self.partitions += o.partitions;
        self.long_partitions += o.long_partitions;
        self.leaves += o.leaves;
        self.takeovers += o.takeovers;
        self.clean_handovers += o.clean_handovers;
        self.windows_closed += o.windows_closed;
        self.requests += o.requests;
        self.virtual_time += o.virtual_time;
    }
}

/// What one cluster seed found.
#[derive(Clone, Debug)]
pub struct ClusterReport {
    /// The seed.
    pub seed: u64,
    /// What failed.
    pub violations: Vec<Violation>,
    /// Serving intervals checked.
    pub claims: u64,
    /// The trace hash (same seed, same hash).
    pub trace_hash: u64,
    /// The trace, when kept.
    pub trace: Vec<String>,
    /// Counts.
    pub stats: ClusterStats,
}

/// Runs a seed, catching a panic as a violation.
pub fn run_cluster_seed_guarded(seed: u64, cfg: &ClusterConfig) -> ClusterReport {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_cluster_seed(seed, cfg))) {
        Ok(r) => r,
        Err(p) => ClusterReport {
            seed,
            violations: vec![Violation::new(
                "panic",
                None,
                crate::panic_message(p.as_ref()),
                Vec::new(),
            )],
            claims: 0,
            trace_hash: 0,
            trace: Vec::new(),
            stats: ClusterStats::default(),
        },
    }
}

/// The command that replays a cluster seed.
pub fn cluster_replay_command(seed: u64, cfg: &ClusterConfig) -> String {
    match cfg.bug {
        None => format!("cargo run -p rmmap-sim --release -- --cluster --seed {seed}"),
        Some(ClusterBug::ServeAfterLeaseLoss) => format!(
            "cargo run -p rmmap-sim --release --features bug-injection -- --cluster --seed {seed} \
             --bug serve-after-lease-loss"
        ),
    }
}
