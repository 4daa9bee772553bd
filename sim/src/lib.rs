//! rmmap-sim: deterministic simulation of rmmap, and a checker for what it
//! promises.
//!
//! # The core level
//!
//! [`run_seed`] drives one server and N clients of `rmmap-core` through the
//! in-memory cluster harness (`rmmap_core::harness::Cluster`), which runs
//! them through the same drive loop as the adapters, in virtual time.
//! Everything derives from one `u64` seed: which operation each client
//! issues (reads, writes — some crossing a page boundary, some covering a
//! whole page — syncs, atomic swaps and compare-exchanges on a few cells of
//! two small files), which connection is cut, which direction of which link
//! is held (one-way partitions, some longer than the lease, re-applied to
//! every new connection while they last), unreachable periods, link latency
//! changes, per-frame delays, duplicates and drops, server restarts (with and
//! without losing unsynced data) and client crashes (a client vanishes with
//! whatever dirty pages it has), and how far virtual time advances. The
//! lease is short (1.5 s) so leases run out within a run.
//!
//! After the fault phase, faults stop and every live client must reconnect
//! and finish every pending operation within a bound (liveness). Then every
//! live client syncs and reads every cell, and the history is checked.
//!
//! # The network level
//!
//! [`net::run_net_seed`] runs the real `rmmap-tokio` client and server over
//! turmoil's simulated TCP: one server host over a
//! [`MemStore`](rmmap_core::store::MemStore) that survives its restarts
//! (losing what was not synced when the restart is a power loss), and
//! client hosts that keep their files mapped and run the operations a
//! controller posts. Between turmoil steps the controller applies a fault
//! schedule — random, or a scripted [`net::scenarios`] — of partitions,
//! one-way partitions (requests get through, invalidations do not), holds,
//! flapping links, latency changes, client crashes (with dirty pages) and
//! reboots, and server crashes and reboots. Everything derives from the
//! seed: turmoil's generator, the workload, the fault schedule and the
//! seeds of the rmmap cores. The history is recorded from the asynchronous
//! client (see [`net`]) and checked by the same checker; the same liveness
//! and read-back phases follow the faults. The per-step invariants of the
//! core level need the cores, which `rmmap-tokio` keeps private, so the
//! network level relies on the history checks alone.
//!
//! # The cluster level
//!
//! [`cluster::run_cluster_seed`] runs the shard-ownership machines of a few
//! cluster members against an in-memory etcd, with member kills,
//! member–coordinator partitions, planned leaves, slow links and drifting
//! clocks, and checks that no two members serve a shard at the same instant
//! and that a takeover waits out the grace (see [`cluster`]).
//!
//! # The consistency model checked
//!
//! Every written 8-byte word is unique ([`history::encode_value`]), so a
//! read names the write it saw. The history is projected onto *cells* (the
//! words the workload uses) and cut into *segments* at server restarts.
//! Real-time order is a single sequence over every invocation and
//! completion.
//!
//! Outcomes: a read or write that completed without error is **ok**; a write
//! or atomic that failed (any error: `OutcomeUnknown`, `SessionLost`,
//! `Disconnected`, `MappingClosed`, ...) or never completed is **unknown** —
//! it may or may not have taken effect, at most once, at any point after its
//! invocation. Failed reads carry no information and are ignored.
//!
//! Writes that may vanish: a write completes in the client's cache. It may
//! later be lost in exactly these ways, which the model allows:
//! * **session loss**: the client's session ended while the write's page
//!   was dirty; allowed only when the client was told (a `SessionLost` event
//!   naming the write's mapping — for a loss found at a restart the session
//!   may have expired before it, so any reason counts), or the client
//!   crashed. A write belongs to the incarnation (session) it *completed*
//!   in: one invoked before a loss may finish on the next session. Such a
//!   write is *possibly lost* unless a sync of the same file by the same
//!   client, invoked and completed in that incarnation after the write,
//!   completed OK before the loss. A possibly-lost write is optional in the
//!   linearization; reads by the same client in the same incarnation that
//!   returned its value saw the client's private cache and are left out of
//!   the linearizability check (they still count for read-your-writes). The
//!   same holds for a read of the client's own *failed* write (applied in
//!   part) when the read's incarnation was lost naming its mapping;
//! * **server restart**: each operation belongs to the server run its
//!   client's session was made in (a client that has not noticed a restart
//!   still serves its cache in the old run); the cells start the next run
//!   with what the disk holds after the restart (read from the store).
//!
//! The checks, per (cell, segment):
//! * **linearizability** ([`checker::linear`]): a Wing-Gong/Lowe search with
//!   memoization for an order of the ok operations (plus any subset of the
//!   unknown and possibly-lost ones) that respects real time and register
//!   semantics (write, read, swap returning the previous value,
//!   compare-exchange returning the previous value and whether it applied),
//!   starting from the segment's initial value. An operation that straddles
//!   a restart counts as unknown in each segment it touches, except an ok
//!   atomic, which ran at the server of the segment it completed in. P-
//!   compositionality makes per-cell checks sound for the per-page
//!   guarantee;
//! * **read-your-writes**: a client's read that begins after its own ok
//!   write completed (across reconnections, and within the incarnation for a
//!   possibly-lost write) never returns a value whose write completed before
//!   that write began;
//! * **monotonic reads** (per client) and **stale reads** (across clients):
//!   after a read saw the value of write W, no read that begins later returns
//!   a value whose write completed before W began (a value that was
//!   overwritten never comes back: no write is applied twice);
//! * **phantom values**: every value read was written, before the read
//!   ended.
//!
//! At every restart, per cell, with `d` the value on disk afterwards:
//! * **durability**: no ok write (or atomic) that was followed by an ok sync
//!   of its file by the same client in the same incarnation, completed before
//!   the restart, is older-than-`d`-lost: `d` is never a value whose write
//!   completed before that write began;
//! * **no silent loss**: an ok write of the segment that ended, whose value
//!   was lost this way, belongs to a client that was told: a `SessionLost`
//!   event naming its mapping, an operation on the mapping failing with
//!   `session_lost`, or the client crashed.
//!
//! After every step: the server's `check_invariants()` (one owner or many
//! sharers per page, bookkeeping agrees), and across client caches
//! (`Client::cached_page_view`): no page is held exclusively by one client
//! while another client that still trusts its lease (`lease_valid_at`)
//! holds a readable copy, and no two clients hold it exclusively. Across
//! server runs (a client has not noticed a restart yet) only a newer run's
//! owner beside an older run's trusted copy counts (`old-run-cache`); an
//! old-run owner beside a new-run reader is allowed, because whatever it
//! writes after the restart is reported lost to it.
//!
//! Liveness: after faults stop, every live client is connected, every
//! mapping ready and every operation finished within
//! [`SimConfig::liveness_bound`].
//!
//! # Replay
//!
//! A failing seed is replayed with `cargo run -p rmmap-sim --release --
//! --seed N`; the same seed gives the same trace ([`SeedReport::trace_hash`]).
//! Seeds that once failed are kept in `tests/regressions.rs`. At the network
//! level: `cargo run -p rmmap-sim --release -- --net --seed N` (with
//! `--scenario NAME` for a scenario).

pub mod checker;
pub mod cluster;
pub mod config;
pub mod history;
pub mod net;
pub mod rng;
mod sim;
pub mod trace;
pub mod workload;

pub use checker::Violation;
pub use config::{InjectedBug, SimConfig};
pub use sim::{SeedReport, Stats, run_seed};

/// What a caught panic said (its message, when it was a string).
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// Runs a seed, catching panics of the core as a violation.
pub fn run_seed_guarded(seed: u64, cfg: &SimConfig) -> SeedReport {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_seed(seed, cfg))) {
        Ok(r) => r,
        Err(p) => {
            let msg = panic_message(p.as_ref());
            SeedReport {
                seed,
                violations: vec![Violation::new("panic", None, msg, Vec::new())],
                ops_checked: 0,
                trace_hash: 0,
                trace: Vec::new(),
                history: history::History::default(),
                stats: Stats::default(),
            }
        }
    }
}

/// The command that replays a seed.
pub fn replay_command(seed: u64, cfg: &SimConfig) -> String {
    let mut s = format!("cargo run -p rmmap-sim --release -- --seed {seed}");
    if cfg.clients != SimConfig::default().clients {
        s.push_str(&format!(" --clients {}", cfg.clients));
    }
    if cfg.steps != SimConfig::default().steps {
        s.push_str(&format!(" --steps {}", cfg.steps));
    }
    if !cfg.faults {
        s.push_str(" --no-faults");
    } else {
        if !cfg.disk_faults {
            s.push_str(" --no-disk-faults");
        }
        if !cfg.graceful_restarts {
            s.push_str(" --no-graceful");
        }
    }
    if cfg.waits {
        s.push_str(" --waits");
    }
    if let Some(b) = cfg.bug {
        s = s.replace("--release", "--release --features bug-injection");
        s.push_str(" --bug ");
        s.push_str(b.name());
    }
    s
}
