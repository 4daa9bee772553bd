//! Shard ownership in an rmmap cluster coordinated by etcd
//! (docs/CLUSTER.md).
//!
//! Several members export one shared root. The namespace is cut into shards
//! by path ([`shard_of`]); each shard is owned by one live member at a time,
//! recorded in etcd under the member's lease, and the key's revision is the
//! owner's fencing epoch. [`ShardOwnership`] is one member's side of that:
//! a sans-IO state machine driven like the rest of the core.
//!
//! # The drive loop
//!
//! 1. Feed input: [`ShardOwnership::handle_timeout`] (time passed; the first
//!    call starts the member), [`ShardOwnership::handle_response`] (the
//!    answer to a request), [`ShardOwnership::handle_watch_events`] and
//!    [`ShardOwnership::handle_watch_ended`] (the watch), and from the
//!    server [`ShardOwnership::handle_shard_drained`] and
//!    [`ShardOwnership::leave`].
//! 2. Drain output until there is none: [`ShardOwnership::poll_request`]
//!    (send it to the coordinator; every request gets exactly one
//!    response, [`CoordResponse::Failed`] when it timed out) and
//!    [`ShardOwnership::poll_event`] (the server acts on it).
//! 3. Wait for an answer, a watch event, or [`ShardOwnership::poll_timeout`].
//!
//! Before granting anything of a file, the server asks
//! [`ShardOwnership::placement`] with the current time.
//!
//! ```
//! use rmmap_core::cluster::{ClusterConfig, CoordRequest, ShardOwnership};
//! use rmmap_core::Instant;
//!
//! let mut member = ShardOwnership::new(ClusterConfig::new("a", "10.0.0.1:7878")).unwrap();
//! member.handle_timeout(Instant::ZERO);
//! let mut asked = Vec::new();
//! while let Some((_id, request)) = member.poll_request() {
//!     asked.push(request); // an adapter sends these to etcd
//! }
//! assert!(matches!(asked[0], CoordRequest::GrantLease { .. }));
//! assert!(matches!(asked[1], CoordRequest::Range { .. }));
//! ```

mod answers;
mod config;
mod coordinator;
#[cfg(any(test, feature = "harness"))]
pub mod mem;
mod ownership;
mod placement;
mod view;

#[cfg(test)]
mod tests;

pub use answers::{LocalShard, LossReason, OwnershipBug, OwnershipEvent, Placement};
pub use config::ClusterConfig;
pub use coordinator::{
    CoordError, CoordRequest, CoordRequestId, CoordResponse, Expect, KeyValue, LeaseId, WatchEvent,
};
pub use ownership::ShardOwnership;
pub use placement::{ShardId, desired_owner, fmix64, fnv1a64, shard_of};
pub use view::{ClusterView, MemberEntry, RELEASED, ShardKey, config_key, member_key, shard_key};
