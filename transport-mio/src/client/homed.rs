//! A blocking cluster client's mapping that follows its file from member
//! to member (CLUSTER.md section 6): the core decides what an error means
//! ([`MemberLeft`]) and what the mapping lost (`Client::hand_over`); this
//! file maps the range again on the owner and swaps the connection under
//! the handle, as rmmap-tokio's does.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use rmmap_core::client::{Again, MapOptions, MemberLeft, NextTry, OpError, Redirects};

use super::ClusterClient;
use super::mapping::MappingInner;

/// Where a cluster mapping lives now, and how to map it again.
pub(crate) struct Home {
    current: Mutex<Arc<MappingInner>>,
    /// One move at a time; operations that failed on the old member wait
    /// for it and run on the new one.
    moving: Mutex<()>,
    cluster: ClusterClient,
    path: String,
    range: Range<u64>,
    opts: MapOptions,
}

impl Home {
    pub(crate) fn new(
        first: Arc<MappingInner>,
        cluster: ClusterClient,
        path: &str,
        range: Range<u64>,
        opts: MapOptions,
    ) -> Self {
        Home {
            current: Mutex::new(first),
            moving: Mutex::new(()),
            cluster,
            path: path.to_owned(),
            range,
            opts,
        }
    }

    pub(crate) fn current(&self) -> Arc<MappingInner> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// An operation on `at` failed with `e`: `Ok(())` to run it again on
    /// the mapping's member now, else the error to report. `way` is the
    /// operation's way through the cluster so far: a member's `busy` (its
    /// file being handed over) is waited out as a `Map`'s is.
    pub(crate) fn after(
        &self,
        at: &Arc<MappingInner>,
        e: OpError,
        again: Again,
        way: &mut Option<Redirects>,
    ) -> Result<(), OpError> {
        let Some(left) = MemberLeft::of(&e, self.cluster.several()) else {
            // A move under way (the mapping handed over on `at`, not yet
            // swapped in) is waited for: an operation that reached the old
            // mapping in between failed because of it, and runs again.
            let _turn = self.moving.lock().unwrap_or_else(|e| e.into_inner());
            return match self.moved_from(at) {
                true => MemberLeft::after_moved_elsewhere(None, e, again),
                false => Err(e),
            };
        };
        if left == MemberLeft::HandingOver {
            let way = way.get_or_insert_with(|| self.cluster.redirects());
            return match way.on_error(self.cluster.now(), e.clone()) {
                NextTry::RetryAt(when) => {
                    self.cluster.sleep_until(when);
                    // Handed over by now, perhaps: asked of the cluster.
                    self.move_if_elsewhere(at, MemberLeft::HandedOver, Again::Yes, e)
                }
                NextTry::Fail(e) => Err(e),
                NextTry::SendTo(_) => unreachable!("busy is waited out or reported"),
            };
        }
        self.move_if_elsewhere(at, left, again, e)
    }

    fn moved_from(&self, at: &Arc<MappingInner>) -> bool {
        !Arc::ptr_eq(at, &self.current())
    }

    /// Maps the range on the member that serves the file now and, if that
    /// is not `at`'s member, moves the mapping there.
    fn move_if_elsewhere(
        &self,
        at: &Arc<MappingInner>,
        left: MemberLeft,
        again: Again,
        e: OpError,
    ) -> Result<(), OpError> {
        let _turn = self.moving.lock().unwrap_or_else(|e| e.into_inner());
        if self.moved_from(at) {
            return MemberLeft::after_moved_elsewhere(Some(left), e, again);
        }
        if left == MemberLeft::Unreachable && !self.cluster.several() {
            return Err(e);
        }
        let moved = match self
            .cluster
            .map_on_owner(&self.path, self.range.clone(), self.opts)
        {
            Ok(m) => m,
            Err(why) => {
                tracing::debug!(path = %self.path, error = %why, "the file's owner cannot be reached");
                return Err(e);
            }
        };
        if moved.client.same_connection(&at.client) {
            drop(moved);
            return left.stayed(e, again);
        }
        let id = at.mapped.mapping;
        let member_lost = left == MemberLeft::Unreachable;
        let lost = match at
            .client
            .shared()
            .with(|c, now| c.hand_over(now, id, member_lost))
        {
            Ok(lost) => lost,
            Err(OpError::UnknownMapping) => None,
            Err(other) => return Err(other),
        };
        tracing::debug!(path = %self.path, ?left, lost = lost.is_some(), "the mapping moved to the file's owner");
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = moved;
        at.client.shared().wake();
        left.moved(e, lost, again)
    }
}
