//! The controller: builds the simulation, steps it, applies faults between
//! steps, posts operations, runs the liveness and read-back phases, and
//! checks the history.

use std::cell::{Cell as StdCell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use rmmap_core::server::ServerConfig;
use rmmap_core::store::MemStore;
use rmmap_tokio::ClientConfig;
use turmoil::Sim;

use super::config::{Fault, NetConfig, Plan, ScriptOp};
use super::faults::{Links, Mode, Schedule, Timed, random_faults};
use super::hosts::{client_host, core_seed, server_host};
use super::lab::{Lab, LabRef, Posted};
use super::{NetReport, NetStats};
use crate::checker::{self, Violation};
use crate::history::encode_value;
use crate::rng::SimRng;
use crate::workload::{Layout, Planned};

/// The links' latency outside latency faults: 1–20 ms, jittered.
const MIN_LATENCY: Duration = Duration::from_millis(1);
const MAX_LATENCY: Duration = Duration::from_millis(20);

/// Crashes `host`. Its runtime drops its tasks in an order that depends on
/// tokio's task ids (a process-wide counter), and every dropped stream sends
/// a FIN or RST whose latency turmoil draws from the run's generator: so the
/// links of the crashed host get one fixed latency while it goes down, and
/// every goodbye takes the same time whatever the order. The caller restores
/// the links' latency.
fn crash_quietly(sim: &mut Sim<'_>, host: &str, clients: &[usize]) {
    for c in clients {
        sim.set_link_latency("server", format!("c{c}"), MIN_LATENCY);
    }
    sim.crash(host);
}

/// Runs one network-level seed and checks its history.
pub fn run_net_seed(seed: u64, cfg: &NetConfig) -> NetReport {
    let hosts = cfg.client_hosts();
    let layout = Layout {
        page_size: cfg.page_size as u64,
        pages: cfg.files.clone(),
    };
    let store = MemStore::new();
    for f in 0..layout.pages.len() {
        store.insert(&Layout::path(f), vec![0u8; layout.len(f) as usize]);
    }
    let lab: LabRef = Rc::new(RefCell::new(Lab::new(layout, store, hosts, cfg.keep_trace)));
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(cfg.tick)
        .simulation_duration(Duration::from_secs(24 * 3600))
        .min_message_latency(MIN_LATENCY)
        .max_message_latency(MAX_LATENCY)
        .build();
    let server_cfg = ServerConfig {
        page_size: cfg.page_size,
        lease: cfg.lease,
        handshake_timeout: Duration::from_secs(4),
        ..ServerConfig::default()
    };
    let boots = Rc::new(StdCell::new(0u64));
    {
        let lab = lab.clone();
        sim.host("server", move || {
            boots.set(boots.get() + 1);
            let mut cfg = server_cfg.clone();
            if boots.get() == 1 {
                // A fresh export: no earlier server whose clients may still
                // trust their leases, so no grace period (later boots wait one
                // lease).
                cfg.restart_grace = Some(Duration::ZERO);
            }
            server_host(lab.clone(), cfg, core_seed(seed, boots.get()))
        });
    }
    let client_cfg = ClientConfig {
        reconnect_max: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(4),
        ..ClientConfig::default()
    };
    for i in 0..hosts {
        let (lab, ccfg) = (lab.clone(), client_cfg.clone());
        sim.host(format!("c{i}"), move || {
            client_host(lab.clone(), i, ccfg.clone(), seed)
        });
    }
    let mut c = Controller {
        cfg,
        lab: lab.clone(),
        links: Links::new(hosts),
        schedule: Schedule::default(),
        rng: SimRng::new(seed, 10),
        server_up: true,
        hosts_up: vec![true; hosts],
        latency: vec![None; hosts],
        stats_steps: 0,
    };
    c.plan(seed);
    c.lab.borrow_mut().line(
        Duration::ZERO,
        format!(
            "seed {seed} clients {hosts} lease {:?} tick {:?}",
            cfg.lease, cfg.tick
        ),
    );
    c.run(&mut sim);
    drop(sim);
    c.finish(seed)
}

struct Controller<'a> {
    cfg: &'a NetConfig,
    lab: LabRef,
    links: Links,
    schedule: Schedule,
    rng: SimRng,
    server_up: bool,
    hosts_up: Vec<bool>,
    /// Each link's fixed latency (`None`: the default jitter).
    latency: Vec<Option<Duration>>,
    stats_steps: u64,
}

impl Controller<'_> {
    /// Fills the schedule: a random fault schedule, or the scenario.
    fn plan(&mut self, seed: u64) {
        match &self.cfg.plan {
            Plan::Random => {
                let mut rng = SimRng::new(seed, 11);
                for (at, f) in random_faults(
                    &mut rng,
                    self.hosts_up.len(),
                    self.cfg.fault_time,
                    self.cfg.lease,
                ) {
                    self.schedule.push(at, Timed::Start(f));
                }
            }
            Plan::Scenario(s) => {
                for (at, f) in &s.faults {
                    self.schedule.push(*at, Timed::Start(f.clone()));
                }
                self.lab.borrow_mut().scripted = vec![None; s.ops.len()];
                for (i, (at, client, op)) in s.ops.iter().enumerate() {
                    self.schedule.push(
                        *at,
                        Timed::Op {
                            client: *client,
                            op: *op,
                            script: i,
                        },
                    );
                }
            }
        }
    }

    fn run(&mut self, sim: &mut Sim<'_>) {
        let end = self.cfg.fault_phase();
        while sim.elapsed() < end {
            if let Some(t) = self.cfg.lying_disk_from
                && sim.elapsed() >= t
                && !self
                    .lab
                    .borrow()
                    .lying
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                self.lab
                    .borrow_mut()
                    .line(sim.elapsed(), "sabotage: the disk now drops writes");
            }
            while let Some(t) = self.schedule.pop_due(sim.elapsed()) {
                self.act(sim, t);
            }
            if self.cfg.random_ops() {
                self.maybe_issue(sim.elapsed());
            }
            if !self.step(sim) {
                return;
            }
        }
        self.heal(sim);
        let healed = sim.elapsed();
        if !self.settle(sim, "after the faults stopped") {
            return;
        }
        self.lab.borrow_mut().stats.settle = sim.elapsed() - healed;
        let files = self.lab.borrow().layout.pages.len();
        for h in 0..self.hosts_up.len() {
            for file in 0..files {
                self.post(h, Planned::Sync { file }, None);
            }
        }
        if !self.settle(sim, "waiting for the final syncs") {
            return;
        }
        for h in 0..self.hosts_up.len() {
            for file in 0..files {
                let len = self.lab.borrow().layout.len(file);
                self.post(
                    h,
                    Planned::Read {
                        file,
                        offset: 0,
                        len,
                    },
                    None,
                );
            }
        }
        self.settle(sim, "waiting for the final reads");
    }

    /// One turmoil step; false when the simulation failed.
    fn step(&mut self, sim: &mut Sim<'_>) -> bool {
        self.stats_steps += 1;
        match sim.step() {
            Ok(_) => true,
            Err(e) => {
                let d = format!("at {:?}: {e}", sim.elapsed());
                let mut l = self.lab.borrow_mut();
                l.violations
                    .push(Violation::new("host-error", None, d, Vec::new()));
                false
            }
        }
    }

    /// Runs until every client is quiet, or the liveness bound passes.
    fn settle(&mut self, sim: &mut Sim<'_>, when: &str) -> bool {
        let deadline = sim.elapsed() + self.cfg.liveness_bound;
        loop {
            if self.lab.borrow().hosts.iter().all(|h| h.quiet()) {
                return true;
            }
            if sim.elapsed() >= deadline {
                break;
            }
            if !self.step(sim) {
                return false;
            }
        }
        let mut l = self.lab.borrow_mut();
        let d = format!(
            "not settled {:?} {when}:{}",
            self.cfg.liveness_bound,
            l.describe_hosts()
        );
        l.violations
            .push(Violation::new("liveness", None, d, Vec::new()));
        false
    }

    /// Posts an operation to host `h`, for the client that runs there now.
    fn post(&mut self, h: usize, op: Planned, script: Option<usize>) {
        let mut l = self.lab.borrow_mut();
        let Some(cid) = l.hosts[h].cid else { return };
        l.hosts[h].inbox.push_back(Posted { op, script, cid });
        l.hosts[h].work.notify_one();
    }

    /// The random workload: now and then an operation on a random client
    /// that has a file mapped and room for one more.
    fn maybe_issue(&mut self, now: Duration) {
        let per_mille = (self.cfg.op_rate as u128 * self.cfg.tick.as_micros() / 1000) as u64;
        if !self.rng.chance(per_mille) {
            return;
        }
        let h = self.rng.below(self.hosts_up.len() as u64) as usize;
        let planned = {
            let mut l = self.lab.borrow_mut();
            let host = &l.hosts[h];
            let files = host.ready_files();
            let Some(cid) = host.cid else { return };
            if files.is_empty() || host.outstanding + host.inbox.len() >= self.cfg.max_outstanding {
                return;
            }
            l.logical[cid].next_seq += 1;
            let seq = l.logical[cid].next_seq;
            let seen = l.logical[cid].last_seen.clone();
            let _ = now;
            l.layout.plan(&mut self.rng, cid, seq, &files, |c| {
                seen.get(&c).copied().unwrap_or(0)
            })
        };
        self.post(h, planned, None);
    }

    /// A scenario operation, with unique values for the client that runs it.
    fn scripted(&mut self, h: usize, op: ScriptOp) -> Option<Planned> {
        let mut l = self.lab.borrow_mut();
        let cid = l.hosts[h].cid?;
        Some(match op {
            ScriptOp::Read { file, offset, len } => Planned::Read { file, offset, len },
            ScriptOp::Sync { file } => Planned::Sync { file },
            ScriptOp::Write { file, offset, len } => {
                l.logical[cid].next_seq += 1;
                let seq = l.logical[cid].next_seq;
                let mut data = vec![0u8; len as usize];
                let mut cells = Vec::new();
                for (w, c) in l.layout.cells_in(file, offset, len).into_iter().enumerate() {
                    let v = encode_value(cid, seq, w);
                    let o = (c.offset - offset) as usize;
                    data[o..o + 8].copy_from_slice(&v.to_le_bytes());
                    cells.push((c, v));
                }
                Planned::Write {
                    file,
                    offset,
                    data: Bytes::from(data),
                    cells,
                }
            }
        })
    }

    fn act(&mut self, sim: &mut Sim<'_>, t: Timed) {
        let now = sim.elapsed();
        match t {
            Timed::Start(f) => self.start(sim, f),
            Timed::EndLink { client, generation } => {
                if self.links.end(sim, client, generation) {
                    self.lab
                        .borrow_mut()
                        .line(now, format!("fault over: link c{client} up"));
                }
            }
            Timed::BootClient(h) => {
                self.links.set_client_silent(sim, h, false);
                self.lab.borrow_mut().line(now, format!("boot c{h}"));
                sim.bounce(format!("c{h}"));
                self.hosts_up[h] = true;
            }
            Timed::BootServer => {
                self.links.set_server_silent(sim, false);
                self.lab.borrow_mut().line(now, "boot server");
                sim.bounce("server");
                self.server_up = true;
            }
            Timed::Op { client, op, script } => match self.scripted(client, op) {
                Some(p) => {
                    self.lab
                        .borrow_mut()
                        .line(now, format!("script op {script} on c{client}: {op:?}"));
                    self.post(client, p, Some(script));
                }
                None => self.lab.borrow_mut().line(
                    now,
                    format!("script op {script}: c{client} is down, skipped"),
                ),
            },
        }
    }

    fn start(&mut self, sim: &mut Sim<'_>, f: Fault) {
        let now = sim.elapsed();
        self.lab.borrow_mut().line(now, format!("fault {f:?}"));
        let lease = self.cfg.lease;
        let link = |me: &mut Self, sim: &mut Sim<'_>, client: usize, mode, d: Duration| {
            let generation = me.links.set(sim, client, mode);
            me.schedule
                .push(now + d, Timed::EndLink { client, generation });
            let mut l = me.lab.borrow_mut();
            if d > lease {
                l.stats.long_faults += 1;
            }
            match mode {
                Mode::Down => l.stats.partitions += 1,
                Mode::Drop(_) => l.stats.one_way += 1,
                Mode::Held => l.stats.holds += 1,
                Mode::Up => {}
            }
        };
        match f {
            Fault::Partition { client, duration } => link(self, sim, client, Mode::Down, duration),
            Fault::OneWay {
                client,
                dir,
                duration,
            } => link(self, sim, client, Mode::Drop(dir), duration),
            Fault::Hold { client, duration } => link(self, sim, client, Mode::Held, duration),
            Fault::Flap {
                client,
                period,
                times,
            } => {
                for k in 0..times {
                    let duration = period;
                    self.schedule.push(
                        now + period * 2 * k,
                        Timed::Start(Fault::Partition { client, duration }),
                    );
                }
            }
            Fault::Latency { client, latency } => {
                self.latency[client] = Some(latency);
                self.restore_latency(sim, client);
                self.lab.borrow_mut().stats.latency_changes += 1;
            }
            Fault::CrashClient {
                client,
                down,
                silent,
            } => {
                if !self.hosts_up[client] {
                    return;
                }
                if silent {
                    self.links.set_client_silent(sim, client, true);
                }
                crash_quietly(sim, &format!("c{client}"), &[client]);
                self.restore_latency(sim, client);
                self.hosts_up[client] = false;
                let mut l = self.lab.borrow_mut();
                l.crash_client(client, now);
                l.stats.client_crashes += 1;
                drop(l);
                self.schedule.push(now + down, Timed::BootClient(client));
            }
            Fault::RestartServer {
                down,
                lose_unsynced,
            } => {
                if !self.server_up {
                    return;
                }
                if lose_unsynced {
                    self.links.set_server_silent(sim, true);
                }
                let all: Vec<usize> = (0..self.hosts_up.len()).collect();
                crash_quietly(sim, "server", &all);
                for c in all {
                    self.restore_latency(sim, c);
                }
                self.server_up = false;
                let mut l = self.lab.borrow_mut();
                if lose_unsynced {
                    l.store.crash();
                    l.stats.store_crashes += 1;
                }
                l.restart_server(lose_unsynced, now);
                l.stats.server_restarts += 1;
                drop(l);
                self.schedule.push(now + down, Timed::BootServer);
            }
        }
    }

    /// Faults stop: links heal, latencies return to normal, crashed hosts
    /// boot now; scenario operations not yet posted are dropped.
    fn heal(&mut self, sim: &mut Sim<'_>) {
        let now = sim.elapsed();
        self.lab.borrow_mut().line(now, "heal");
        for t in self.schedule.clear() {
            match t {
                Timed::BootClient(_) | Timed::BootServer => self.act(sim, t),
                _ => {}
            }
        }
        self.links.heal(sim);
        for h in 0..self.hosts_up.len() {
            self.latency[h] = None;
            self.restore_latency(sim, h);
        }
    }

    /// Gives client `c`'s link the latency it should have now.
    fn restore_latency(&self, sim: &mut Sim<'_>, c: usize) {
        let n = format!("c{c}");
        match self.latency[c] {
            Some(l) => sim.set_link_latency("server", n.as_str(), l),
            None => {
                sim.set_link_latency("server", n.as_str(), MIN_LATENCY);
                sim.set_link_max_message_latency("server", n.as_str(), MAX_LATENCY);
            }
        }
    }

    fn finish(self, seed: u64) -> NetReport {
        let mut l = self.lab.borrow_mut();
        let mut stats: NetStats = std::mem::take(&mut l.stats);
        stats.steps = self.stats_steps;
        stats.virtual_time = self.cfg.tick * self.stats_steps as u32;
        let history = std::mem::take(&mut l.history);
        let (found, ops_checked) = checker::check(&history);
        let mut violations = std::mem::take(&mut l.violations);
        violations.extend(found);
        let end = format!("end violations {}", violations.len());
        l.trace.line(end);
        NetReport {
            seed,
            violations,
            ops_checked,
            trace_hash: l.trace.hash(),
            trace: l.trace.lines().to_vec(),
            history,
            scripted: std::mem::take(&mut l.scripted),
            stats,
        }
    }
}
