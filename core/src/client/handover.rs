//! A mapping that leaves this connection for another cluster member
//! (CLUSTER.md section 6): what it lost here, said once, and nothing of
//! it left behind to be written back later.
//!
//! The adapter's cluster client decides when: the member answered a
//! request of the mapping with `moved` (a planned move: the member
//! recalled and synced everything before it let go, so nothing is lost
//! beyond pages still dirty here, which a recall leaves none of), or the
//! member is out of reach while another member serves the file (it died,
//! or was cut off past its etcd lease: what it held and had not synced may
//! be gone, as after a server restart). It then maps the same range on the
//! owner and unmaps this one.

use crate::Instant;

use super::error::{LossCause, LostWrites, SessionLossReason};
use super::mappings::MappingStatus;
use super::{Client, MappingId, OpError};

impl Client {
    /// Takes `mapping` off this member: returns what it lost here (`None`
    /// when nothing), and forgets its changes not yet written back so that
    /// nothing of it reaches this member later. With `member_lost` the
    /// member stopped serving the file without handing it over, and the
    /// writes since the mapping's last sync are named as possibly lost
    /// ([`SessionLossReason::MemberLost`]), and so are the pages handed
    /// back in recall answers it has not confirmed; without it (a `moved`
    /// answer, a handover) only pages still dirty here are.
    ///
    /// A loss already pending on the mapping (not yet reported) is
    /// returned with it. The mapping stays until unmapped, with nothing
    /// unsynced and its cached copies dropped; operations still waiting on
    /// it are woken to fail.
    ///
    /// A memory mapping leaves its memory behind: its pages are taken out
    /// (their stores captured first, so that a page written here and not
    /// written back is named), and the backing is dropped, so that nothing
    /// here touches the memory again; the adapter gives the memory to the
    /// mapping on the new member, where the next access faults.
    pub fn hand_over(
        &mut self,
        _now: Instant,
        mapping: MappingId,
        member_lost: bool,
    ) -> Result<Option<LostWrites>, OpError> {
        let m = self.mappings.get(mapping).ok_or(OpError::UnknownMapping)?;
        let ps = self.conn.page_size().unwrap_or(4096);
        let (a, b) = m.pages(ps);
        let (file, writable, memory) = (m.file, m.writable, m.memory.is_some());
        if let (Some(file), true) = (file, memory) {
            self.withdraw_range(file, a, b, |_| true);
            let m = self.mappings.get_mut(mapping).expect("looked up above");
            m.memory = None;
        }
        let m = self.mappings.get(mapping).expect("looked up above");
        let mut lost = match &m.status {
            MappingStatus::Lost(l) => Some(l.clone()),
            _ => None,
        };
        let fresh = |path: &str| LostWrites {
            path: path.to_owned(),
            cause: LossCause::Session(SessionLossReason::MemberLost),
            dirty_pages: 0,
            unsynced_writes: false,
            remap_error: None,
            pages: Vec::new(),
            unsynced_pages: Box::default(),
        };
        // Pages written here and not confirmed written back: gone from the
        // member's point of view whatever happened to it.
        let mut dirty = Vec::new();
        if let Some(file) = file {
            self.cache.update_range(file, a..b, |q, pg| {
                if pg.installed.is_some() {
                    // In the memory of a memory mapping of the same file,
                    // which stays here and leaves it its own way.
                    return;
                }
                if writable && (pg.dirty.is_some() || pg.writebacks > 0) {
                    dirty.push(q);
                }
                pg.invalidate();
                pg.writebacks = 0;
            });
            // Recall answers the member has not confirmed yet: after a
            // handover it had them all (a drain waits for every answer
            // before it syncs and lets go), after a loss they may not have
            // arrived.
            if writable && member_lost {
                dirty.extend(
                    self.requests
                        .unconfirmed_recalled_pages()
                        .into_iter()
                        .filter(|(f, q)| *f == file && (a..b).contains(q))
                        .map(|(_, q)| q),
                );
            }
        }
        dirty.sort_unstable();
        dirty.dedup();
        let m = self.mappings.get_mut(mapping).expect("looked up above");
        if !dirty.is_empty() {
            let l = lost.get_or_insert_with(|| fresh(&m.path));
            l.dirty_pages += dirty.len() as u64;
            l.pages.extend(dirty);
            l.pages.sort_unstable();
            l.pages.dedup();
        }
        if member_lost && m.has_unsynced() {
            let l = lost.get_or_insert_with(|| fresh(&m.path));
            l.unsynced_writes = true;
            l.unsynced_pages = m.unsynced_pages().unwrap_or_default().into();
        }
        // Told now: neither this member's next session nor the unmap says
        // it again.
        m.synced_all();
        if m.is_lost() {
            m.status = MappingStatus::Reopening { req: None };
        }
        let waiters = std::mem::take(&mut m.waiters);
        self.ops.wake_all_of(waiters);
        self.fail_mapping_ops(mapping, OpError::MappingClosed);
        Ok(lost)
    }
}
