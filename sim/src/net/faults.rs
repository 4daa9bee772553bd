//! Fault schedules, and the state of each server–client link.
//!
//! turmoil's link controls do not compose (a `repair` does not release held
//! messages; a one-way partition must not be combined with a hold), so the
//! controller keeps one mode per link and moves turmoil from the mode it
//! applied to the mode it wants: undo the old one, apply the new one. A
//! silent crash of either end overrides a link's own fault while it lasts.

use std::collections::BTreeMap;
use std::time::Duration;

use turmoil::Sim;

use super::config::{Dir, Fault, ScriptOp};
use crate::rng::SimRng;

/// Something the controller does at a moment of the run.
#[derive(Clone, Debug)]
pub(crate) enum Timed {
    /// A fault begins.
    Start(Fault),
    /// A link fault ends, if it is still the link's newest (`generation`).
    EndLink {
        /// The client host.
        client: usize,
        /// Which fault.
        generation: u64,
    },
    /// A crashed client host boots again.
    BootClient(usize),
    /// The crashed server boots again.
    BootServer,
    /// A scenario operation is posted.
    Op {
        /// The client host.
        client: usize,
        /// What.
        op: ScriptOp,
        /// Its index in the scenario.
        script: usize,
    },
}

/// Timed actions in order (ties keep the order they were added in).
#[derive(Default)]
pub(crate) struct Schedule {
    events: BTreeMap<(Duration, u64), Timed>,
    added: u64,
}

impl Schedule {
    pub(crate) fn push(&mut self, at: Duration, t: Timed) {
        self.added += 1;
        self.events.insert((at, self.added), t);
    }

    /// The next action due by `now`.
    pub(crate) fn pop_due(&mut self, now: Duration) -> Option<Timed> {
        let (&key, _) = self.events.first_key_value()?;
        (key.0 <= now).then(|| self.events.remove(&key).expect("present"))
    }

    /// Drops every action not yet due (faults stop).
    pub(crate) fn clear(&mut self) -> Vec<Timed> {
        std::mem::take(&mut self.events).into_values().collect()
    }
}

/// What a link does now.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Up,
    Down,
    Drop(Dir),
    Held,
}

/// Every server–client link.
pub(crate) struct Links {
    own: Vec<(Mode, u64)>,
    applied: Vec<Mode>,
    client_silent: Vec<bool>,
    server_silent: bool,
    generation: u64,
}

fn client_name(c: usize) -> String {
    format!("c{c}")
}

impl Links {
    pub(crate) fn new(clients: usize) -> Self {
        Links {
            own: vec![(Mode::Up, 0); clients],
            applied: vec![Mode::Up; clients],
            client_silent: vec![false; clients],
            server_silent: false,
            generation: 0,
        }
    }

    /// Gives client `c`'s link its own fault; returns the fault's generation.
    pub(crate) fn set(&mut self, sim: &mut Sim<'_>, c: usize, mode: Mode) -> u64 {
        self.generation += 1;
        self.own[c] = (mode, self.generation);
        self.sync(sim, c);
        self.generation
    }

    /// Ends client `c`'s fault `generation`, unless a newer one replaced it.
    pub(crate) fn end(&mut self, sim: &mut Sim<'_>, c: usize, generation: u64) -> bool {
        if self.own[c].1 != generation {
            return false;
        }
        self.own[c].0 = Mode::Up;
        self.sync(sim, c);
        true
    }

    pub(crate) fn set_client_silent(&mut self, sim: &mut Sim<'_>, c: usize, silent: bool) {
        self.client_silent[c] = silent;
        self.sync(sim, c);
    }

    pub(crate) fn set_server_silent(&mut self, sim: &mut Sim<'_>, silent: bool) {
        self.server_silent = silent;
        for c in 0..self.own.len() {
            self.sync(sim, c);
        }
    }

    /// Every link up, every silence over.
    pub(crate) fn heal(&mut self, sim: &mut Sim<'_>) {
        self.server_silent = false;
        for c in 0..self.own.len() {
            self.own[c].0 = Mode::Up;
            self.client_silent[c] = false;
            self.sync(sim, c);
        }
    }

    fn sync(&mut self, sim: &mut Sim<'_>, c: usize) {
        let want = if self.server_silent || self.client_silent[c] {
            Mode::Down
        } else {
            self.own[c].0
        };
        let had = self.applied[c];
        if want == had {
            return;
        }
        let (s, n) = ("server", client_name(c));
        match had {
            Mode::Up => {}
            Mode::Down => sim.repair(s, n.as_str()),
            Mode::Drop(Dir::ToClient) => sim.repair_oneway(s, n.as_str()),
            Mode::Drop(Dir::ToServer) => sim.repair_oneway(n.as_str(), s),
            Mode::Held => sim.release(s, n.as_str()),
        }
        match want {
            Mode::Up => {}
            Mode::Down => sim.partition(s, n.as_str()),
            Mode::Drop(Dir::ToClient) => sim.partition_oneway(s, n.as_str()),
            Mode::Drop(Dir::ToServer) => sim.partition_oneway(n.as_str(), s),
            Mode::Held => sim.hold(s, n.as_str()),
        }
        self.applied[c] = want;
    }
}

/// A duration for a link fault: mostly shorter than the lease, sometimes
/// longer (so the server gives the client's pages away).
fn fault_length(rng: &mut SimRng, lease: Duration) -> Duration {
    let l = lease.as_micros() as u64;
    match rng.below(10) {
        0..=4 => rng.micros(20_000, l / 2),
        5..=7 => rng.micros(l / 2, l * 3 / 2),
        _ => rng.micros(l * 3 / 2, l * 3),
    }
}

/// A random fault schedule over `span`: per client a sequence of link
/// faults (partitions, one-way partitions, holds, flaps) with gaps, latency
/// changes, at most one client crash and up to two server restarts.
pub(crate) fn random_faults(
    rng: &mut SimRng,
    clients: usize,
    span: Duration,
    lease: Duration,
) -> Vec<(Duration, Fault)> {
    let mut out = Vec::new();
    let span_us = span.as_micros() as u64;
    for client in 0..clients {
        let mut t = rng.micros(0, 1_000_000);
        loop {
            t += rng.micros(200_000, 3_000_000);
            if t.as_micros() as u64 >= span_us {
                break;
            }
            let duration = fault_length(rng, lease);
            let fault = match rng.below(100) {
                0..=24 => Fault::Partition { client, duration },
                25..=44 => Fault::OneWay {
                    client,
                    dir: Dir::ToClient,
                    duration,
                },
                45..=54 => Fault::OneWay {
                    client,
                    dir: Dir::ToServer,
                    duration,
                },
                55..=79 => Fault::Hold { client, duration },
                80..=89 => Fault::Flap {
                    client,
                    period: rng.micros(5_000, 150_000),
                    times: 2 + rng.below(5) as u32,
                },
                _ => {
                    let ms = [1, 5, 40, 150, 400][rng.below(5) as usize];
                    out.push((
                        t,
                        Fault::Latency {
                            client,
                            latency: Duration::from_millis(ms),
                        },
                    ));
                    continue;
                }
            };
            let busy = match &fault {
                Fault::Flap { period, times, .. } => *period * 2 * *times,
                _ => duration,
            };
            out.push((t, fault));
            t += busy;
        }
    }
    if rng.chance(600) {
        let at = rng.micros(500_000, span_us * 9 / 10);
        out.push((
            at,
            Fault::CrashClient {
                client: rng.below(clients as u64) as usize,
                down: rng.micros(100_000, 3_000_000),
                silent: rng.chance(500),
            },
        ));
    }
    let restarts = [0, 1, 1, 2][rng.below(4) as usize];
    for _ in 0..restarts {
        let at = rng.micros(1_000_000, span_us * 9 / 10);
        out.push((
            at,
            Fault::RestartServer {
                down: rng.micros(20_000, 2_000_000),
                lose_unsynced: rng.chance(700),
            },
        ));
    }
    out.sort_by_key(|(t, _)| *t);
    out
}
