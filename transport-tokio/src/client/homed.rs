//! A cluster client's mapping that follows its file from member to member
//! (CLUSTER.md section 6). Whether an error means that the member let the
//! file go, and what the mapping lost there, are the core's decisions
//! ([`MemberLeft`], `Client::hand_over`); this file maps the range again
//! on the owner and swaps the connection under the handle.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use rmmap_core::client::{Again, MapOptions, MemberLeft, NextTry, OpError, Redirects};

use super::ClusterClient;
use super::mapping::MappingInner;
#[cfg(target_os = "linux")]
use crate::memory::MemoryState;

/// Where a cluster mapping lives now, and how to map it again.
pub(crate) struct Home {
    current: Mutex<Arc<MappingInner>>,
    /// One move at a time; operations that failed on the old member wait
    /// for it and run on the new one.
    moving: tokio::sync::Mutex<()>,
    cluster: ClusterClient,
    path: String,
    range: Range<u64>,
    opts: MapOptions,
    /// A memory mapping's memory, which moves with it.
    #[cfg(target_os = "linux")]
    memory: Option<Arc<MemoryState>>,
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
            moving: tokio::sync::Mutex::new(()),
            cluster,
            path: path.to_owned(),
            range,
            opts,
            #[cfg(target_os = "linux")]
            memory: None,
        }
    }

    /// The mapping is a memory mapping over `state`: a move maps the
    /// memory on the new member.
    #[cfg(target_os = "linux")]
    pub(crate) fn with_memory(self, state: Arc<MemoryState>) -> Self {
        Home {
            memory: Some(state),
            ..self
        }
    }

    /// The range mapped on the member that serves the file: the mapping
    /// to move to, or for a memory mapping a probe of that member (the
    /// memory goes there only once it is known to be another member).
    async fn find_owner(&self) -> Result<Arc<MappingInner>, OpError> {
        let (path, range) = (&self.path, self.range.clone());
        #[cfg(target_os = "linux")]
        if self.memory.is_some() {
            return self.cluster.probe_owner(path, range).await;
        }
        self.cluster.map_on_owner(path, range, self.opts).await
    }

    /// What the mapping moves to on the member that `probe` (the range
    /// mapped there by [`Home::find_owner`]) reached: `probe` itself, or
    /// for a memory mapping the memory mapped there in the probe's place.
    async fn moved_to(&self, probe: Arc<MappingInner>) -> Result<Arc<MappingInner>, String> {
        #[cfg(target_os = "linux")]
        if let Some(state) = &self.memory {
            let client = probe.client.clone();
            // Unmapped first: a memory mapping may overlap nothing else
            // of the file on its connection.
            let id = probe.mapped.mapping;
            client
                .shared()
                .run(|c, now| c.unmap(now, id))
                .await
                .map_err(|e| e.to_string())?;
            drop(probe);
            return client
                .map_backed(&self.path, self.range.clone(), self.opts, state)
                .await
                .and_then(|m| {
                    let id = m.mapped.mapping;
                    client.shared().with(|c, _| c.follow_file(id))?;
                    Ok(m)
                })
                .map_err(|e| e.to_string());
        }
        Ok(probe)
    }

    pub(crate) fn current(&self) -> Arc<MappingInner> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// An operation on `at` failed with `e`: `Ok(())` to run it again on
    /// the mapping's member now, else the error to report (the loss of a
    /// move, once, or `e`). `way` is the operation's way through the
    /// cluster so far (made here at its first failure): a member's `busy`
    /// (its file being handed over) is waited out as a `Map`'s is.
    pub(crate) async fn after(
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
            let _turn = self.moving.lock().await;
            return match self.moved_from(at) {
                true => MemberLeft::after_moved_elsewhere(None, e, again),
                false => Err(e),
            };
        };
        if left == MemberLeft::HandingOver {
            let way = way.get_or_insert_with(|| self.cluster.redirects());
            return match way.on_error(self.cluster.now(), e.clone()) {
                NextTry::RetryAt(when) => {
                    self.cluster.sleep_until(when).await;
                    // Handed over by now, perhaps: asked of the cluster.
                    self.move_if_elsewhere(at, MemberLeft::HandedOver, Again::Yes, e)
                        .await
                }
                NextTry::Fail(e) => Err(e),
                NextTry::SendTo(_) => unreachable!("busy is waited out or reported"),
            };
        }
        self.move_if_elsewhere(at, left, again, e).await
    }

    /// Whether the mapping moved off `at` (another operation moved it).
    fn moved_from(&self, at: &Arc<MappingInner>) -> bool {
        !Arc::ptr_eq(at, &self.current())
    }

    /// Maps the range on the member that serves the file now and, if that
    /// is not `at`'s member, moves the mapping there (`left` says why `at`
    /// failed with `e`).
    async fn move_if_elsewhere(
        &self,
        at: &Arc<MappingInner>,
        left: MemberLeft,
        again: Again,
        e: OpError,
    ) -> Result<(), OpError> {
        let _turn = self.moving.lock().await;
        if self.moved_from(at) {
            // Moved by another operation while this one failed on the old
            // member.
            return MemberLeft::after_moved_elsewhere(Some(left), e, again);
        }
        if left == MemberLeft::Unreachable && !self.cluster.several() {
            // One address: there is nobody else to ask.
            return Err(e);
        }
        let moved = match self.find_owner().await {
            Ok(m) => m,
            Err(why) => {
                tracing::debug!(path = %self.path, error = %why, "the file's owner cannot be reached");
                return Err(e);
            }
        };
        if moved.client.same_connection(&at.client) {
            // The member serves the file still: go on there with the
            // mapping it had.
            drop(moved);
            return left.stayed(e, again);
        }
        let moved = match self.moved_to(moved).await {
            Ok(m) => m,
            Err(why) => {
                tracing::debug!(path = %self.path, error = %why, "mapping the memory on the file's owner failed");
                return Err(e);
            }
        };
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
        at.client.shared().wake_driver();
        left.moved(e, lost, again)
    }
}
