//! What the ownership machine answers the server: where a shard is served,
//! what changed, and the deliberate bugs the simulator must catch.

use super::placement::ShardId;
use crate::Instant;

/// Deliberate bugs, to prove that the simulator catches them (feature
/// `bug-injection`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OwnershipBug {
    /// No bug.
    #[default]
    None,
    /// Keep serving shards after the serving window closed (the lease may be
    /// gone, and another member may own them).
    ServeAfterLeaseLoss,
}

/// Where a shard is served, as this member sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// This member owns it and may serve it now.
    Local(LocalShard),
    /// Another member owns it: answer `moved` with its address.
    Remote {
        /// The shard.
        shard: ShardId,
        /// The owner's id.
        owner: String,
        /// The owner's advertised address.
        address: String,
        /// The owner's fencing epoch.
        epoch: i64,
    },
    /// Nobody owns it that this member knows of, or it is being handed
    /// over: answer `busy`, the client tries again.
    Unowned {
        /// The shard.
        shard: ShardId,
    },
}

/// A shard this member serves, and the limits of that right.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LocalShard {
    /// The shard.
    pub shard: ShardId,
    /// The fencing epoch (the ownership key's etcd revision).
    pub epoch: i64,
    /// Serve nothing of it at or after this instant without asking again.
    pub serve_until: Instant,
    /// Grant no write ownership before this instant (the takeover grace).
    pub writes_from: Instant,
    /// The shard is being handed over: grant nothing new, finish recalls and syncs.
    pub draining: bool,
}

/// Why this member stopped serving a shard.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// No keep-alive succeeded in time: the serving window closed.
    WindowClosed,
    /// The coordinator says the lease is gone.
    LeaseGone,
    /// The shard key changed under this member (someone deleted it by hand).
    TakenOver,
}

/// What the server must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnershipEvent {
    /// The member is registered under this lease.
    Registered {
        /// The lease.
        lease: super::coordinator::LeaseId,
    },
    /// A shard is now this member's.
    ShardAcquired {
        /// The shard.
        shard: ShardId,
        /// Its fencing epoch.
        epoch: i64,
        /// When write ownership may be granted (after the grace, unless the
        /// previous owner handed it over cleanly).
        writes_from: Instant,
    },
    /// The takeover grace of a shard is over: queued exclusive fetches may go.
    WritesAllowed {
        /// The shard.
        shard: ShardId,
    },
    /// Hand the shard over: grant nothing new, recall every exclusive page,
    /// invalidate every shared copy, sync every file, then call
    /// [`ShardOwnership::handle_shard_drained`](super::ShardOwnership::handle_shard_drained).
    DrainShard {
        /// The shard.
        shard: ShardId,
        /// Its fencing epoch.
        epoch: i64,
    },
    /// A drained shard was handed over.
    ShardReleased {
        /// The shard.
        shard: ShardId,
    },
    /// Stop serving the shard now: revoke every page of it, write nothing
    /// more of it, end its mappings with `moved`.
    ShardLost {
        /// The shard.
        shard: ShardId,
        /// The epoch that ended.
        epoch: i64,
        /// Why.
        reason: LossReason,
    },
    /// The cluster's config differs from this member's: it serves nothing.
    Misconfigured {
        /// What is wrong.
        message: String,
    },
    /// A leave finished: every shard handed over, the lease revoked.
    Left,
}
