//! The cluster's etcd adapter (feature `cluster`; docs/CLUSTER.md).
//!
//! Thin, as the house style wants: [`EtcdCoordinator`] turns each
//! [`CoordRequest`] of the ownership machine into one etcd call (a lease
//! grant, one keep-alive round trip, a transaction that compares on
//! `create_revision` or `mod_revision`, a prefix range, a prefix watch) and
//! its answer into a [`CoordResponse`], with a timeout; [`ClusterMember`]
//! runs the machine's drive loop against it on a Tokio task. Every
//! decision — when to keep alive, when the serving window closes, which
//! shard to take — is the machine's.

mod etcd;
mod member;

pub(crate) use etcd::WatchReport;
pub use etcd::{EtcdCoordinator, EtcdError};
pub use member::{ClusterMember, MemberReport};
pub use rmmap_core::cluster::{
    ClusterConfig, ClusterView, CoordRequest, CoordResponse, LocalShard, OwnershipEvent, Placement,
    ShardId, ShardKey,
};
