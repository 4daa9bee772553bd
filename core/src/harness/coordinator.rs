//! The cluster's coordinator in the harness: an in-memory etcd
//! ([`MemCoordinator`]) the server talks to when it is a cluster member,
//! other members as bare ownership machines (they own shards and hand them
//! over, without a server of their own), and a switch that cuts the server
//! off from the coordinator. Requests are answered at once, in virtual time.

use crate::Instant;
use crate::cluster::mem::{ClientId, MemCoordinator};
use crate::cluster::{
    ClusterConfig, CoordError, CoordRequest, CoordRequestId, CoordResponse, OwnershipEvent,
    ShardOwnership,
};

use super::Cluster;

/// The server's client id at the coordinator.
const SERVER: ClientId = 1;

/// The coordinator of a harness whose server is a cluster member.
pub struct Coordination {
    /// The coordinator.
    pub mem: MemCoordinator,
    /// The server cannot reach the coordinator: its requests fail and its
    /// watches end (see [`Cluster::cut_coordinator`]).
    cut: bool,
    /// Other members: ownership machines only (a drain finishes at once).
    pub others: Vec<ShardOwnership>,
    /// What the server's shard ownership reported, in order, for the test
    /// to take.
    pub events: Vec<OwnershipEvent>,
}

impl Coordination {
    pub(super) fn new() -> Self {
        Coordination {
            mem: MemCoordinator::new(),
            cut: false,
            others: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The server died: its watches end with its connection.
    pub(super) fn forget_server(&mut self) {
        self.mem.cut_watches(SERVER);
    }

    /// The next moment a lease expires or another member has work.
    pub(super) fn next_time(&self) -> Option<Instant> {
        self.others
            .iter()
            .filter_map(|m| m.poll_timeout())
            .chain(self.mem.next_expiry())
            .min()
    }
}

impl Cluster {
    /// Adds a member that owns shards but serves nothing (a drain it is
    /// asked for finishes at once). Returns its index in `others`.
    pub fn add_member(&mut self, config: ClusterConfig) -> usize {
        let mut m = ShardOwnership::new(config).expect("a valid member config");
        m.handle_timeout(self.now);
        let c = self
            .coordination
            .as_mut()
            .expect("the server is a cluster member");
        c.others.push(m);
        let i = c.others.len() - 1;
        self.flush();
        i
    }

    /// Cuts the server off from the coordinator (`true`), or lets it reach
    /// it again. Its leases run out at the coordinator meanwhile.
    pub fn cut_coordinator(&mut self, cut: bool) {
        let now = self.now;
        let Some(c) = self.coordination.as_mut() else {
            return;
        };
        c.cut = cut;
        if cut {
            for id in c.mem.cut_watches(SERVER) {
                self.server.handle_coordinator_watch_ended(now, id);
            }
        }
        self.flush();
    }

    /// Runs a coordinator request of the server.
    pub(super) fn coordinate(&mut self, id: CoordRequestId, request: CoordRequest) {
        let now = self.now;
        let Some(c) = self.coordination.as_mut() else {
            return;
        };
        let response = if c.cut {
            CoordResponse::Failed(CoordError::Unavailable("cut off by the test".into()))
        } else {
            c.mem.execute(now, SERVER, id, request)
        };
        self.server.handle_coordinator_response(now, id, response);
    }

    /// Expires leases, drives the other members and delivers watch events.
    /// Says whether anything happened.
    pub(super) fn drive_coordination(&mut self) -> bool {
        let now = self.now;
        let Some(c) = self.coordination.as_mut() else {
            return false;
        };
        let mut progress = false;
        c.mem.expire(now);
        for (i, m) in c.others.iter_mut().enumerate() {
            let client = SERVER + 1 + i as ClientId;
            if m.poll_timeout().is_some_and(|t| t <= now) {
                m.handle_timeout(now);
            }
            loop {
                let mut more = false;
                while let Some((id, request)) = m.poll_request() {
                    more = true;
                    let r = c.mem.execute(now, client, id, request);
                    m.handle_response(now, id, r);
                }
                while let Some(e) = m.poll_event() {
                    more = true;
                    if let OwnershipEvent::DrainShard { shard, epoch } = e {
                        m.handle_shard_drained(now, shard, epoch);
                    }
                }
                for (id, events) in c.mem.poll_watch_events(client) {
                    more = true;
                    m.handle_watch_events(now, id, &events);
                }
                if !more {
                    break;
                }
                progress = true;
            }
        }
        if !c.cut {
            for (id, events) in c.mem.poll_watch_events(SERVER) {
                progress = true;
                self.server.handle_coordinator_watch(now, id, &events);
            }
        }
        progress
    }
}
