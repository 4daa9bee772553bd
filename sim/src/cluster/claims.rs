//! Serving intervals ("claims") of shards, in real time, and the checks on
//! them: no two at once, and a grace between an unclean end and the next
//! owner's writes.

use std::collections::BTreeMap;
use std::time::Duration;

use rmmap_core::Instant;

use crate::checker::Violation;

/// Who serves: a member and its incarnation (a restart is a new process).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Server {
    pub(crate) member: usize,
    pub(crate) incarnation: u32,
}

/// One member serving one shard over `[start, end)`.
#[derive(Clone, Debug)]
struct Claim {
    server: Server,
    epoch: i64,
    start: Instant,
    end: Instant,
    writes_from: Instant,
    clean: bool,
}

/// Every claim of a run, per shard.
#[derive(Default)]
pub(crate) struct Claims {
    closed: BTreeMap<u32, Vec<Claim>>,
    open: BTreeMap<(Server, u32), Claim>,
    count: u64,
}

/// What a member said about a shard when observed.
pub(crate) struct Serving {
    pub(crate) epoch: i64,
    /// The real instant its clock reaches the promised `serve_until`.
    pub(crate) until: Instant,
    /// The real instant its clock reaches `writes_from`.
    pub(crate) writes_from: Instant,
}

impl Claims {
    /// Records what `server` answers for `shard` at real time `now`.
    pub(crate) fn observe(
        &mut self,
        server: Server,
        shard: u32,
        now: Instant,
        serving: Option<Serving>,
    ) {
        let key = (server, shard);
        match serving {
            Some(s) => {
                if let Some(c) = self.open.get_mut(&key) {
                    if c.epoch == s.epoch {
                        // Serving now, and promised until `until`.
                        c.end = c.end.max(s.until).max(now + Duration::from_nanos(1));
                        return;
                    }
                    self.close(server, shard, now, false);
                }
                self.count += 1;
                self.open.insert(
                    key,
                    Claim {
                        server,
                        epoch: s.epoch,
                        start: now,
                        end: s.until.max(now + Duration::from_nanos(1)),
                        writes_from: s.writes_from,
                        clean: false,
                    },
                );
            }
            None => self.close(server, shard, now, false),
        }
    }

    /// `server` stopped serving `shard` at `now`; `clean` when it was drained.
    pub(crate) fn close(&mut self, server: Server, shard: u32, now: Instant, clean: bool) {
        if let Some(mut c) = self.open.remove(&(server, shard)) {
            c.end = c.end.min(now);
            c.clean = clean;
            self.closed.entry(shard).or_default().push(c);
        }
    }

    /// The server of `server` finished draining `shard` at `epoch`: it
    /// serves it no more, and the next owner needs no grace.
    pub(crate) fn drained(&mut self, server: Server, shard: u32, epoch: i64, now: Instant) {
        if self
            .open
            .get(&(server, shard))
            .is_some_and(|c| c.epoch == epoch)
        {
            self.close(server, shard, now, true);
        }
    }

    /// `server` died at `now`.
    pub(crate) fn kill(&mut self, server: Server, now: Instant) {
        let shards: Vec<u32> = self
            .open
            .keys()
            .filter(|(s, _)| *s == server)
            .map(|(_, shard)| *shard)
            .collect();
        for shard in shards {
            self.close(server, shard, now, false);
        }
    }

    /// Claims seen.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The checks, once the run is over (open claims end at `now`).
    pub(crate) fn check(mut self, now: Instant, client_lease: Duration) -> Vec<Violation> {
        let open: Vec<(Server, u32)> = self.open.keys().copied().collect();
        for (server, shard) in open {
            self.close(server, shard, now, false);
        }
        let mut out = Vec::new();
        for (shard, claims) in &mut self.closed {
            claims.sort_by_key(|c| (c.start, c.end));
            for (i, a) in claims.iter().enumerate() {
                for b in &claims[i + 1..] {
                    if b.start >= a.end {
                        continue;
                    }
                    if a.server != b.server {
                        out.push(Violation::new(
                            "cluster-overlap",
                            None,
                            format!(
                                "shard {shard} served by member {} (incarnation {}, epoch {}) over \
                                 {:?}..{:?} and by member {} (incarnation {}, epoch {}) from {:?}",
                                a.server.member,
                                a.server.incarnation,
                                a.epoch,
                                a.start,
                                a.end,
                                b.server.member,
                                b.server.incarnation,
                                b.epoch,
                                b.start
                            ),
                            Vec::new(),
                        ));
                    }
                }
            }
            for (i, b) in claims.iter().enumerate() {
                let before = claims[..i]
                    .iter()
                    .filter(|a| a.end <= b.start)
                    .max_by_key(|a| a.end);
                if let Some(a) = before
                    && !a.clean
                    && b.writes_from < a.end + client_lease
                {
                    out.push(Violation::new(
                        "cluster-grace",
                        None,
                        format!(
                            "shard {shard}: member {} stopped serving at {:?} without a handover \
                             and member {} (epoch {}) allowed writes from {:?}, before one client \
                             lease ({client_lease:?}) had passed",
                            a.server.member, a.end, b.server.member, b.epoch, b.writes_from
                        ),
                        Vec::new(),
                    ));
                }
            }
        }
        out
    }
}
