//! The shard-ownership state machine of one cluster member.
//!
//! It keeps the member's etcd lease alive, registers the member, mirrors the
//! cluster's keys (a range read, then a watch), takes the shards rendezvous
//! hashing gives it by compare-and-swap, hands over the ones it should no
//! longer own (after the server drained them), and above all closes its
//! serving window on its own clock when it cannot renew the lease in time
//! (docs/CLUSTER.md). It does no IO: requests to the coordinator leave as
//! effects with ids ([`ShardOwnership::poll_request`]), their answers come
//! back through [`ShardOwnership::handle_response`], and the server learns
//! what changed from [`ShardOwnership::poll_event`] and asks
//! [`ShardOwnership::placement`] before it grants anything.

mod placing;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use super::answers::{LocalShard, LossReason, OwnershipBug, OwnershipEvent, Placement};
use super::config::ClusterConfig;
use super::coordinator::{
    CoordError, CoordRequest, CoordRequestId, CoordResponse, Expect, LeaseId, WatchEvent,
};
use super::placement::{ShardId, shard_of};
use super::view::{ClusterView, ShardKey, member_key};
use crate::Instant;

enum Lease {
    None,
    Granting,
    Held {
        id: LeaseId,
        serve_until: Instant,
        next_keepalive: Instant,
        keepalive_in_flight: bool,
    },
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum Registration {
    No,
    Pending,
    Done { revision: i64 },
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum HeldState {
    Serving,
    Draining,
    Drained,
    Releasing,
}

struct Held {
    epoch: i64,
    writes_from: Instant,
    writes_announced: bool,
    state: HeldState,
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum Departure {
    Staying,
    Leaving,
    Left,
}

/// What a request in flight was for; `lease_gen` ties it to one lease.
enum Pending {
    Grant {
        sent_at: Instant,
        lease_gen: u64,
    },
    KeepAlive {
        sent_at: Instant,
        lease_gen: u64,
    },
    Revoke,
    Config,
    Register {
        lease_gen: u64,
    },
    Deregister,
    Acquire {
        shard: ShardId,
        lease_gen: u64,
        clean: bool,
    },
    Release {
        shard: ShardId,
        epoch: i64,
    },
    Cleanup {
        shard: ShardId,
    },
    Range,
    Watch,
}

/// One member's shard ownership (see the module docs).
pub struct ShardOwnership {
    config: ClusterConfig,
    lease: Lease,
    /// Bumped whenever the lease is given up, so that late answers about an
    /// old lease change nothing.
    lease_gen: u64,
    view: ClusterView,
    synced: bool,
    ranging: bool,
    watch: Option<CoordRequestId>,
    config_pending: bool,
    /// This member wrote `P/config` (the watch may not have shown it yet).
    config_written: bool,
    registration: Registration,
    held: BTreeMap<ShardId, Held>,
    /// Shards with an acquire or a cleanup in flight.
    acquiring: BTreeSet<ShardId>,
    /// The epoch each shard was last handed over at: the watch may still
    /// show that key as ours, which is no acquire whose answer was lost.
    released: BTreeMap<ShardId, i64>,
    pending: BTreeMap<CoordRequestId, Pending>,
    requests: VecDeque<(CoordRequestId, CoordRequest)>,
    events: VecDeque<OwnershipEvent>,
    next_id: u64,
    retry_at: Option<Instant>,
    leaving: Departure,
    misconfigured: bool,
    bug: OwnershipBug,
}

impl ShardOwnership {
    /// A member that has not started yet: the first [`handle_timeout`]
    /// starts it (grant a lease, read the cluster).
    ///
    /// [`handle_timeout`]: ShardOwnership::handle_timeout
    pub fn new(config: ClusterConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(ShardOwnership {
            view: ClusterView::new(&config.prefix),
            config,
            lease: Lease::None,
            lease_gen: 0,
            synced: false,
            ranging: false,
            watch: None,
            config_pending: false,
            config_written: false,
            registration: Registration::No,
            held: BTreeMap::new(),
            acquiring: BTreeSet::new(),
            released: BTreeMap::new(),
            pending: BTreeMap::new(),
            requests: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 1,
            retry_at: None,
            leaving: Departure::Staying,
            misconfigured: false,
            bug: OwnershipBug::None,
        })
    }

    /// Switches on a deliberate bug (tests only).
    #[cfg(feature = "bug-injection")]
    pub fn inject_bug(&mut self, bug: OwnershipBug) {
        self.bug = bug;
    }

    /// The configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The cluster as last read and watched.
    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    // ---- A. inputs ----

    /// Time passed (and the first call starts the member).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.progress(now);
    }

    /// The answer to a request.
    pub fn handle_response(&mut self, now: Instant, id: CoordRequestId, response: CoordResponse) {
        self.close_window_if_due(now);
        if let Some(p) = self.pending.remove(&id) {
            self.on_response(now, id, p, response);
        }
        self.progress(now);
    }

    /// Changes seen by the watch `watch`.
    pub fn handle_watch_events(
        &mut self,
        now: Instant,
        watch: CoordRequestId,
        events: &[WatchEvent],
    ) {
        self.close_window_if_due(now);
        if self.watch == Some(watch) {
            self.view.apply(events);
        }
        self.progress(now);
    }

    /// The watch `watch` ended (its stream broke, or it was compacted): the
    /// view is read again.
    pub fn handle_watch_ended(&mut self, now: Instant, watch: CoordRequestId) {
        self.close_window_if_due(now);
        if self.watch == Some(watch) {
            self.watch = None;
            self.synced = false;
        }
        self.progress(now);
    }

    /// The server finished the [`OwnershipEvent::DrainShard`] of `shard` at
    /// `epoch`: no page of the shard is held by any session, and its files
    /// are synced. A report about an older epoch (the shard was lost and
    /// taken again meanwhile) changes nothing.
    pub fn handle_shard_drained(&mut self, now: Instant, shard: ShardId, epoch: i64) {
        self.close_window_if_due(now);
        if let Some(h) = self.held.get_mut(&shard)
            && h.state == HeldState::Draining
            && h.epoch == epoch
        {
            h.state = HeldState::Drained;
        }
        self.progress(now);
    }

    /// Leave the cluster (SIGTERM): deregister, hand every shard over, then
    /// revoke the lease; [`OwnershipEvent::Left`] says when it is done.
    pub fn leave(&mut self, now: Instant) {
        self.close_window_if_due(now);
        if self.leaving == Departure::Staying {
            self.leaving = Departure::Leaving;
        }
        self.progress(now);
    }

    // ---- B. outputs ----

    /// The next request to send to the coordinator.
    pub fn poll_request(&mut self) -> Option<(CoordRequestId, CoordRequest)> {
        self.requests.pop_front()
    }

    /// The next thing the server must act on.
    pub fn poll_event(&mut self) -> Option<OwnershipEvent> {
        self.events.pop_front()
    }

    /// When to call [`ShardOwnership::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.retry_at;
        let mut at = |x: Instant| t = Some(t.map_or(x, |t: Instant| t.min(x)));
        if let Lease::Held {
            serve_until,
            next_keepalive,
            keepalive_in_flight,
            ..
        } = self.lease
        {
            if self.bug != OwnershipBug::ServeAfterLeaseLoss {
                at(serve_until);
            }
            if !keepalive_in_flight {
                at(next_keepalive);
            }
        }
        for h in self.held.values().filter(|h| !h.writes_announced) {
            at(h.writes_from);
        }
        t
    }

    // ---- C. questions ----

    /// Where the file at `path` is served.
    pub fn placement(&self, now: Instant, path: &str) -> Placement {
        self.shard_placement(now, shard_of(path, self.config.shards))
    }

    /// Where `shard` is served.
    pub fn shard_placement(&self, now: Instant, shard: ShardId) -> Placement {
        if let (Some(h), Lease::Held { serve_until, .. }) = (self.held.get(&shard), &self.lease)
            && matches!(h.state, HeldState::Serving | HeldState::Draining)
            && (now < *serve_until || self.bug == OwnershipBug::ServeAfterLeaseLoss)
        {
            return Placement::Local(LocalShard {
                shard,
                epoch: h.epoch,
                serve_until: *serve_until,
                writes_from: h.writes_from,
                draining: h.state == HeldState::Draining,
            });
        }
        match self.view.shard(shard) {
            ShardKey::Owned {
                owner,
                address,
                epoch,
                ..
            } if owner != self.config.node_id => Placement::Remote {
                shard,
                owner,
                address,
                epoch,
            },
            _ => Placement::Unowned { shard },
        }
    }

    /// The shards this member holds, with their epochs.
    pub fn held_shards(&self) -> impl Iterator<Item = (ShardId, i64)> + '_ {
        self.held.iter().map(|(s, h)| (*s, h.epoch))
    }

    /// The lease, while one is held.
    pub fn lease(&self) -> Option<LeaseId> {
        match self.lease {
            Lease::Held { id, .. } => Some(id),
            _ => None,
        }
    }

    // ---- D. internals ----

    fn send(&mut self, purpose: Pending, request: CoordRequest) -> CoordRequestId {
        let id = CoordRequestId(self.next_id);
        self.next_id += 1;
        self.pending.insert(id, purpose);
        self.requests.push_back((id, request));
        id
    }

    fn retry_later(&mut self, now: Instant) {
        let at = now + self.config.retry_interval;
        self.retry_at = Some(self.retry_at.map_or(at, |t| t.min(at)));
    }

    fn waiting(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|t| now < t)
    }

    fn on_response(&mut self, now: Instant, id: CoordRequestId, p: Pending, r: CoordResponse) {
        let failed = matches!(r, CoordResponse::Failed(_));
        // A failed request, or a compare that did not hold (the view is
        // behind etcd): wait for the retry interval, or the watch, rather
        // than asking again at once.
        if failed
            || matches!(
                r,
                CoordResponse::Put {
                    succeeded: false,
                    ..
                } | CoordResponse::Deleted {
                    succeeded: false,
                    ..
                }
            )
        {
            self.retry_later(now);
        }
        match (p, r) {
            (Pending::Grant { sent_at, lease_gen }, r) => self.on_granted(sent_at, lease_gen, r),
            (Pending::KeepAlive { sent_at, lease_gen }, r) => {
                self.on_kept_alive(now, sent_at, lease_gen, r)
            }
            (Pending::Revoke | Pending::Deregister, _) => {}
            (Pending::Config, r) => {
                self.config_pending = false;
                self.config_written = matches!(
                    r,
                    CoordResponse::Put {
                        succeeded: true,
                        ..
                    }
                );
            }
            (Pending::Register { lease_gen }, r) => {
                if lease_gen != self.lease_gen || self.registration != Registration::Pending {
                    return;
                }
                self.registration = Registration::No;
                if let (
                    CoordResponse::Put {
                        succeeded: true,
                        revision,
                    },
                    Some(lease),
                ) = (r, self.lease())
                {
                    self.registration = Registration::Done { revision };
                    self.events.push_back(OwnershipEvent::Registered { lease });
                }
            }
            (
                Pending::Acquire {
                    shard,
                    lease_gen,
                    clean,
                },
                r,
            ) => {
                self.acquiring.remove(&shard);
                if lease_gen != self.lease_gen {
                    return; // the key dies with the old lease
                }
                if let CoordResponse::Put {
                    succeeded: true,
                    revision,
                } = r
                {
                    let writes_from = if clean {
                        now
                    } else {
                        now + self.config.takeover_grace()
                    };
                    self.held.insert(
                        shard,
                        Held {
                            epoch: revision,
                            writes_from,
                            writes_announced: false,
                            state: HeldState::Serving,
                        },
                    );
                    self.events.push_back(OwnershipEvent::ShardAcquired {
                        shard,
                        epoch: revision,
                        writes_from,
                    });
                }
            }
            (Pending::Release { shard, epoch }, _) => {
                // Only about the epoch it released: the shard may have been
                // lost and taken again since.
                let Some(h) = self.held.get_mut(&shard).filter(|h| h.epoch == epoch) else {
                    return;
                };
                if failed {
                    // Unknown outcome: ask again; a second try that finds the
                    // key changed means the first one went through.
                    h.state = HeldState::Drained;
                } else {
                    self.held.remove(&shard);
                    self.released.insert(shard, epoch);
                    self.events
                        .push_back(OwnershipEvent::ShardReleased { shard });
                }
            }
            (Pending::Cleanup { shard }, _) => {
                self.acquiring.remove(&shard);
            }
            (Pending::Range, CoordResponse::Range { revision, kvs }) => {
                self.ranging = false;
                self.view = ClusterView::from_range(&self.config.prefix, revision, &kvs);
                self.synced = true;
                let prefix = self.config.prefix.clone();
                let w = self.send(
                    Pending::Watch,
                    CoordRequest::Watch {
                        prefix,
                        from_revision: revision + 1,
                    },
                );
                self.watch = Some(w);
            }
            (Pending::Range, _) => self.ranging = false,
            (Pending::Watch, CoordResponse::Watching) => {}
            (Pending::Watch, _) => {
                if self.watch == Some(id) {
                    self.watch = None;
                    self.synced = false;
                }
            }
        }
    }

    fn on_granted(&mut self, sent_at: Instant, lease_gen: u64, r: CoordResponse) {
        let current = lease_gen == self.lease_gen && matches!(self.lease, Lease::Granting);
        match r {
            CoordResponse::LeaseGranted { lease, ttl } if current && !ttl.is_zero() => {
                self.lease = Lease::Held {
                    id: lease,
                    serve_until: sent_at + self.config.serving_window(ttl),
                    next_keepalive: sent_at + self.config.keepalive_interval(ttl),
                    keepalive_in_flight: false,
                };
                if self.leaving == Departure::Leaving {
                    self.finish_leaving();
                }
            }
            CoordResponse::LeaseGranted { lease, .. } => {
                self.send(Pending::Revoke, CoordRequest::RevokeLease { lease });
            }
            _ if current => self.lease = Lease::None,
            _ => {}
        }
    }

    fn on_kept_alive(&mut self, now: Instant, sent_at: Instant, lease_gen: u64, r: CoordResponse) {
        if lease_gen != self.lease_gen {
            return;
        }
        let window = |ttl| self.config.serving_window(ttl);
        let interval = |ttl| self.config.keepalive_interval(ttl);
        let retry = self.config.retry_interval;
        let Lease::Held {
            serve_until,
            next_keepalive,
            keepalive_in_flight,
            ..
        } = &mut self.lease
        else {
            return;
        };
        *keepalive_in_flight = false;
        match r {
            CoordResponse::KeptAlive { ttl } if !ttl.is_zero() => {
                *serve_until = (*serve_until).max(sent_at + window(ttl));
                *next_keepalive = sent_at + interval(ttl);
            }
            CoordResponse::KeptAlive { .. }
            | CoordResponse::Failed(CoordError::LeaseNotFound(_)) => {
                self.lose_lease(LossReason::LeaseGone);
            }
            _ => *next_keepalive = now + retry.min(Duration::from_secs(1)),
        }
    }

    /// Closes the serving window once its time has come. Every input runs
    /// this first: a keep-alive answered after the window closed reopens
    /// nothing (the server was told to stop; it starts over).
    fn close_window_if_due(&mut self, now: Instant) {
        if let Lease::Held { serve_until, .. } = self.lease
            && now >= serve_until
            && self.bug != OwnershipBug::ServeAfterLeaseLoss
        {
            self.lose_lease(LossReason::WindowClosed);
        }
    }

    /// Gives up the lease and every shard: the window closed, or the lease is gone.
    fn lose_lease(&mut self, reason: LossReason) {
        for (shard, h) in std::mem::take(&mut self.held) {
            self.events.push_back(OwnershipEvent::ShardLost {
                shard,
                epoch: h.epoch,
                reason,
            });
        }
        self.acquiring.clear();
        if let Lease::Held { id, .. } = self.lease {
            // Best effort: the keys go at once instead of at the lease's expiry.
            self.send(Pending::Revoke, CoordRequest::RevokeLease { lease: id });
        }
        self.lease = Lease::None;
        self.lease_gen += 1;
        self.registration = Registration::No;
        if self.leaving == Departure::Leaving {
            self.leaving = Departure::Left;
            self.events.push_back(OwnershipEvent::Left);
        }
    }

    fn finish_leaving(&mut self) {
        if let Lease::Held { id, .. } = self.lease {
            self.send(Pending::Revoke, CoordRequest::RevokeLease { lease: id });
        }
        self.lease = Lease::None;
        self.lease_gen += 1;
        self.leaving = Departure::Left;
        self.events.push_back(OwnershipEvent::Left);
    }

    /// Everything the member does of its own accord, given `now`.
    fn progress(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
        }
        if self.misconfigured || self.leaving == Departure::Left {
            return;
        }
        self.close_window_if_due(now);
        if self.leaving == Departure::Left {
            return;
        }
        self.keep_lease(now);
        self.keep_view(now);
        for (shard, h) in &mut self.held {
            if !h.writes_announced && now >= h.writes_from {
                h.writes_announced = true;
                self.events
                    .push_back(OwnershipEvent::WritesAllowed { shard: *shard });
            }
        }
        if self.leaving == Departure::Leaving {
            if let Registration::Done { revision } = self.registration {
                let key = member_key(&self.config.prefix, &self.config.node_id);
                let expect = Expect::ModRevision(revision);
                self.send(Pending::Deregister, CoordRequest::Delete { key, expect });
                self.registration = Registration::No;
            }
            if self.held.is_empty()
                && self.acquiring.is_empty()
                && self.registration == Registration::No
                && !matches!(self.lease, Lease::Granting)
            {
                return self.finish_leaving();
            }
        }
        if !self.synced || !self.check_config(now) {
            return;
        }
        self.register(now);
        self.place(now);
    }

    fn keep_lease(&mut self, now: Instant) {
        let may_grant = !self.waiting(now) && self.leaving == Departure::Staying;
        match &mut self.lease {
            Lease::None if may_grant => {
                self.lease = Lease::Granting;
                let (ttl, lease_gen) = (self.config.lease_ttl, self.lease_gen);
                self.send(
                    Pending::Grant {
                        sent_at: now,
                        lease_gen,
                    },
                    CoordRequest::GrantLease { ttl },
                );
            }
            Lease::Held {
                id,
                next_keepalive,
                keepalive_in_flight,
                ..
            } if !*keepalive_in_flight && now >= *next_keepalive => {
                *keepalive_in_flight = true;
                let (lease, lease_gen) = (*id, self.lease_gen);
                self.send(
                    Pending::KeepAlive {
                        sent_at: now,
                        lease_gen,
                    },
                    CoordRequest::KeepAlive { lease },
                );
            }
            _ => {}
        }
    }

    fn keep_view(&mut self, now: Instant) {
        if !self.synced && !self.ranging && !self.waiting(now) {
            self.ranging = true;
            let prefix = self.config.prefix.clone();
            self.send(Pending::Range, CoordRequest::Range { prefix });
        }
    }
}
