//! What the ownership machine asks of the coordinator (etcd), and what comes
//! back: the requests it emits as effects, their responses, and watch events.
//!
//! The vocabulary is etcd's v3 API, reduced to what shard ownership needs:
//! leases with a TTL, puts and deletes that compare on a key's state first
//! (a transaction), a range read with the store's revision, and a watch from
//! a revision on. Every request gets exactly one response; an adapter that
//! cannot reach the coordinator answers [`CoordResponse::Failed`] after its
//! timeout.

use std::time::Duration;

/// An etcd lease id.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

/// Names one request to the coordinator; its response (and, for a watch, its
/// events) carry the same id.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CoordRequestId(pub u64);

/// What a put or delete requires of the key's current state.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The key does not exist (etcd: `create_revision == 0`).
    Absent,
    /// The key exists and was last changed at this revision (etcd: `mod_revision == r`).
    ModRevision(i64),
}

/// A request to the coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordRequest {
    /// Grant a new lease of about this TTL (etcd rounds to whole seconds and may raise it).
    GrantLease {
        /// The TTL asked for.
        ttl: Duration,
    },
    /// Renew a lease to its full TTL.
    KeepAlive {
        /// The lease.
        lease: LeaseId,
    },
    /// End a lease now; the coordinator deletes every key attached to it.
    RevokeLease {
        /// The lease.
        lease: LeaseId,
    },
    /// Write `key = value` if `expect` holds, attached to `lease` if given.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// The lease the key lives and dies with.
        lease: Option<LeaseId>,
        /// The condition on the key's current state.
        expect: Expect,
    },
    /// Delete `key` if `expect` holds.
    Delete {
        /// The key.
        key: String,
        /// The condition on the key's current state.
        expect: Expect,
    },
    /// Read every key under a prefix, and the store's revision.
    Range {
        /// The prefix.
        prefix: String,
    },
    /// Stream every change under `prefix` from `from_revision` on, as
    /// [`WatchEvent`]s tagged with this request's id, until the watch ends.
    Watch {
        /// The prefix.
        prefix: String,
        /// The first revision to report.
        from_revision: i64,
    },
}

/// A key as the coordinator stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// The revision of the key's last change.
    pub mod_revision: i64,
    /// The lease it is attached to.
    pub lease: Option<LeaseId>,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was written.
    Put(KeyValue),
    /// A key was deleted (explicitly, or with its lease) at `revision`.
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        revision: i64,
    },
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoordError {
    /// No answer in time, or the connection broke: the request may or may
    /// not have taken effect.
    #[error("no answer from the coordinator: {0}")]
    Unavailable(String),
    /// The lease named does not exist (it expired or was revoked).
    #[error("lease {0:?} not found")]
    LeaseNotFound(LeaseId),
    /// The coordinator refused the request.
    #[error("the coordinator refused: {0}")]
    Refused(String),
}

/// The answer to one [`CoordRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordResponse {
    /// A lease was granted with this TTL.
    LeaseGranted {
        /// The lease.
        lease: LeaseId,
        /// Its TTL as granted.
        ttl: Duration,
    },
    /// A keep-alive renewed the lease to `ttl`; zero means the lease is gone.
    KeptAlive {
        /// The remaining TTL after the renewal.
        ttl: Duration,
    },
    /// The lease was revoked (or did not exist).
    LeaseRevoked,
    /// A conditional put: `succeeded` when the condition held and the key was
    /// written at `revision` (its new `mod_revision`).
    Put {
        /// The condition held.
        succeeded: bool,
        /// The store's revision after the request.
        revision: i64,
    },
    /// A conditional delete.
    Deleted {
        /// The condition held (and the key existed).
        succeeded: bool,
        /// The store's revision after the request.
        revision: i64,
    },
    /// Every key under the prefix at `revision`.
    Range {
        /// The store's revision of the snapshot.
        revision: i64,
        /// The keys, in key order.
        kvs: Vec<KeyValue>,
    },
    /// The watch is established; events follow.
    Watching,
    /// The request failed.
    Failed(CoordError),
}
