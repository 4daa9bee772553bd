//! The ownership machine against the in-memory coordinator, with no network
//! delay: what each guarantee of docs/CLUSTER.md looks like from the server.

use std::time::Duration;

use super::mem::MemCoordinator;
use super::*;
use crate::Instant;

const SHARDS: u32 = 8;
const TICK: Duration = Duration::from_millis(10);

struct Node {
    m: ShardOwnership,
    alive: bool,
    cut: bool,
    events: Vec<(Instant, OwnershipEvent)>,
}

/// Members and a coordinator, stepped together in virtual time; after every
/// tick no shard may be `Local` at two members.
struct Bench {
    coord: MemCoordinator,
    nodes: Vec<Node>,
    now: Instant,
    overlaps: Vec<String>,
}

fn config(id: &str) -> ClusterConfig {
    ClusterConfig {
        shards: SHARDS,
        ..ClusterConfig::new(id, format!("{id}.example:7878"))
    }
}

impl Bench {
    fn new(ids: &[&str]) -> Self {
        let mut b = Bench {
            coord: MemCoordinator::new(),
            nodes: Vec::new(),
            now: Instant::ZERO,
            overlaps: Vec::new(),
        };
        for id in ids {
            b.add(config(id));
        }
        b
    }

    fn add(&mut self, c: ClusterConfig) -> usize {
        self.add_cut(c, false)
    }

    fn add_cut(&mut self, c: ClusterConfig, cut: bool) -> usize {
        self.nodes.push(Node {
            m: ShardOwnership::new(c).unwrap(),
            alive: true,
            cut,
            events: Vec::new(),
        });
        let i = self.nodes.len() - 1;
        self.nodes[i].m.handle_timeout(self.now);
        self.settle();
        i
    }

    fn settle(&mut self) {
        let now = self.now;
        loop {
            let mut moved = false;
            for (i, n) in self.nodes.iter_mut().enumerate().filter(|(_, n)| n.alive) {
                while let Some((id, req)) = n.m.poll_request() {
                    let resp = if n.cut {
                        CoordResponse::Failed(CoordError::Unavailable("cut".into()))
                    } else {
                        self.coord.execute(now, i as u64, id, req)
                    };
                    n.m.handle_response(now, id, resp);
                    moved = true;
                }
                if !n.cut {
                    for (w, evs) in self.coord.poll_watch_events(i as u64) {
                        n.m.handle_watch_events(now, w, &evs);
                        moved = true;
                    }
                }
                while let Some(ev) = n.m.poll_event() {
                    if let OwnershipEvent::DrainShard { shard, epoch } = ev {
                        n.m.handle_shard_drained(now, shard, epoch);
                    }
                    n.events.push((now, ev));
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += TICK;
            self.coord.expire(self.now);
            for n in self.nodes.iter_mut().filter(|n| n.alive) {
                n.m.handle_timeout(self.now);
            }
            self.settle();
            self.check_overlap();
        }
    }

    fn check_overlap(&mut self) {
        for s in (0..SHARDS).map(ShardId) {
            let local: Vec<usize> = self.serving(s);
            if local.len() > 1 {
                self.overlaps
                    .push(format!("{:?}: shard {s} at {local:?}", self.now));
            }
        }
    }

    fn serving(&self, s: ShardId) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive && self.local(i, s).is_some())
            .collect()
    }

    fn local(&self, i: usize, s: ShardId) -> Option<LocalShard> {
        match self.nodes[i].m.shard_placement(self.now, s) {
            Placement::Local(l) => Some(l),
            _ => None,
        }
    }

    fn owned_by(&self, i: usize) -> Vec<ShardId> {
        (0..SHARDS)
            .map(ShardId)
            .filter(|&s| self.local(i, s).is_some())
            .collect()
    }

    fn cut(&mut self, i: usize) {
        self.nodes[i].cut = true;
        for w in self.coord.cut_watches(i as u64) {
            self.nodes[i].m.handle_watch_ended(self.now, w);
        }
    }

    fn acquired(&self, i: usize) -> Vec<(Instant, ShardId, Instant)> {
        self.nodes[i]
            .events
            .iter()
            .filter_map(|(t, e)| match e {
                OwnershipEvent::ShardAcquired {
                    shard, writes_from, ..
                } => Some((*t, *shard, *writes_from)),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn one_member_takes_every_shard_and_waits_the_grace_before_writes_on_a_fresh_cluster() {
    let mut b = Bench::new(&["a"]);
    b.run_for(Duration::from_secs(1));
    assert_eq!(b.owned_by(0).len(), SHARDS as usize);
    let grace = b.nodes[0].m.config().takeover_grace();
    for (t, _, writes_from) in b.acquired(0) {
        assert_eq!(
            writes_from,
            t + grace,
            "an absent key may hide a dead owner"
        );
    }
    assert_eq!(b.coord.range("/rmmap/config").1[0].value, "shards=8");
    assert!(b.overlaps.is_empty(), "{:?}", b.overlaps);
}

#[test]
fn three_members_split_the_shards_and_point_at_the_owner() {
    let mut b = Bench::new(&["a", "b", "c"]);
    b.run_for(Duration::from_secs(20));
    for s in (0..SHARDS).map(ShardId) {
        let owners = b.serving(s);
        assert_eq!(owners.len(), 1, "shard {s}: {owners:?}");
        let owner = owners[0];
        for i in (0..3).filter(|&i| i != owner) {
            match b.nodes[i].m.shard_placement(b.now, s) {
                Placement::Remote { address, .. } => {
                    assert_eq!(address, b.nodes[owner].m.config().advertise)
                }
                other => panic!("member {i} sees shard {s} as {other:?}"),
            }
        }
    }
    assert!(
        (0..3).all(|i| !b.owned_by(i).is_empty()),
        "some member got nothing"
    );
    assert!(b.overlaps.is_empty(), "{:?}", b.overlaps);
}

#[test]
fn a_member_cut_off_from_etcd_stops_serving_before_its_shards_can_be_taken() {
    let mut b = Bench::new(&["a", "b", "c"]);
    b.run_for(Duration::from_secs(15));
    let victim = 0;
    let shards = b.owned_by(victim);
    assert!(!shards.is_empty());
    let lease = b.nodes[victim].m.lease().unwrap();
    let etcd_expiry = b.coord.lease_expiry(lease).unwrap();
    b.cut(victim);
    let mut stopped = None;
    while b.now < etcd_expiry + Duration::from_secs(2) {
        b.run_for(TICK);
        if stopped.is_none() && b.owned_by(victim).is_empty() {
            stopped = Some(b.now);
        }
    }
    let stopped = stopped.expect("the cut member never stopped serving");
    // At least the margin before etcd could expire the lease (one tick of slack).
    let margin = b.nodes[victim].m.config().safety_margin;
    assert!(
        stopped + margin <= etcd_expiry + TICK,
        "stopped {stopped:?}, expiry {etcd_expiry:?}"
    );
    let lost = b.nodes[victim].events.iter().any(|(_, e)| {
        matches!(
            e,
            OwnershipEvent::ShardLost {
                reason: LossReason::WindowClosed,
                ..
            }
        )
    });
    assert!(lost, "the server was not told to stop");
    b.run_for(Duration::from_secs(1));
    let grace = b.nodes[1].m.config().takeover_grace();
    for s in shards {
        let owner = b.serving(s);
        assert_eq!(owner.len(), 1, "shard {s} has no new owner: {owner:?}");
        let (t, _, writes_from) = *b.acquired(owner[0]).iter().rfind(|a| a.1 == s).unwrap();
        assert!(t >= etcd_expiry, "taken at {t:?} before the lease expired");
        assert!(writes_from >= stopped + b.nodes[1].m.config().client_lease);
        assert_eq!(writes_from, t + grace);
    }
    assert!(b.overlaps.is_empty(), "{:?}", b.overlaps);
}

#[test]
fn a_planned_leave_hands_every_shard_over_without_a_grace() {
    let mut b = Bench::new(&["a", "b", "c"]);
    b.run_for(Duration::from_secs(15));
    let shards = b.owned_by(2);
    assert!(!shards.is_empty());
    let t0 = b.now;
    b.nodes[2].m.leave(b.now);
    b.settle();
    b.run_for(Duration::from_millis(200));
    assert!(
        b.nodes[2]
            .events
            .iter()
            .any(|(_, e)| *e == OwnershipEvent::Left)
    );
    assert!(b.owned_by(2).is_empty());
    for s in shards {
        let owner = b.serving(s);
        assert_eq!(owner.len(), 1, "shard {s}: {owner:?}");
        let (t, _, writes_from) = *b.acquired(owner[0]).iter().rfind(|a| a.1 == s).unwrap();
        assert!(
            t >= t0 && writes_from == t,
            "a clean handover needs no grace"
        );
    }
    assert!(b.coord.range("/rmmap/members/c").1.is_empty());
    assert!(b.overlaps.is_empty(), "{:?}", b.overlaps);
}

#[test]
fn a_joining_member_gets_its_share_cleanly() {
    let mut b = Bench::new(&["a", "b"]);
    b.run_for(Duration::from_secs(15));
    let t0 = b.now;
    let c = b.add(config("c"));
    b.run_for(Duration::from_secs(1));
    let got = b.acquired(c);
    assert!(!got.is_empty(), "the newcomer got no shard");
    for (t, s, writes_from) in got {
        assert!(t >= t0);
        assert_eq!(writes_from, t, "shard {s} came with a grace");
    }
    assert!(b.overlaps.is_empty(), "{:?}", b.overlaps);
}

#[test]
fn a_second_process_with_a_live_id_waits_for_the_first_to_go() {
    let mut b = Bench::new(&["a"]);
    b.run_for(Duration::from_secs(2));
    let twin = b.add(ClusterConfig {
        advertise: "elsewhere:1".into(),
        ..config("a")
    });
    b.run_for(Duration::from_secs(3));
    assert!(b.owned_by(twin).is_empty());
    assert!(
        !b.nodes[twin]
            .events
            .iter()
            .any(|(_, e)| matches!(e, OwnershipEvent::Registered { .. }))
    );
    b.nodes[0].alive = false; // killed
    b.run_for(Duration::from_secs(8));
    assert_eq!(b.owned_by(twin).len(), SHARDS as usize);
}

#[test]
fn a_member_with_another_shard_count_serves_nothing() {
    let mut b = Bench::new(&["a"]);
    b.run_for(Duration::from_secs(1));
    let odd = b.add(ClusterConfig {
        shards: 16,
        ..config("b")
    });
    b.run_for(Duration::from_secs(2));
    assert!(
        b.nodes[odd]
            .events
            .iter()
            .any(|(_, e)| matches!(e, OwnershipEvent::Misconfigured { .. }))
    );
    assert!(b.nodes[odd].m.held_shards().next().is_none());
    assert!(b.coord.range("/rmmap/members/b").1.is_empty());
}

#[test]
fn a_lease_revoked_behind_the_members_back_stops_it_at_once_and_it_comes_back() {
    let mut b = Bench::new(&["a"]);
    b.run_for(Duration::from_secs(2));
    let lease = b.nodes[0].m.lease().unwrap();
    let epochs: Vec<(ShardId, i64)> = b.nodes[0].m.held_shards().collect();
    let now = b.now;
    b.coord.execute(
        now,
        99,
        CoordRequestId(1),
        CoordRequest::RevokeLease { lease },
    );
    b.run_for(TICK);
    // Within a tick (the watch shows the member key gone): every shard lost,
    // and taken again under a new lease, with new epochs and a grace.
    for (s, epoch) in epochs {
        let lost = b.nodes[0].events.iter().any(|(_, e)| {
            matches!(e, OwnershipEvent::ShardLost { shard, epoch: e, .. } if *shard == s && *e == epoch)
        });
        assert!(lost, "shard {s} was not reported lost");
        let l = b.local(0, s).expect("did not come back");
        assert!(l.epoch > epoch);
        assert!(l.writes_from > b.now, "no grace after an unclean loss");
    }
    assert_ne!(b.nodes[0].m.lease(), Some(lease));
    assert!(b.overlaps.is_empty(), "{:?}", b.overlaps);
}

#[test]
fn the_overlap_check_catches_a_member_serving_after_its_lease_is_lost() {
    let mut b = Bench::new(&["a", "b"]);
    b.nodes[0].m.inject_bug(OwnershipBug::ServeAfterLeaseLoss);
    b.run_for(Duration::from_secs(15));
    b.cut(0);
    b.run_for(Duration::from_secs(10));
    assert!(
        !b.overlaps.is_empty(),
        "a member serving without a lease went unnoticed"
    );
}

#[test]
fn every_request_is_answered_and_a_silent_coordinator_only_delays() {
    // The coordinator unreachable from the start: no lease, nothing served,
    // requests retried at the retry interval rather than in a busy loop.
    let mut b = Bench::new(&[]);
    let i = b.add_cut(config("a"), true);
    b.run_for(Duration::from_secs(2));
    assert!(b.owned_by(i).is_empty());
    let t = b.nodes[i].m.poll_timeout().unwrap();
    assert!(t > b.now, "a timer in the past would spin the adapter");
    b.nodes[i].cut = false;
    b.run_for(Duration::from_secs(1));
    assert_eq!(b.owned_by(i).len(), SHARDS as usize);
}
