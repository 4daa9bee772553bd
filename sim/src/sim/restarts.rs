//! Server restarts: a kill (the store may lose what was not synced), and a
//! graceful shutdown driven in the simulator's own steps, sometimes begun
//! while the clients contend for one file's pages and one of them answers
//! its revocations late.

use std::collections::BTreeMap;

use rmmap_core::harness::Direction;

use crate::history::{Cell, Restart, cell_values, torn_halves};
use crate::workload::{Layout, Shape};

use super::{Sim, SlotState};

impl Sim<'_> {
    /// Kills the server (with a power loss when `crash`) and starts a new
    /// one over the same store.
    pub(super) fn restart_server(&mut self, crash: bool) {
        let now = self.cluster.now;
        self.trace
            .line(format!("{now:?} fault restart server crash={crash}"));
        self.stats.restarts += 1;
        if crash {
            self.stats.crash_restarts += 1;
        }
        self.cluster.restart_server(crash);
        self.new_server_run(crash, false);
    }

    /// Shuts the server down gracefully, then starts a new one. The
    /// shutdown runs through [`Sim::advance_until`], step by step, so every
    /// completion and event on the way is recorded in its real-time order;
    /// if it has not finished within three leases (a client that never
    /// answers, a disk that keeps failing), the server is killed.
    pub(super) fn graceful_restart(&mut self, contended: bool) {
        if contended {
            self.contend();
        }
        let now = self.cluster.now;
        self.trace
            .line(format!("{now:?} fault graceful shutdown begins"));
        self.stats.graceful_restarts += 1;
        self.stopping = true;
        self.cluster.server.begin_shutdown(now);
        self.cluster.flush();
        self.after_step();
        let done = self.advance_until(self.cfg.lease * 3, |s| s.cluster.server.is_shut_down());
        let now = self.cluster.now;
        if !done {
            self.stats.shutdowns_cut_short += 1;
        }
        self.trace.line(format!(
            "{now:?} shutdown {}; a new server starts",
            if done { "complete" } else { "not done: killed" }
        ));
        self.stopping = false;
        self.cluster.restart_server(false);
        self.new_server_run(false, true);
    }

    /// Clients contend for the pages of one file: one of them (the late
    /// one) writes first, then stops answering for a while (its frames to
    /// the server are held, so its answers to revocations come late and
    /// together); the others write across the same pages, so that their
    /// exclusive fetches overlap and queue behind one another's page locks.
    ///
    /// Half the time the shapes are the ones that let a late answer meet a
    /// shutdown's recall of the same page (issue 18): the late client owns
    /// the upper page of a boundary, a second client writes the lower page
    /// (on a slow disk its fetch holds that page's lock, reading, across the
    /// beginning of the shutdown), a third writes across the boundary (its
    /// fetch queues behind the second, and recalls the upper page from the
    /// late client only after the shutdown has recalled it too).
    fn contend(&mut self) {
        let live = self.live();
        if live.len() < 2 {
            return;
        }
        self.stats.contended_shutdowns += 1;
        let files = self.layout.pages.len();
        // Mostly the smallest file: the fewest pages, the most overlap.
        let file = if self.rng.chance(700) {
            (0..files)
                .min_by_key(|f| self.layout.pages[*f])
                .expect("files")
        } else {
            self.rng.below(files as u64) as usize
        };
        let mut order = live.clone();
        for k in (1..order.len()).rev() {
            order.swap(k, self.rng.below(k as u64 + 1) as usize);
        }
        let pages = self.layout.pages[file];
        let low = self.rng.below(pages.max(2) - 1);
        let shaped = self.rng.chance(500);
        let slow = self.cfg.disk_faults && self.rng.chance(500);
        let now = self.cluster.now;
        self.trace.line(format!(
            "{now:?} fault contention on f{file} pages {low}-{}, late c{}, shaped={shaped} slow disk={slow}",
            low + 1,
            order[0]
        ));
        if slow {
            let mut disk = self.disk.borrow_mut();
            disk.slow_pm = 1000;
            disk.slow_max_us = if self.cfg.member {
                super::member::MEMBER_MARGIN.as_micros() as u64 * 4 / 5
            } else {
                400_000
            };
        }
        let shapes = [
            Shape::PageStart(low + 1),
            Shape::PageStart(low),
            Shape::Across(low),
        ];
        let shape = |sim: &mut Self, k: usize| {
            (shaped && k < shapes.len()).then(|| {
                if k == 0 && sim.rng.chance(500) {
                    Shape::WholePage(low + 1)
                } else {
                    shapes[k]
                }
            })
        };
        let s = shape(self, 0);
        self.contended_write(order[0], file, s);
        let dt = self.rng.micros(0, 30_000);
        self.advance(dt);
        let lease = self.cfg.lease.as_micros() as u64;
        let d = self.rng.micros(10_000, lease * 3 / 2);
        self.hold(order[0], Direction::ToServer, d);
        for (k, &i) in order.iter().enumerate().skip(1) {
            let s = shape(self, k);
            self.contended_write(i, file, s);
            if !shaped && self.rng.chance(500) {
                self.contended_write(i, file, None);
            }
        }
        let dt = self.rng.micros(0, 60_000);
        self.advance(dt);
    }

    /// A write by client `i` on pages of `file` that others write too, of
    /// `shape` (or a random one).
    fn contended_write(&mut self, i: usize, file: usize, shape: Option<Shape>) {
        let c = &self.clients[i];
        if c.crashed
            || c.slots[file].state != SlotState::Ready
            || c.outstanding > self.cfg.max_outstanding
        {
            return;
        }
        self.clients[i].next_seq += 1;
        let seq = self.clients[i].next_seq;
        let planned = match shape {
            Some(s) => self.layout.plan_shaped_write(i, seq, file, s),
            None => self
                .layout
                .plan_contended_write(&mut self.rng, i, seq, file),
        };
        self.issue_planned(i, planned);
    }

    /// A new server run begins with what the store holds now.
    pub(super) fn new_server_run(&mut self, crash: bool, graceful: bool) {
        let now = self.cluster.now;
        self.segment += 1;
        let (disk, durable) = self.store_images();
        self.stats.torn_cells +=
            disk.values().filter(|v| torn_halves(**v).is_some()).count() as u64;
        let seq = self.next_seq();
        self.history.restarts.push(Restart {
            seq,
            at: now,
            crash,
            graceful,
            disk,
            durable,
        });
        self.inject_bugs();
        self.after_step();
    }

    /// What the store holds now, written and durable, cell by cell.
    fn store_images(&self) -> (BTreeMap<Cell, u64>, BTreeMap<Cell, u64>) {
        let store = &self.cluster.store;
        let disk = cell_values(&self.history.cells, |f| store.contents(&Layout::path(f)));
        let durable = cell_values(&self.history.cells, |f| {
            store.durable_contents(&Layout::path(f))
        });
        (disk, durable)
    }

    /// The last run begins from what the store holds now (writes in flight
    /// at its start have landed).
    pub(super) fn retake_restart_image(&mut self) {
        let (disk, durable) = self.store_images();
        if let Some(r) = self.history.restarts.last_mut() {
            r.disk = disk;
            r.durable = durable;
        }
    }

    /// What the disk's durable image holds, for the cells of `file`.
    pub(super) fn durable_image(&self, file: usize) -> BTreeMap<Cell, u64> {
        let cells: Vec<_> = self
            .history
            .cells
            .iter()
            .filter(|c| c.file == file)
            .copied()
            .collect();
        cell_values(&cells, |f| {
            self.cluster.store.durable_contents(&Layout::path(f))
        })
    }
}
