//! Deliberate protocol bugs, to prove that the tests and the simulator can
//! catch them. Compiled only with the feature `bug-injection`: a release
//! build has neither the switch nor a branch that looks at it.

use crate::Instant;
use crate::protocol::SessionId;
use crate::store::{StoreDone, StoreError, StoreId};

use super::Server;
use super::disk::Purpose;
use super::ids::RevKind;
use super::ops::OpKind;
use super::revoke::Wanted;

/// Deliberate protocol bugs, to prove that the tests and the simulator can
/// catch them (feature `bug-injection`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerBug {
    /// No bug.
    #[default]
    None,
    /// Grant exclusive ownership without invalidating shared copies.
    SkipInvalidation,
    /// Give a silent session's pages away without waiting for its lease.
    IgnoreLease,
    /// Treat a failed disk write as written (the server before the disk
    /// became an effect): the data is dropped and its writer told nothing.
    IgnoreStoreErrors,
    /// Answer a `Refresh` as if every copy matched: the client keeps bytes
    /// from an earlier run that may have changed since.
    RefreshTrustsDigests,
}

impl Server {
    /// Switches on a deliberate bug (tests and the simulator only).
    pub fn inject_bug(&mut self, bug: ServerBug) {
        self.bug = bug;
    }

    /// Switches on a deliberate bug of the cluster member's shard ownership
    /// (tests only; nothing without [`ServerConfig::cluster`](super::ServerConfig::cluster)).
    pub fn inject_ownership_bug(&mut self, bug: crate::cluster::OwnershipBug) {
        self.inject_member_bug(bug);
    }

    /// [`ServerBug::SkipInvalidation`]: an exclusive fetch sends no
    /// invalidations (recalls of an owner still go out).
    pub(super) fn bug_skips_invalidations(&self, kind: &OpKind, wanted: &mut Wanted) {
        let exclusive_fetch = matches!(
            kind,
            OpKind::Fetch {
                exclusive: true,
                ..
            }
        );
        if self.bug == ServerBug::SkipInvalidation && exclusive_fetch {
            wanted.retain(|(_, _, k)| *k != RevKind::Invalidate);
        }
    }

    /// [`ServerBug::RefreshTrustsDigests`].
    pub(super) fn bug_trusts_digests(&self) -> bool {
        self.bug == ServerBug::RefreshTrustsDigests
    }

    /// [`ServerBug::IgnoreLease`]: a session whose connection went away
    /// ends at once instead of when its lease runs out.
    pub(super) fn bug_ignores_lease(&mut self, now: Instant, left: Option<SessionId>) {
        if let Some(sid) = left
            && self.bug == ServerBug::IgnoreLease
        {
            self.end_session(now, sid, "bug: lease ignored");
        }
    }

    /// [`ServerBug::IgnoreStoreErrors`]: a failed write or fsync counts as
    /// done.
    pub(super) fn bug_ignores_store_error(
        &self,
        id: StoreId,
        result: Result<StoreDone, StoreError>,
    ) -> Result<StoreDone, StoreError> {
        let write_or_sync = matches!(
            self.disk.purpose_of(id),
            Some(Purpose::Write { .. } | Purpose::Sync { .. })
        );
        if self.bug == ServerBug::IgnoreStoreErrors && write_or_sync && result.is_err() {
            Ok(StoreDone::Done)
        } else {
            result
        }
    }
}
