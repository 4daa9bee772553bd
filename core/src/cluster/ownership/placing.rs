//! How a member takes its place: the config check, registration, and
//! which shards to take, hand over, or give up.

use super::super::answers::{LossReason, OwnershipEvent};
use super::super::coordinator::{CoordRequest, Expect};
use super::super::placement::{ShardId, desired_owner};
use super::super::view::{
    RELEASED, ShardKey, config_key, config_value, member_key, owned_value, shard_key,
};
use super::{Departure, HeldState, Pending, Registration, ShardOwnership};
use crate::Instant;

impl ShardOwnership {
    /// True when `P/config` agrees with this member; writes it if absent.
    pub(super) fn check_config(&mut self, now: Instant) -> bool {
        let want = config_value(self.config.shards);
        match self.view.config() {
            Some(v) if v == want => true,
            Some(v) => {
                let message = format!(
                    "the cluster under {} has {v:?}, this member was started with {want:?}: \
                     every member must use the same shard count",
                    self.config.prefix
                );
                self.misconfigured = true;
                for (shard, h) in std::mem::take(&mut self.held) {
                    self.events.push_back(OwnershipEvent::ShardLost {
                        shard,
                        epoch: h.epoch,
                        reason: LossReason::TakenOver,
                    });
                }
                self.events
                    .push_back(OwnershipEvent::Misconfigured { message });
                false
            }
            None if self.config_written => true,
            None => {
                if !self.config_pending && !self.waiting(now) {
                    self.config_pending = true;
                    let key = config_key(&self.config.prefix);
                    self.send(
                        Pending::Config,
                        CoordRequest::Put {
                            key,
                            value: want,
                            lease: None,
                            expect: Expect::Absent,
                        },
                    );
                }
                false
            }
        }
    }

    pub(super) fn register(&mut self, now: Instant) {
        if let Registration::Done { revision } = self.registration
            && self.view.revision() > revision
            && !self.view.members().contains_key(&self.config.node_id)
        {
            // The member key is gone (the view holds every change after it):
            // the lease was revoked or expired. Start over at once rather than
            // at the next keep-alive.
            self.lose_lease(LossReason::LeaseGone);
            self.keep_lease(now);
            return;
        }
        let Some(lease) = self.lease() else { return };
        if self.registration != Registration::No
            || self.leaving != Departure::Staying
            || self.waiting(now)
        {
            return;
        }
        match self.view.members().get(&self.config.node_id) {
            None => {
                self.registration = Registration::Pending;
                let lease_gen = self.lease_gen;
                let key = member_key(&self.config.prefix, &self.config.node_id);
                self.send(
                    Pending::Register { lease_gen },
                    CoordRequest::Put {
                        key,
                        value: self.config.advertise.clone(),
                        lease: Some(lease),
                        expect: Expect::Absent,
                    },
                );
            }
            // An answer that was lost: the key is ours.
            Some(e) if e.lease == Some(lease) => {
                self.registration = Registration::Done {
                    revision: e.mod_revision,
                };
                self.events.push_back(OwnershipEvent::Registered { lease });
            }
            // An earlier process with this id, until its lease ends.
            Some(_) => {}
        }
    }

    /// Takes the shards this member should own, hands over the others.
    pub(super) fn place(&mut self, now: Instant) {
        let me = self.config.node_id.clone();
        let members: Vec<&str> = self
            .view
            .members()
            .keys()
            .map(String::as_str)
            .filter(|id| self.leaving == Departure::Staying || *id != me)
            .collect();
        let registered = matches!(self.registration, Registration::Done { .. });
        let lease = self.lease();
        let mut drain = Vec::new();
        let mut lost = Vec::new();
        let mut acquire = Vec::new();
        let mut cleanup = Vec::new();
        for s in (0..self.config.shards).map(ShardId) {
            let desired = desired_owner(members.iter().copied(), s);
            let key = self.view.shard(s);
            if let Some(h) = self.held.get(&s) {
                let ours = matches!(&key, ShardKey::Owned { epoch, .. } if *epoch == h.epoch);
                let live = matches!(h.state, HeldState::Serving | HeldState::Draining);
                if live && !ours && key.revision() > h.epoch {
                    lost.push(s);
                } else if h.state == HeldState::Serving
                    && (self.leaving != Departure::Staying || desired.is_some_and(|d| d != me))
                {
                    drain.push(s);
                } else if h.state == HeldState::Drained && !self.waiting(now) {
                    acquire.push((s, Expect::ModRevision(h.epoch), true));
                }
                continue;
            }
            if self.acquiring.contains(&s) || !registered || self.leaving != Departure::Staying {
                continue;
            }
            if self.waiting(now) {
                continue;
            }
            match key {
                ShardKey::Owned {
                    lease: Some(l),
                    epoch,
                    ..
                } if Some(l) == lease && self.released.get(&s) != Some(&epoch) => {
                    cleanup.push((s, epoch))
                }
                ShardKey::Absent { .. } if desired == Some(me.as_str()) => {
                    acquire.push((s, Expect::Absent, false));
                }
                ShardKey::Released { revision } if desired == Some(me.as_str()) => {
                    acquire.push((s, Expect::ModRevision(revision), true));
                }
                _ => {}
            }
        }
        for s in lost {
            if let Some(h) = self.held.remove(&s) {
                self.events.push_back(OwnershipEvent::ShardLost {
                    shard: s,
                    epoch: h.epoch,
                    reason: LossReason::TakenOver,
                });
            }
        }
        for s in drain {
            if let Some(h) = self.held.get_mut(&s) {
                h.state = HeldState::Draining;
                self.events.push_back(OwnershipEvent::DrainShard {
                    shard: s,
                    epoch: h.epoch,
                });
            }
        }
        let (Some(lease), prefix) = (lease, self.config.prefix.clone()) else {
            return;
        };
        for (s, expect, clean) in acquire {
            let key = shard_key(&prefix, s);
            if let Some(h) = self.held.get_mut(&s) {
                // A drained shard: release it.
                h.state = HeldState::Releasing;
                let epoch = h.epoch;
                self.send(
                    Pending::Release { shard: s, epoch },
                    CoordRequest::Put {
                        key,
                        value: RELEASED.into(),
                        lease: None,
                        expect,
                    },
                );
                continue;
            }
            self.acquiring.insert(s);
            let lease_gen = self.lease_gen;
            self.send(
                Pending::Acquire {
                    shard: s,
                    lease_gen,
                    clean,
                },
                CoordRequest::Put {
                    key,
                    value: owned_value(&me, &self.config.advertise),
                    lease: Some(lease),
                    expect,
                },
            );
        }
        for (s, epoch) in cleanup {
            // An acquire whose answer was lost: give the key back rather
            // than guess since when it was ours.
            self.acquiring.insert(s);
            self.send(
                Pending::Cleanup { shard: s },
                CoordRequest::Delete {
                    key: shard_key(&prefix, s),
                    expect: Expect::ModRevision(epoch),
                },
            );
        }
    }
}
