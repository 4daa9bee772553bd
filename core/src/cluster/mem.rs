//! An in-memory coordinator with etcd's semantics, in virtual time, for the
//! unit tests and the simulator (feature `harness`).
//!
//! What it keeps of etcd: one global revision, raised by every change (all
//! keys of an expiring or revoked lease go in one revision); leases with a
//! TTL that expire at `renewal + TTL` on the coordinator's clock and delete
//! their keys; puts and deletes that compare on `create_revision == 0` or on
//! `mod_revision`; a put naming a lease that does not exist fails; range
//! reads at a revision; watches from a revision on that see every change in
//! revision order. Its clock is the caller's `now` (the simulator's real
//! time); members' clocks drift against it.

use std::collections::BTreeMap;
use std::time::Duration;

use super::coordinator::{
    CoordError, CoordRequest, CoordRequestId, CoordResponse, Expect, KeyValue, LeaseId, WatchEvent,
};
use crate::Instant;

/// Who sends requests (a member's connection), so its watches can be cut.
pub type ClientId = u64;

struct MemLease {
    ttl: Duration,
    expires_at: Instant,
}

struct MemWatch {
    client: ClientId,
    id: CoordRequestId,
    prefix: String,
    next_revision: i64,
}

/// The in-memory coordinator (see the module docs).
pub struct MemCoordinator {
    revision: i64,
    kvs: BTreeMap<String, KeyValue>,
    leases: BTreeMap<i64, MemLease>,
    next_lease: i64,
    history: Vec<(i64, WatchEvent)>,
    watches: Vec<MemWatch>,
    min_ttl: Duration,
}

impl Default for MemCoordinator {
    fn default() -> Self {
        Self::new()
    }
}

impl MemCoordinator {
    /// An empty store at revision 1 (etcd's first revision).
    pub fn new() -> Self {
        MemCoordinator {
            revision: 1,
            kvs: BTreeMap::new(),
            leases: BTreeMap::new(),
            next_lease: 1,
            history: Vec::new(),
            watches: Vec::new(),
            min_ttl: Duration::ZERO,
        }
    }

    /// Raises TTLs below `min` to `min`, as etcd does with its minimum TTL.
    pub fn with_min_ttl(mut self, min: Duration) -> Self {
        self.min_ttl = min;
        self
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Runs one request that reached the coordinator at `now`.
    pub fn execute(
        &mut self,
        now: Instant,
        client: ClientId,
        id: CoordRequestId,
        request: CoordRequest,
    ) -> CoordResponse {
        self.expire(now);
        match request {
            CoordRequest::GrantLease { ttl } => {
                let ttl = ttl.max(self.min_ttl);
                let lease = LeaseId(self.next_lease);
                self.next_lease += 1;
                self.leases.insert(
                    lease.0,
                    MemLease {
                        ttl,
                        expires_at: now + ttl,
                    },
                );
                CoordResponse::LeaseGranted { lease, ttl }
            }
            CoordRequest::KeepAlive { lease } => match self.leases.get_mut(&lease.0) {
                Some(l) => {
                    l.expires_at = now + l.ttl;
                    CoordResponse::KeptAlive { ttl: l.ttl }
                }
                None => CoordResponse::KeptAlive {
                    ttl: Duration::ZERO,
                },
            },
            CoordRequest::RevokeLease { lease } => {
                self.end_lease(lease.0);
                CoordResponse::LeaseRevoked
            }
            CoordRequest::Put {
                key,
                value,
                lease,
                expect,
            } => {
                if !self.holds(&key, expect) {
                    return CoordResponse::Put {
                        succeeded: false,
                        revision: self.revision,
                    };
                }
                if let Some(l) = lease
                    && !self.leases.contains_key(&l.0)
                {
                    return CoordResponse::Failed(CoordError::LeaseNotFound(l));
                }
                self.revision += 1;
                let kv = KeyValue {
                    key: key.clone(),
                    value,
                    mod_revision: self.revision,
                    lease,
                };
                self.history
                    .push((self.revision, WatchEvent::Put(kv.clone())));
                self.kvs.insert(key, kv);
                CoordResponse::Put {
                    succeeded: true,
                    revision: self.revision,
                }
            }
            CoordRequest::Delete { key, expect } => {
                if !self.holds(&key, expect) || !self.kvs.contains_key(&key) {
                    return CoordResponse::Deleted {
                        succeeded: false,
                        revision: self.revision,
                    };
                }
                self.revision += 1;
                self.kvs.remove(&key);
                self.history.push((
                    self.revision,
                    WatchEvent::Delete {
                        key,
                        revision: self.revision,
                    },
                ));
                CoordResponse::Deleted {
                    succeeded: true,
                    revision: self.revision,
                }
            }
            CoordRequest::Range { prefix } => {
                let (revision, kvs) = self.range(&prefix);
                CoordResponse::Range { revision, kvs }
            }
            CoordRequest::Watch {
                prefix,
                from_revision,
            } => {
                self.watches.push(MemWatch {
                    client,
                    id,
                    prefix,
                    next_revision: from_revision,
                });
                CoordResponse::Watching
            }
        }
    }

    fn holds(&self, key: &str, expect: Expect) -> bool {
        match (expect, self.kvs.get(key)) {
            (Expect::Absent, None) => true,
            (Expect::ModRevision(r), Some(kv)) => kv.mod_revision == r,
            _ => false,
        }
    }

    /// Every key under `prefix`, and the revision.
    pub fn range(&self, prefix: &str) -> (i64, Vec<KeyValue>) {
        let kvs = self
            .kvs
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        (self.revision, kvs)
    }

    /// Expires the leases whose time has come, deleting their keys.
    pub fn expire(&mut self, now: Instant) {
        let due: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.end_lease(id);
        }
    }

    /// When the next lease expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.expires_at).min()
    }

    /// When `lease` expires, if it is alive.
    pub fn lease_expiry(&self, lease: LeaseId) -> Option<Instant> {
        self.leases.get(&lease.0).map(|l| l.expires_at)
    }

    fn end_lease(&mut self, id: i64) {
        if self.leases.remove(&id).is_none() {
            return;
        }
        let keys: Vec<String> = self
            .kvs
            .values()
            .filter(|kv| kv.lease == Some(LeaseId(id)))
            .map(|kv| kv.key.clone())
            .collect();
        if keys.is_empty() {
            return;
        }
        // One transaction: every key of the lease goes in one revision.
        self.revision += 1;
        for key in keys {
            self.kvs.remove(&key);
            self.history.push((
                self.revision,
                WatchEvent::Delete {
                    key,
                    revision: self.revision,
                },
            ));
        }
    }

    /// The events each watch of `client` has not seen yet, in revision order.
    pub fn poll_watch_events(
        &mut self,
        client: ClientId,
    ) -> Vec<(CoordRequestId, Vec<WatchEvent>)> {
        let mut out = Vec::new();
        for w in self.watches.iter_mut().filter(|w| w.client == client) {
            let start = self.history.partition_point(|(r, _)| *r < w.next_revision);
            let events: Vec<WatchEvent> = self.history[start..]
                .iter()
                .filter(|(_, e)| match e {
                    WatchEvent::Put(kv) => kv.key.starts_with(&w.prefix),
                    WatchEvent::Delete { key, .. } => key.starts_with(&w.prefix),
                })
                .map(|(_, e)| e.clone())
                .collect();
            w.next_revision = self.revision + 1;
            if !events.is_empty() {
                out.push((w.id, events));
            }
        }
        out
    }

    /// Ends every watch of `client` (its stream broke); returns their ids.
    pub fn cut_watches(&mut self, client: ClientId) -> Vec<CoordRequestId> {
        let ids = self
            .watches
            .iter()
            .filter(|w| w.client == client)
            .map(|w| w.id)
            .collect();
        self.watches.retain(|w| w.client != client);
        ids
    }
}
