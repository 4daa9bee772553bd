//! The discrete-event world of a cluster run: members with drifting clocks,
//! the in-memory coordinator, the links between them and the fault schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rmmap_core::Instant;
use rmmap_core::cluster::mem::MemCoordinator;
use rmmap_core::cluster::{
    ClusterConfig as MemberConfig, CoordError, CoordRequest, CoordRequestId, CoordResponse,
    LossReason, OwnershipEvent, Placement, ShardId, ShardOwnership, WatchEvent,
};

use super::claims::{Claims, Server, Serving};
use super::{ClusterBug, ClusterConfig, ClusterReport, ClusterStats};
use crate::checker::Violation;
use crate::rng::SimRng;
use crate::trace::Trace;

/// A member's clock: `local = base_local + (real − base_real)·(1 + drift)`.
struct Clock {
    base_local: u64,
    base_real: u64,
    drift_ppm: i64,
}

impl Clock {
    fn local(&self, real: Instant) -> Instant {
        let d = i128::from(real.as_nanos().saturating_sub(self.base_real));
        let l = d * (1_000_000 + i128::from(self.drift_ppm)) / 1_000_000;
        Instant::from_nanos(self.base_local + l as u64)
    }

    fn real(&self, local: Instant) -> Instant {
        let d = i128::from(local.as_nanos().saturating_sub(self.base_local));
        let r = d * 1_000_000 / (1_000_000 + i128::from(self.drift_ppm));
        Instant::from_nanos(self.base_real + r as u64)
    }
}

struct Member {
    id: String,
    incarnation: u32,
    machine: Option<ShardOwnership>,
    clock: Clock,
    partitioned_until: Instant,
    slow_until: Instant,
    outstanding: BTreeSet<CoordRequestId>,
    timer_gen: u64,
    watch_delivered: Instant,
}

impl Member {
    fn client(&self, index: usize) -> u64 {
        index as u64 * 1_000_000 + u64::from(self.incarnation)
    }

    fn server(&self, index: usize) -> Server {
        Server {
            member: index,
            incarnation: self.incarnation,
        }
    }
}

enum Ev {
    ToCoord {
        member: usize,
        incarnation: u32,
        id: CoordRequestId,
        request: CoordRequest,
    },
    Response {
        member: usize,
        incarnation: u32,
        id: CoordRequestId,
        response: CoordResponse,
    },
    Timeout {
        member: usize,
        incarnation: u32,
        id: CoordRequestId,
    },
    Watch {
        member: usize,
        incarnation: u32,
        watch: CoordRequestId,
        events: Vec<WatchEvent>,
    },
    WatchEnded {
        member: usize,
        incarnation: u32,
        watch: CoordRequestId,
    },
    Timer {
        member: usize,
        incarnation: u32,
        generation: u64,
    },
    Drained {
        member: usize,
        incarnation: u32,
        shard: ShardId,
        epoch: i64,
    },
    Start {
        member: usize,
    },
    CoordTick,
    Fault,
    FaultsEnd,
}

struct World<'a> {
    cfg: &'a ClusterConfig,
    rng: SimRng,
    now: Instant,
    seq: u64,
    queue: BTreeMap<(Instant, u64), Ev>,
    coord: MemCoordinator,
    coord_tick: Option<Instant>,
    members: Vec<Member>,
    claims: Claims,
    trace: Trace,
    stats: ClusterStats,
    faults_on: bool,
}

/// Runs one seed of the cluster simulation (see the module docs).
pub fn run_cluster_seed(seed: u64, cfg: &ClusterConfig) -> ClusterReport {
    let mut rng = SimRng::new(seed, 0xC1u64);
    let members = (0..cfg.members)
        .map(|i| {
            let span = i64::from(cfg.clock_drift_ppm);
            Member {
                id: format!("m{i}"),
                incarnation: 0,
                machine: None,
                clock: Clock {
                    base_local: rng.below(1_000_000_000_000),
                    base_real: 0,
                    drift_ppm: rng.below(2 * span as u64 + 1) as i64 - span,
                },
                partitioned_until: Instant::ZERO,
                slow_until: Instant::ZERO,
                outstanding: BTreeSet::new(),
                timer_gen: 0,
                watch_delivered: Instant::ZERO,
            }
        })
        .collect();
    let mut w = World {
        cfg,
        rng,
        now: Instant::ZERO,
        seq: 0,
        queue: BTreeMap::new(),
        coord: MemCoordinator::new(),
        coord_tick: None,
        members,
        claims: Claims::default(),
        trace: Trace::new(cfg.keep_trace),
        stats: ClusterStats::default(),
        faults_on: true,
    };
    for i in 0..cfg.members {
        let at = w.rng.micros(0, 500_000);
        w.at(at, Ev::Start { member: i });
    }
    let first = w.rng.micros(2_000_000, 6_000_000);
    w.at(first, Ev::Fault);
    w.at(cfg.fault_time, Ev::FaultsEnd);
    let end = Instant::ZERO + cfg.fault_time + cfg.liveness_bound;
    while let Some(((t, _), ev)) = w.queue.pop_first() {
        if t > end {
            break;
        }
        w.now = t;
        w.coord.expire(t);
        w.handle(ev);
        w.pump_watches();
        w.schedule_coord_tick();
    }
    w.now = end;
    w.finish(seed)
}

impl World<'_> {
    fn at(&mut self, after: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.insert((self.now + after, self.seq), ev);
    }

    fn line(&mut self, s: String) {
        let t = self.now;
        self.trace.line(format!("{t:?} {s}"));
    }

    /// One-way latency of a message to or from `member`.
    fn latency(&mut self, member: usize) -> Duration {
        let base = if !self.faults_on {
            self.rng.micros(500, 20_000)
        } else if self.rng.chance(20) {
            // Past the request timeout now and then: outcomes become unknown.
            self.rng.micros(800_000, 1_500_000)
        } else if self.rng.chance(60) {
            self.rng.micros(100_000, 600_000)
        } else {
            self.rng.micros(500, 20_000)
        };
        if self.members[member].slow_until > self.now {
            base + self.rng.micros(50_000, 400_000)
        } else {
            base
        }
    }

    fn cut(&self, member: usize) -> bool {
        self.members[member].partitioned_until > self.now
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::ToCoord {
                member,
                incarnation,
                id,
                request,
            } => {
                if self.cut(member) {
                    return;
                }
                // The client id names the incarnation that sent it, so a dead
                // process's late watch never reaches its successor.
                let client = member as u64 * 1_000_000 + u64::from(incarnation);
                let t = self.now;
                self.trace.note(format!(
                    "{t:?} coordinator runs m{member}.{incarnation} {id:?}"
                ));
                let response = self.coord.execute(self.now, client, id, request);
                let lat = self.latency(member);
                self.at(
                    lat,
                    Ev::Response {
                        member,
                        incarnation,
                        id,
                        response,
                    },
                );
            }
            Ev::Response {
                member,
                incarnation,
                id,
                response,
            } => {
                if self.cut(member) || !self.live(member, incarnation) {
                    return;
                }
                if self.members[member].outstanding.remove(&id) {
                    let local = self.local(member);
                    let t = self.now;
                    self.trace.note(format!(
                        "{t:?} m{member}.{incarnation} <- {id:?} {response:?}"
                    ));
                    if let Some(m) = self.members[member].machine.as_mut() {
                        m.handle_response(local, id, response);
                    }
                    self.drive(member);
                }
            }
            Ev::Timeout {
                member,
                incarnation,
                id,
            } => {
                if self.live(member, incarnation) && self.members[member].outstanding.remove(&id) {
                    let local = self.local(member);
                    let failed =
                        CoordResponse::Failed(CoordError::Unavailable("request timed out".into()));
                    if let Some(m) = self.members[member].machine.as_mut() {
                        m.handle_response(local, id, failed);
                    }
                    self.drive(member);
                }
            }
            Ev::Watch {
                member,
                incarnation,
                watch,
                events,
            } => {
                if self.cut(member) || !self.live(member, incarnation) {
                    return;
                }
                let local = self.local(member);
                if let Some(m) = self.members[member].machine.as_mut() {
                    m.handle_watch_events(local, watch, &events);
                }
                self.drive(member);
            }
            Ev::WatchEnded {
                member,
                incarnation,
                watch,
            } => {
                if self.live(member, incarnation) {
                    let local = self.local(member);
                    if let Some(m) = self.members[member].machine.as_mut() {
                        m.handle_watch_ended(local, watch);
                    }
                    self.drive(member);
                }
            }
            Ev::Timer {
                member,
                incarnation,
                generation,
            } => {
                if self.live(member, incarnation) && self.members[member].timer_gen == generation {
                    let local = self.local(member);
                    if let Some(m) = self.members[member].machine.as_mut() {
                        m.handle_timeout(local);
                    }
                    self.drive(member);
                }
            }
            Ev::Drained {
                member,
                incarnation,
                shard,
                epoch,
            } => {
                if self.live(member, incarnation) {
                    let server = self.members[member].server(member);
                    self.claims.drained(server, shard.0, epoch, self.now);
                    let local = self.local(member);
                    if let Some(m) = self.members[member].machine.as_mut() {
                        m.handle_shard_drained(local, shard, epoch);
                    }
                    self.drive(member);
                }
            }
            Ev::Start { member } => self.start(member),
            Ev::CoordTick => self.coord_tick = None,
            Ev::Fault => self.fault(),
            Ev::FaultsEnd => {
                self.faults_on = false;
                self.line("faults end".into());
                for i in 0..self.members.len() {
                    self.members[i].partitioned_until = self.now;
                    self.members[i].slow_until = self.now;
                    if self.members[i].machine.is_none() {
                        self.at(Duration::from_millis(1), Ev::Start { member: i });
                    }
                }
            }
        }
    }

    fn live(&self, member: usize, incarnation: u32) -> bool {
        let m = &self.members[member];
        m.incarnation == incarnation && m.machine.is_some()
    }

    fn local(&self, member: usize) -> Instant {
        self.members[member].clock.local(self.now)
    }

    fn start(&mut self, i: usize) {
        if self.members[i].machine.is_some() {
            return;
        }
        let mut c = MemberConfig::new(self.members[i].id.clone(), format!("10.0.0.{i}:7878"));
        c.shards = self.cfg.shards;
        c.lease_ttl = self.cfg.lease_ttl;
        c.safety_margin = self.cfg.safety_margin;
        c.drift_ppm = self.cfg.drift_ppm;
        c.client_lease = self.cfg.client_lease;
        c.retry_interval = Duration::from_millis(200);
        let mut m = ShardOwnership::new(c).expect("the simulator's member config is valid");
        if i == 0 && self.cfg.bug == Some(ClusterBug::ServeAfterLeaseLoss) {
            inject(&mut m);
        }
        let member = &mut self.members[i];
        member.incarnation += 1;
        member.outstanding.clear();
        member.machine = Some(m);
        let inc = member.incarnation;
        self.line(format!("m{i}.{inc} starts"));
        let local = self.local(i);
        if let Some(m) = self.members[i].machine.as_mut() {
            m.handle_timeout(local);
        }
        self.drive(i);
    }

    /// The process of member `i` ends (a kill, or the exit after a leave).
    fn stop(&mut self, i: usize, why: &str) {
        let server = self.members[i].server(i);
        self.claims.kill(server, self.now);
        let client = self.members[i].client(i);
        self.coord.cut_watches(client);
        self.members[i].machine = None;
        self.line(format!("m{i}.{} {why}", server.incarnation));
        let back = if self.faults_on {
            self.rng.micros(300_000, 8_000_000)
        } else {
            Duration::from_millis(1)
        };
        self.at(back, Ev::Start { member: i });
    }

    /// Drains member `i`'s outputs, re-arms its timer, and observes it.
    fn drive(&mut self, i: usize) {
        let inc = self.members[i].incarnation;
        let mut left = false;
        loop {
            let Some(m) = self.members[i].machine.as_mut() else {
                return;
            };
            if let Some((id, request)) = m.poll_request() {
                self.stats.requests += 1;
                if self.trace.keeps_text() {
                    let t = self.now;
                    self.trace
                        .note(format!("{t:?} m{i}.{inc} -> {id:?} {request:?}"));
                }
                self.members[i].outstanding.insert(id);
                let lat = self.latency(i);
                self.at(
                    lat,
                    Ev::ToCoord {
                        member: i,
                        incarnation: inc,
                        id,
                        request,
                    },
                );
                let timeout = self.cfg.request_timeout;
                self.at(
                    timeout,
                    Ev::Timeout {
                        member: i,
                        incarnation: inc,
                        id,
                    },
                );
                continue;
            }
            let Some(ev) = m.poll_event() else { break };
            let local = self.local(i);
            match &ev {
                OwnershipEvent::ShardAcquired {
                    shard, writes_from, ..
                } => {
                    if *writes_from > local {
                        self.stats.takeovers += 1;
                    } else {
                        self.stats.clean_handovers += 1;
                    }
                    let _ = shard;
                }
                OwnershipEvent::ShardLost {
                    reason: LossReason::WindowClosed,
                    ..
                } => self.stats.windows_closed += 1,
                OwnershipEvent::DrainShard { shard, epoch } => {
                    let d = self.rng.micros(0, 300_000);
                    self.at(
                        d,
                        Ev::Drained {
                            member: i,
                            incarnation: inc,
                            shard: *shard,
                            epoch: *epoch,
                        },
                    );
                }
                OwnershipEvent::Left => left = true,
                OwnershipEvent::Misconfigured { message } => {
                    panic!("member {i} misconfigured: {message}")
                }
                _ => {}
            }
            self.line(format!("m{i}.{inc} {ev:?}"));
        }
        self.observe(i);
        if left {
            self.stop(i, "left");
            return;
        }
        let member = &mut self.members[i];
        member.timer_gen += 1;
        let generation = member.timer_gen;
        if let Some(t) = member
            .machine
            .as_ref()
            .and_then(ShardOwnership::poll_timeout)
        {
            let real = member
                .clock
                .real(t)
                .max(self.now + Duration::from_micros(1));
            let after = real - self.now;
            self.at(
                after,
                Ev::Timer {
                    member: i,
                    incarnation: inc,
                    generation,
                },
            );
        }
    }

    /// Records what member `i` serves now.
    fn observe(&mut self, i: usize) {
        let local = self.local(i);
        let member = &self.members[i];
        let Some(m) = member.machine.as_ref() else {
            return;
        };
        let server = member.server(i);
        let mut seen = Vec::new();
        for s in 0..self.cfg.shards {
            let serving = match m.shard_placement(local, ShardId(s)) {
                Placement::Local(l) => Some(Serving {
                    epoch: l.epoch,
                    until: member.clock.real(l.serve_until),
                    writes_from: member.clock.real(l.writes_from),
                }),
                _ => None,
            };
            seen.push((s, serving));
        }
        for (s, serving) in seen {
            self.claims.observe(server, s, self.now, serving);
        }
    }

    fn pump_watches(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].machine.is_none() || self.cut(i) {
                continue;
            }
            let client = self.members[i].client(i);
            for (watch, events) in self.coord.poll_watch_events(client) {
                // A stream keeps its order: never before the previous batch.
                let lat = self.latency(i).min(Duration::from_millis(300));
                let at = (self.now + lat).max(self.members[i].watch_delivered);
                self.members[i].watch_delivered = at;
                let inc = self.members[i].incarnation;
                self.at(
                    at - self.now,
                    Ev::Watch {
                        member: i,
                        incarnation: inc,
                        watch,
                        events,
                    },
                );
            }
        }
    }

    fn schedule_coord_tick(&mut self) {
        if let Some(t) = self.coord.next_expiry()
            && self.coord_tick.is_none_or(|s| t < s)
        {
            self.coord_tick = Some(t);
            let after = t - self.now;
            self.at(after, Ev::CoordTick);
        }
    }

    fn fault(&mut self) {
        if !self.faults_on {
            return;
        }
        let live: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].machine.is_some())
            .collect();
        if !live.is_empty() {
            let i = live[self.rng.below(live.len() as u64) as usize];
            let roll = self.rng.below(100);
            if roll < 20 {
                self.stats.kills += 1;
                self.stop(i, "killed");
            } else if roll < 65 {
                let long = self.rng.chance(330);
                let d = if long {
                    self.stats.long_partitions += 1;
                    self.rng
                        .micros(2_500_000, 6_000_000)
                        .max(self.cfg.lease_ttl + Duration::from_millis(100))
                } else {
                    self.rng.micros(100_000, 1_900_000)
                };
                self.stats.partitions += 1;
                self.members[i].partitioned_until = self.now + d;
                let client = self.members[i].client(i);
                let inc = self.members[i].incarnation;
                for watch in self.coord.cut_watches(client) {
                    let detect = self.cfg.request_timeout;
                    self.at(
                        detect,
                        Ev::WatchEnded {
                            member: i,
                            incarnation: inc,
                            watch,
                        },
                    );
                }
                self.line(format!(
                    "m{i}.{inc} partitioned from the coordinator for {d:?}"
                ));
            } else if roll < 80 {
                self.stats.leaves += 1;
                let inc = self.members[i].incarnation;
                self.line(format!("m{i}.{inc} leaves"));
                let local = self.local(i);
                if let Some(m) = self.members[i].machine.as_mut() {
                    m.leave(local);
                }
                self.drive(i);
            } else {
                let d = self.rng.micros(1_000_000, 5_000_000);
                self.members[i].slow_until = self.now + d;
                self.line(format!("m{i} slow links for {d:?}"));
            }
        }
        let next = self.rng.micros(300_000, 5_000_000);
        self.at(next, Ev::Fault);
    }

    fn finish(mut self, seed: u64) -> ClusterReport {
        for i in 0..self.members.len() {
            self.observe(i);
        }
        let mut violations = Vec::new();
        for s in 0..self.cfg.shards {
            let local = self.local_owners(ShardId(s));
            if local.len() != 1 {
                violations.push(Violation::new(
                    "cluster-liveness",
                    None,
                    format!(
                        "shard {s} is served by {local:?} (member indexes) {:?} after faults stopped",
                        self.cfg.liveness_bound
                    ),
                    Vec::new(),
                ));
            }
        }
        self.stats.virtual_time = self.now - Instant::ZERO;
        let claims = self.claims.count();
        violations.extend(self.claims.check(self.now, self.cfg.client_lease));
        ClusterReport {
            seed,
            violations,
            claims,
            trace_hash: self.trace.hash(),
            trace: self.trace.lines().to_vec(),
            stats: self.stats,
        }
    }

    fn local_owners(&self, s: ShardId) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| {
                let local = self.local(i);
                self.members[i]
                    .machine
                    .as_ref()
                    .is_some_and(|m| matches!(m.shard_placement(local, s), Placement::Local(_)))
            })
            .collect()
    }
}

#[cfg(feature = "bug-injection")]
fn inject(m: &mut ShardOwnership) {
    m.inject_bug(rmmap_core::cluster::OwnershipBug::ServeAfterLeaseLoss);
}

#[cfg(not(feature = "bug-injection"))]
fn inject(_: &mut ShardOwnership) {
    panic!("--bug needs the feature: cargo run -p rmmap-sim --release --features bug-injection");
}
