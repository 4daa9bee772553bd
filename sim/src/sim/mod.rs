//! The core-level simulator: one server and N clients of `rmmap-core` in the
//! in-memory cluster harness, driven by one seed.
//!
//! A run has three phases:
//! 1. **Faults**: each step issues an operation on a random client, injects
//!    a fault (of the network, the server, a client or the disk), or
//!    advances virtual time.
//! 2. **Liveness**: faults stop; every live client must reconnect and every
//!    pending operation finish within [`SimConfig::liveness_bound`].
//! 3. **Read-back**: every live client syncs and reads every cell, so lost
//!    writes show up in the history; then the checker runs.

mod caches;
mod disk;
mod drive;
mod faults;
mod member;
mod restarts;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use rmmap_core::client::{ClientConfig, MappingId, OpId};
use rmmap_core::harness::{Cluster, Direction};
use rmmap_core::server::ServerConfig;
use rmmap_core::store::{DiskFault, MemStore};

use crate::checker::{self, Violation};
use crate::config::SimConfig;
use crate::history::{Cell, History};
use crate::rng::SimRng;
use crate::trace::Trace;
use crate::workload::Layout;

use disk::DiskFaults;
use faults::{FrameFaults, Partition, partition_length};

/// What happened in a run, in numbers.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Operations issued (reads, writes, syncs, atomics).
    pub ops: u64,
    /// Connections cut by the simulator.
    pub cuts: u64,
    /// Partitions (one-way holds and unreachable periods).
    pub partitions: u64,
    /// Partitions longer than the lease.
    pub long_partitions: u64,
    /// Server restarts without a shutdown (a kill, with and without losing
    /// unsynced data).
    pub restarts: u64,
    /// Server restarts that lost unsynced data (power loss).
    pub crash_restarts: u64,
    /// Graceful restarts: a shutdown (driven in the simulator's own steps,
    /// so completions keep their real-time order), then a new server.
    pub graceful_restarts: u64,
    /// Graceful restarts begun while the clients contended for one file's
    /// pages, one of them answering late.
    pub contended_shutdowns: u64,
    /// Shutdowns that had not finished within their bound (the server was
    /// then killed).
    pub shutdowns_cut_short: u64,
    /// Periods of a full disk (writes fail with "no space").
    pub disk_full: u64,
    /// Periods of a broken disk (every request fails with an I/O error).
    pub disk_broken: u64,
    /// Short writes injected (half the bytes written, then "no space").
    pub short_writes: u64,
    /// Failing fsyncs injected (the kernel drops the dirty pages).
    pub failed_syncs: u64,
    /// Store operations that failed because of an injected fault.
    pub disk_errors: u64,
    /// Store requests run.
    pub store_requests: u64,
    /// Store requests delayed (slow disk; they finish out of order).
    pub store_delayed: u64,
    /// Syncs that failed with a disk error (`no_space`, `io`).
    pub syncs_failed_on_disk: u64,
    /// Cells a short write had torn, found on the disk at a restart.
    pub torn_cells: u64,
    /// Client crashes.
    pub client_crashes: u64,
    /// `SessionLost` events.
    pub sessions_lost: u64,
    /// `Connected` events.
    pub connects: u64,
    /// Frames delayed, duplicated, or dropped with their connection.
    pub frames_delayed: u64,
    /// Frames duplicated.
    pub frames_duplicated: u64,
    /// Frames dropped with a cut.
    pub frames_cut: u64,
    /// Times the server was cut off from the coordinator (`--member`).
    pub member_cuts: u64,
    /// Planned moves: member b joined or left (`--member`).
    pub member_moves: u64,
    /// Times the server lost its shards (`--member`).
    pub member_losses: u64,
    /// Writes by member b's writer (`--member`).
    pub member_writes: u64,
    /// Virtual time simulated.
    pub virtual_time: Duration,
}

impl Stats {
    /// Adds another run's counts (for the figures of many seeds).
    pub fn add(&mut self, o: &Stats) {
        self.ops += o.ops;
        self.cuts += o.cuts;
        self.partitions += o.partitions;
        self.long_partitions += o.long_partitions;
        self.restarts += o.restarts;
        self.crash_restarts += o.crash_restarts;
        self.graceful_restarts += o.graceful_restarts;
        self.contended_shutdowns += o.contended_shutdowns;
        self.shutdowns_cut_short += o.shutdowns_cut_short;
        self.disk_full += o.disk_full;
        self.disk_broken += o.disk_broken;
        self.short_writes += o.short_writes;
        self.failed_syncs += o.failed_syncs;
        self.disk_errors += o.disk_errors;
        self.store_requests += o.store_requests;
        self.store_delayed += o.store_delayed;
        self.syncs_failed_on_disk += o.syncs_failed_on_disk;
        self.torn_cells += o.torn_cells;
        self.client_crashes += o.client_crashes;
        self.sessions_lost += o.sessions_lost;
        self.connects += o.connects;
        self.frames_delayed += o.frames_delayed;
        self.frames_duplicated += o.frames_duplicated;
        self.frames_cut += o.frames_cut;
        self.member_cuts += o.member_cuts;
        self.member_moves += o.member_moves;
        self.member_losses += o.member_losses;
        self.member_writes += o.member_writes;
        self.virtual_time += o.virtual_time;
    }
}

/// The result of one seed.
#[derive(Clone, Debug)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Everything the checker found (empty: the run is consistent).
    pub violations: Vec<Violation>,
    /// Operation outcomes the checker looked at.
    pub ops_checked: u64,
    /// Hash of the trace: equal for equal seeds.
    pub trace_hash: u64,
    /// The trace text (when [`SimConfig::keep_trace`]).
    pub trace: Vec<String>,
    /// The history.
    pub history: History,
    /// Counts.
    pub stats: Stats,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SlotState {
    /// Not mapped: map at the next chance.
    Idle,
    Opening,
    Ready,
    /// Lost writes: unmap at the next chance.
    Lost,
    Unmapping,
}

#[derive(Clone, Debug)]
struct Slot {
    state: SlotState,
    mapping: Option<MappingId>,
    /// With `--member`: a map refused (`busy`, `moved`) is asked again no
    /// sooner than this.
    retry_at: Option<rmmap_core::Instant>,
}

#[derive(Clone, Debug)]
struct ClientModel {
    crashed: bool,
    /// It has had a session: a refused first handshake fails a client for
    /// good (its application's connect fails), later ones are retried.
    connected_once: bool,
    incarnation: u32,
    slots: Vec<Slot>,
    next_seq: u64,
    outstanding: usize,
    last_seen: BTreeMap<Cell, u64>,
}

#[derive(Clone, Debug)]
enum Pending {
    Op(usize),
    Map(usize),
    Unmap(usize),
}

struct Sim<'a> {
    cfg: &'a SimConfig,
    layout: Layout,
    rng: SimRng,
    cluster: Cluster,
    frames: Rc<RefCell<FrameFaults>>,
    disk: Rc<RefCell<DiskFaults>>,
    parts: Vec<Partition>,
    clients: Vec<ClientModel>,
    history: History,
    seq: u64,
    trace: Trace,
    pending: BTreeMap<(usize, OpId), Pending>,
    /// The value each `wait_while` in progress waits out (by operation).
    waits: BTreeMap<usize, u64>,
    violations: Vec<Violation>,
    segment: u32,
    /// The server is shutting down: like the adapters, it accepts no new
    /// connections.
    stopping: bool,
    stats: Stats,
    steps: u64,
    /// With `--member`: the membership's faults.
    member: member::Membership,
}

/// Runs one seed and checks its history.
pub fn run_seed(seed: u64, cfg: &SimConfig) -> SeedReport {
    let mut sim = Sim::new(seed, cfg);
    sim.fault_phase();
    sim.liveness_phase();
    sim.read_back_phase();
    sim.finish(seed)
}

impl<'a> Sim<'a> {
    fn new(seed: u64, cfg: &'a SimConfig) -> Self {
        let layout = Layout {
            page_size: cfg.page_size as u64,
            pages: cfg.files.clone(),
        };
        let store = MemStore::new();
        for f in 0..layout.pages.len() {
            store.insert(&Layout::path(f), vec![0u8; layout.len(f) as usize]);
        }
        let mut server = ServerConfig {
            page_size: cfg.page_size,
            lease: cfg.lease,
            cluster: cfg.member.then(|| member::member_config("a", cfg.lease)),
            ..ServerConfig::default()
        };
        if cfg.faults && cfg.disk_faults && SimRng::new(seed, 4).chance(500) {
            // Little room for bytes the disk refused: new write ownership is
            // refused with no_space once two pages wait.
            server.max_unwritten_bytes = 2 * cfg.page_size as u64;
        }
        let client = ClientConfig {
            reconnect_max: Duration::from_secs(2),
            ..ClientConfig::default()
        };
        let mut cluster = Cluster::with_clients(server, store, vec![client; cfg.clients], seed);
        // Checked by the simulator after every step, as a violation, not a panic.
        cluster.check_invariants = false;
        let frames = FrameFaults::new(SimRng::new(seed, 2));
        cluster.set_hook(FrameFaults::hook(&frames));
        frames.borrow_mut().frames_traced = cfg.keep_trace;
        let disk = DiskFaults::new(SimRng::new(seed, 3));
        cluster.set_disk_hook(DiskFaults::hook(&disk));
        disk.borrow_mut().traced = cfg.keep_trace;
        let model = ClientModel {
            crashed: false,
            connected_once: false,
            incarnation: 0,
            slots: vec![
                Slot {
                    state: SlotState::Idle,
                    mapping: None,
                    retry_at: None,
                };
                layout.pages.len()
            ],
            next_seq: 0,
            outstanding: 0,
            last_seen: BTreeMap::new(),
        };
        let history = History {
            cells: layout.cells(),
            ..History::default()
        };
        let mut sim = Sim {
            cfg,
            layout,
            rng: SimRng::new(seed, 1),
            cluster,
            frames,
            disk,
            parts: vec![Partition::default(); cfg.clients],
            clients: vec![model; cfg.clients],
            history,
            seq: 0,
            trace: Trace::new(cfg.keep_trace).echo(cfg.echo_trace),
            pending: BTreeMap::new(),
            waits: BTreeMap::new(),
            violations: Vec::new(),
            segment: 0,
            stopping: false,
            stats: Stats::default(),
            steps: 0,
            member: member::Membership::default(),
        };
        sim.inject_bugs();
        sim.trace.line(format!(
            "seed {seed} clients {} steps {} lease {:?}",
            cfg.clients, cfg.steps, cfg.lease
        ));
        sim.after_step();
        sim
    }

    #[cfg(feature = "bug-injection")]
    fn inject_bugs(&mut self) {
        use crate::config::InjectedBug;
        match self.cfg.bug {
            Some(InjectedBug::SkipInvalidation) => self
                .cluster
                .server
                .inject_bug(rmmap_core::server::ServerBug::SkipInvalidation),
            Some(InjectedBug::ClientIgnoresLease) => {
                for n in &mut self.cluster.nodes {
                    n.client
                        .inject_bug(rmmap_core::client::ClientBug::IgnoreLease);
                }
            }
            Some(InjectedBug::IgnoreStoreErrors) => self
                .cluster
                .server
                .inject_bug(rmmap_core::server::ServerBug::IgnoreStoreErrors),
            Some(InjectedBug::RefreshTrustsDigests) => self
                .cluster
                .server
                .inject_bug(rmmap_core::server::ServerBug::RefreshTrustsDigests),
            Some(InjectedBug::MemberServesAfterLeaseLoss) => self
                .cluster
                .server
                .inject_ownership_bug(rmmap_core::cluster::OwnershipBug::ServeAfterLeaseLoss),
            None => {}
        }
    }

    #[cfg(not(feature = "bug-injection"))]
    fn inject_bugs(&mut self) {
        assert!(
            self.cfg.bug.is_none(),
            "bugs can only be injected with the feature `bug-injection`"
        );
    }

    fn live(&self) -> Vec<usize> {
        (0..self.clients.len())
            .filter(|i| !self.clients[*i].crashed)
            .collect()
    }

    fn pick_live(&mut self) -> Option<usize> {
        let live = self.live();
        (!live.is_empty()).then(|| live[self.rng.below(live.len() as u64) as usize])
    }

    fn fault_phase(&mut self) {
        for _ in 0..self.cfg.steps {
            if self.cfg.faults && self.rng.chance(90) {
                self.inject_fault();
            }
            if self.rng.chance(600) {
                if self.member.b_may_write() && self.rng.chance(300) {
                    // Member b's writer is one more client.
                    self.b_writes();
                } else if let Some(i) = self.pick_live() {
                    self.issue(i);
                }
            } else {
                let dt = match self.rng.below(100) {
                    0..=69 => self.rng.micros(0, 20_000),
                    70..=89 => self.rng.micros(20_000, 300_000),
                    90..=97 => self.rng.micros(300_000, 1_500_000),
                    _ => self.rng.micros(1_500_000, 4_000_000),
                };
                self.advance(dt);
            }
        }
    }

    fn inject_fault(&mut self) {
        let Some(i) = self.pick_live() else { return };
        let now = self.cluster.now;
        match self.rng.below(100) {
            0..=21 => {
                self.trace.line(format!("{now:?} fault cut c{i}"));
                self.stats.cuts += 1;
                self.cluster.cut(i);
                self.after_step();
            }
            22..=44 => {
                let d = partition_length(&mut self.rng, self.cfg.lease);
                let dir = if self.rng.chance(500) {
                    Direction::ToClient
                } else {
                    Direction::ToServer
                };
                self.hold(i, dir, d);
            }
            45..=53 => {
                let d = partition_length(&mut self.rng, self.cfg.lease);
                self.trace
                    .line(format!("{now:?} fault unreachable c{i} for {d:?}"));
                self.count_partition(d);
                self.parts[i].unreachable_until = Some(now + d);
                self.cluster.cut(i);
                self.after_step();
            }
            54..=65 => {
                let lat = [50, 1_000, 20_000, 150_000][self.rng.below(4) as usize];
                self.trace
                    .line(format!("{now:?} fault latency c{i} {lat}us"));
                self.cluster.nodes[i].latency = Duration::from_micros(lat);
            }
            66..=75 => {
                let mut f = self.frames.borrow_mut();
                let on = self.rng.chance(600);
                f.delay_pm = if on { self.rng.below(60) } else { 0 };
                f.duplicate_pm = if on { self.rng.below(8) } else { 0 };
                f.cut_pm = if on { self.rng.below(8) } else { 0 };
                let line = format!(
                    "{now:?} fault frames delay {} dup {} cut (per mille)",
                    f.delay_pm, f.duplicate_pm
                );
                drop(f);
                self.trace.line(line);
            }
            76..=81 => {
                if self.stats.restarts < 2 {
                    let crash = self.rng.chance(700);
                    self.restart_server(crash);
                }
            }
            82..=86 => {
                // A shutdown refuses handshakes: only once every client has
                // connected (a first connection refused fails for good).
                let connected = self.live().iter().all(|c| self.clients[*c].connected_once);
                if self.cfg.graceful_restarts && self.stats.graceful_restarts < 2 && connected {
                    let contended = self.rng.chance(600);
                    self.graceful_restart(contended);
                }
            }
            87..=89 => {
                if self.stats.client_crashes == 0 && self.live().len() > 2 {
                    self.crash_client(i);
                }
            }
            _ => {
                if self.cfg.member && self.rng.chance(500) {
                    self.inject_member_fault();
                } else if self.cfg.disk_faults {
                    self.inject_disk_fault();
                }
            }
        }
    }

    /// Holds client `i`'s frames going `dir` for `d` (re-applied to new
    /// connections while it lasts).
    fn hold(&mut self, i: usize, dir: Direction, d: Duration) {
        let now = self.cluster.now;
        self.trace
            .line(format!("{now:?} fault hold c{i} {dir:?} for {d:?}"));
        self.count_partition(d);
        let until = Some(now + d);
        let p = &mut self.parts[i];
        match dir {
            Direction::ToClient => p.to_client_until = p.to_client_until.max(until),
            Direction::ToServer => p.to_server_until = p.to_server_until.max(until),
        }
        self.after_step();
    }

    /// The disk becomes slow (or fast again), full or broken for a while,
    /// or its next writes or fsyncs fail.
    fn inject_disk_fault(&mut self) {
        let now = self.cluster.now;
        let store = self.cluster.store.clone();
        let mut disk = self.disk.borrow_mut();
        let line = match self.rng.below(100) {
            0..=24 => {
                let (pm, max) = [(0, 0), (150, 30_000), (500, 300_000), (1000, 1_500_000)]
                    [self.rng.below(4) as usize];
                // A member's storage writes must land within its margin.
                let max = if self.cfg.member {
                    max.min(member::MEMBER_MARGIN.as_micros() as u64 * 4 / 5)
                } else {
                    max
                };
                disk.slow_pm = pm;
                disk.slow_max_us = max;
                format!("slow: {pm} per mille of requests take up to {max}us")
            }
            25..=49 => {
                let d = self.rng.micros(50_000, 4_000_000);
                self.stats.disk_full += 1;
                disk.fill(&store, now + d);
                format!("full for {d:?}")
            }
            50..=64 => {
                let d = self.rng.micros(20_000, 2_000_000);
                self.stats.disk_broken += 1;
                disk.break_down(&store, now + d);
                format!("broken (I/O errors) for {d:?}")
            }
            65..=82 => {
                let n = 1 + self.rng.below(3);
                self.stats.short_writes += n;
                for _ in 0..n {
                    store.inject(DiskFault::ShortWrite);
                }
                format!("the next {n} writes are short")
            }
            _ => {
                let n = 1 + self.rng.below(2);
                self.stats.failed_syncs += n;
                for _ in 0..n {
                    store.inject(DiskFault::FailedSync);
                }
                format!("the next {n} fsyncs fail")
            }
        };
        drop(disk);
        self.trace.line(format!("{now:?} fault disk {line}"));
        self.after_step();
    }

    fn count_partition(&mut self, d: Duration) {
        self.stats.partitions += 1;
        if d > self.cfg.lease {
            self.stats.long_partitions += 1;
        }
    }

    fn crash_client(&mut self, i: usize) {
        let now = self.cluster.now;
        self.trace.line(format!("{now:?} fault crash c{i}"));
        self.stats.client_crashes += 1;
        let seq = self.next_seq();
        let inc = self.clients[i].incarnation;
        self.history.ended.entry((i, inc)).or_default().crashed = true;
        self.history
            .ended
            .get_mut(&(i, inc))
            .expect("just added")
            .seq = seq;
        self.clients[i].crashed = true;
        self.parts[i].crashed = true;
        // Its pending operations stay pending for ever: nobody learns how they ended.
        self.pending.retain(|(c, _), _| *c != i);
        self.cluster.nodes[i].unreachable = true;
        self.cluster.cut(i);
        self.after_step();
    }

    fn liveness_phase(&mut self) {
        let now = self.cluster.now;
        self.trace.line(format!("{now:?} heal"));
        for (i, p) in self.parts.iter_mut().enumerate() {
            p.clear();
            self.cluster.nodes[i].latency = Duration::from_micros(50);
        }
        {
            let mut f = self.frames.borrow_mut();
            f.delay_pm = 0;
            f.duplicate_pm = 0;
            f.cut_pm = 0;
        }
        self.disk.borrow_mut().heal(&self.cluster.store);
        self.member_heal();
        self.after_step();
        self.settle("after the faults stopped");
    }

    /// Runs until every live client is connected with every mapping ready
    /// and nothing pending, or the liveness bound passes (a violation).
    fn settle(&mut self, when: &str) -> bool {
        let deadline = self.cluster.now + self.cfg.liveness_bound;
        while self.cluster.now < deadline {
            if self.quiet() {
                return true;
            }
            self.advance(Duration::from_millis(50));
        }
        if self.quiet() {
            return true;
        }
        let mut detail = format!("not settled {:?} {when}:", self.cfg.liveness_bound);
        for i in self.live() {
            let n = &self.cluster.nodes[i];
            detail.push_str(&format!(
                " c{i}: connected={} pending_ops={} slots={:?};",
                n.client.is_connected(),
                n.client.pending_ops(),
                self.clients[i]
                    .slots
                    .iter()
                    .map(|s| &s.state)
                    .collect::<Vec<_>>()
            ));
        }
        self.violations
            .push(Violation::new("liveness", None, detail, Vec::new()));
        false
    }

    fn quiet(&self) -> bool {
        self.live().into_iter().all(|i| {
            self.cluster.nodes[i].client.is_connected()
                && self.clients[i].outstanding == 0
                && self.clients[i]
                    .slots
                    .iter()
                    .all(|s| s.state == SlotState::Ready)
                && !self.pending.keys().any(|(c, _)| *c == i)
        })
    }

    fn read_back_phase(&mut self) {
        if !self.violations.iter().all(|v| v.check != "liveness") {
            return;
        }
        for i in self.live() {
            for f in 0..self.layout.pages.len() {
                self.issue_planned(i, crate::workload::Planned::Sync { file: f });
            }
        }
        if !self.settle("waiting for the final syncs") {
            return;
        }
        for i in self.live() {
            for f in 0..self.layout.pages.len() {
                let len = self.layout.len(f);
                self.issue_planned(
                    i,
                    crate::workload::Planned::Read {
                        file: f,
                        offset: 0,
                        len,
                    },
                );
            }
        }
        self.settle("waiting for the final reads");
    }

    fn finish(mut self, seed: u64) -> SeedReport {
        self.stats.virtual_time = self.cluster.now - rmmap_core::Instant::ZERO;
        {
            let f = self.frames.borrow();
            self.stats.frames_delayed = f.delayed;
            self.stats.frames_duplicated = f.duplicated;
            self.stats.frames_cut = f.cut;
        }
        self.stats.store_delayed = self.disk.borrow().delayed;
        self.stats.store_requests = self.cluster.store_requests;
        self.stats.disk_errors = self.cluster.store.faults_seen();
        let (mut found, ops_checked) = checker::check(&self.history);
        self.violations.append(&mut found);
        self.trace.line(format!(
            "end {:?} violations {}",
            self.cluster.now,
            self.violations.len()
        ));
        SeedReport {
            seed,
            violations: self.violations,
            ops_checked,
            trace_hash: self.trace.hash(),
            trace: self.trace.lines().to_vec(),
            history: self.history,
            stats: self.stats,
        }
    }
}
