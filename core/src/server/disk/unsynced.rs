//! The bytes of one file that are not known to be on its disk: written back
//! by clients, accepted by the server, and not yet covered by a successful
//! fsync.
//!
//! They are kept as pieces, byte ranges that never overlap: a newer write
//! replaces the part of an older piece it covers, so each piece holds the
//! latest bytes of its range, whatever the disk holds. That makes three
//! things simple: a read overlays every piece on what the disk returned (so a
//! failed write, or a failed fsync that made the kernel drop the pages, never
//! shows older bytes to anyone); a retry rewrites exactly the pieces that
//! failed, with nothing newer to overwrite; and a piece is forgotten only
//! once an fsync that covers it succeeded.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};

use crate::protocol::SessionId;
use crate::store::{StoreError, StoreId, WriteRun};

/// Where a piece stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PieceState {
    /// A write of it is queued or running.
    Writing(StoreId),
    /// Written (numbered in completion order); an fsync issued after this
    /// makes it durable.
    Written(u64),
    /// Its write, or the fsync after it, failed: it must be written again.
    Failed(StoreError),
}

#[derive(Clone, Debug)]
struct Piece {
    data: Bytes,
    /// The session whose write it is: the one told if it never reaches
    /// the disk.
    writer: SessionId,
    /// Sessions whose bytes it replaced before those reached the disk: their
    /// writes survive only through this piece, so they are told too.
    covers: Vec<SessionId>,
    state: PieceState,
}

impl Piece {
    /// Whether `session` must hear of this piece before its syncs succeed:
    /// its writes depend on it reaching the disk, or those of a session that
    /// ended do (`live` says which have not): its client, back in a new
    /// session, can only be told at its next sync of the file, so whoever
    /// syncs the file hears of it, as every descriptor of a file hears of a
    /// writeback error.
    fn concerns(&self, session: SessionId, live: &dyn Fn(SessionId) -> bool) -> bool {
        self.writer == session
            || self.covers.contains(&session)
            || !live(self.writer)
            || self.covers.iter().any(|c| !live(*c))
    }
}

/// A file's unsynced pieces.
#[derive(Debug, Default)]
pub(crate) struct Unsynced {
    /// By start offset; never overlapping.
    pieces: BTreeMap<u64, Piece>,
    /// The starts of the pieces each pending write carries.
    writing: BTreeMap<StoreId, BTreeSet<u64>>,
    /// Next number for [`PieceState::Written`].
    next_written: u64,
    bytes: u64,
    failed_bytes: u64,
    written_bytes: u64,
}

impl Unsynced {
    pub(crate) fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes whose write or fsync failed.
    pub(crate) fn failed_bytes(&self) -> u64 {
        self.failed_bytes
    }

    /// Bytes written and waiting for an fsync.
    pub(crate) fn written_bytes(&self) -> u64 {
        self.written_bytes
    }

    fn account(&mut self, p: &Piece, sign: i64) {
        let n = p.data.len() as u64;
        let add = |x: &mut u64| {
            if sign > 0 { *x += n } else { *x -= n }
        };
        add(&mut self.bytes);
        match p.state {
            PieceState::Failed(_) => add(&mut self.failed_bytes),
            PieceState::Written(_) => add(&mut self.written_bytes),
            PieceState::Writing(_) => {}
        }
    }

    fn put(&mut self, start: u64, p: Piece) {
        if p.data.is_empty() {
            return;
        }
        self.account(&p, 1);
        if let PieceState::Writing(id) = p.state {
            self.writing.entry(id).or_default().insert(start);
        }
        self.pieces.insert(start, p);
    }

    fn take(&mut self, start: u64) -> Option<Piece> {
        let p = self.pieces.remove(&start)?;
        self.account(&p, -1);
        if let PieceState::Writing(id) = p.state
            && let Some(set) = self.writing.get_mut(&id)
        {
            set.remove(&start);
            if set.is_empty() {
                self.writing.remove(&id);
            }
        }
        Some(p)
    }

    /// Starts of the pieces that overlap `[start, end)`.
    fn overlapping(&self, start: u64, end: u64) -> Vec<u64> {
        let first = self
            .pieces
            .range(..=start)
            .next_back()
            .filter(|(s, p)| *s + p.data.len() as u64 > start)
            .map(|(s, _)| *s);
        first
            .into_iter()
            .chain(
                self.pieces
                    .range(start..end)
                    .map(|(s, _)| *s)
                    .filter(|s| Some(*s) != first),
            )
            .collect()
    }

    /// Removes the bytes `[start, end)` from every piece (what is left of a
    /// piece keeps its state).
    fn cut(&mut self, start: u64, end: u64) {
        for s in self.overlapping(start, end) {
            let p = self.take(s).expect("listed");
            let e = s + p.data.len() as u64;
            if s < start {
                let left = Piece {
                    data: p.data.slice(..(start - s) as usize),
                    ..p.clone()
                };
                self.put(s, left);
            }
            if e > end {
                let right = Piece {
                    data: p.data.slice((end - s) as usize..),
                    ..p.clone()
                };
                self.put(end, right);
            }
        }
    }

    /// A new write by `writer` of `data` at `offset`, whose store request is
    /// `write`: the latest bytes of that range from now on. The writers of
    /// the bytes it replaces, which are not on the disk either, are covered
    /// by it: a sync of theirs succeeds only once it is durable.
    pub(crate) fn insert(&mut self, offset: u64, data: Bytes, writer: SessionId, write: StoreId) {
        let end = offset + data.len() as u64;
        let mut covers: Vec<SessionId> = Vec::new();
        for s in self.overlapping(offset, end) {
            let p = &self.pieces[&s];
            covers.push(p.writer);
            covers.extend_from_slice(&p.covers);
        }
        covers.sort_unstable();
        covers.dedup();
        covers.retain(|s| *s != writer);
        self.cut(offset, end);
        self.put(
            offset,
            Piece {
                data,
                writer,
                covers,
                state: PieceState::Writing(write),
            },
        );
    }

    /// Whether some piece still waits for the store request `write` (if
    /// not, newer writes replaced every byte of it).
    pub(crate) fn is_writing(&self, write: StoreId) -> bool {
        self.writing.contains_key(&write)
    }

    /// The store request `write` finished.
    pub(crate) fn write_done(&mut self, write: StoreId, result: &Result<(), StoreError>) {
        let starts: Vec<u64> = self
            .writing
            .get(&write)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        let written = self.next_written;
        self.next_written += 1;
        for s in starts {
            let mut p = self.take(s).expect("listed");
            p.state = match result {
                Ok(()) => PieceState::Written(written),
                Err(e) => PieceState::Failed(e.clone()),
            };
            self.put(s, p);
        }
    }

    /// What an fsync issued now will cover: pieces written before it.
    pub(crate) fn sync_mark(&self) -> u64 {
        self.next_written
    }

    /// An fsync issued at `mark` finished: on success what it covered is
    /// durable and forgotten; on failure it must be written again (the
    /// kernel may have dropped it).
    pub(crate) fn sync_done(&mut self, mark: u64, result: &Result<(), StoreError>) {
        let starts: Vec<u64> = self
            .pieces
            .iter()
            .filter(|(_, p)| matches!(p.state, PieceState::Written(w) if w < mark))
            .map(|(s, _)| *s)
            .collect();
        for s in starts {
            let mut p = self.take(s).expect("listed");
            if let Err(e) = result {
                p.state = PieceState::Failed(e.clone());
                self.put(s, p);
            }
        }
    }

    /// Hands every failed piece to the new write `id`, as runs of
    /// consecutive pieces.
    pub(crate) fn retry(&mut self, id: StoreId) -> Vec<WriteRun> {
        let failed: Vec<u64> = self
            .pieces
            .iter()
            .filter(|(_, p)| matches!(p.state, PieceState::Failed(_)))
            .map(|(s, _)| *s)
            .collect();
        let mut runs: Vec<WriteRun> = Vec::new();
        let mut run_end = None;
        for s in failed {
            let mut p = self.take(s).expect("listed");
            if run_end != Some(s) {
                runs.push(WriteRun {
                    offset: s,
                    parts: Vec::new(),
                });
            }
            runs.last_mut().expect("pushed").parts.push(p.data.clone());
            run_end = Some(s + p.data.len() as u64);
            p.state = PieceState::Writing(id);
            self.put(s, p);
        }
        runs
    }

    /// Lays every piece over `data`, which the disk returned for the bytes
    /// starting at `offset`.
    pub(crate) fn overlay(&self, offset: u64, data: Bytes) -> Bytes {
        let end = offset + data.len() as u64;
        let hits = self.overlapping(offset, end);
        if hits.is_empty() {
            return data;
        }
        let mut buf = BytesMut::from(&data[..]);
        for s in hits {
            let p = &self.pieces[&s];
            let (a, b) = (s.max(offset), (s + p.data.len() as u64).min(end));
            buf[(a - offset) as usize..(b - offset) as usize]
                .copy_from_slice(&p.data[(a - s) as usize..(b - s) as usize]);
        }
        buf.freeze()
    }

    /// The file was cut to `len`: bytes past it are gone by intent.
    pub(crate) fn truncate(&mut self, len: u64) {
        self.cut(len, u64::MAX);
    }

    /// Why `writer`'s writes are not on the disk, if some are not: the
    /// failure of the first failed piece that carries them (its own bytes,
    /// or bytes written over them).
    pub(crate) fn failure_of(
        &self,
        writer: SessionId,
        live: &dyn Fn(SessionId) -> bool,
    ) -> Option<&StoreError> {
        self.pieces.values().find_map(|p| match &p.state {
            PieceState::Failed(e) if p.concerns(writer, live) => Some(e),
            _ => None,
        })
    }

    /// Whether `writer` has writes here that are not yet durable.
    pub(crate) fn holds_from(&self, writer: SessionId, live: &dyn Fn(SessionId) -> bool) -> bool {
        self.pieces.values().any(|p| p.concerns(writer, live))
    }

    /// Every session with bytes here not yet durable (its own, or covered).
    pub(crate) fn writers(&self) -> Vec<SessionId> {
        let mut w: Vec<SessionId> = self
            .pieces
            .values()
            .flat_map(|p| std::iter::once(p.writer).chain(p.covers.iter().copied()))
            .collect();
        w.sort_unstable();
        w.dedup();
        w
    }

    /// Any failure, for messages.
    pub(crate) fn any_failure(&self) -> Option<&StoreError> {
        self.pieces.values().find_map(|p| match &p.state {
            PieceState::Failed(e) => Some(e),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    const A: SessionId = SessionId(1);
    const B: SessionId = SessionId(2);

    fn all_live(_: SessionId) -> bool {
        true
    }
    const ALL_LIVE: fn(SessionId) -> bool = all_live;

    #[test]
    fn a_newer_write_replaces_what_it_covers_of_older_pieces() {
        let mut u = Unsynced::default();
        u.insert(0, b("aaaaaaaa"), A, StoreId(1));
        u.insert(2, b("bbb"), B, StoreId(2));
        assert_eq!(u.bytes(), 8);
        assert_eq!(&u.overlay(0, b("........"))[..], b"aabbbaaa");
        assert_eq!(&u.overlay(4, b("....."))[..], b"baaa.");
        u.write_done(StoreId(1), &Err(StoreError::NoSpace("full".into())));
        assert_eq!(u.failed_bytes(), 5);
        assert!(u.failure_of(A, &ALL_LIVE).is_some());
        assert!(u.failure_of(B, &ALL_LIVE).is_none());
        u.write_done(StoreId(2), &Ok(()));
        let mark = u.sync_mark();
        u.sync_done(mark, &Ok(()));
        assert_eq!(u.bytes(), 5, "only the failed pieces are left");
        assert_eq!(&u.overlay(0, b("........"))[..], b"aa...aaa");
    }

    #[test]
    fn a_retry_rewrites_every_failed_piece_in_runs_of_consecutive_ones() {
        let mut u = Unsynced::default();
        u.insert(0, b("xx"), A, StoreId(1));
        u.insert(2, b("yy"), A, StoreId(2));
        u.insert(10, b("zz"), A, StoreId(3));
        for id in 1..=3 {
            u.write_done(StoreId(id), &Err(StoreError::Io("eio".into())));
        }
        let runs = u.retry(StoreId(11));
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].offset, 0);
        assert_eq!(runs[0].parts.concat(), b"xxyy");
        assert_eq!(runs[1].offset, 10);
        assert_eq!(u.failed_bytes(), 0);
        u.write_done(StoreId(11), &Ok(()));
        assert_eq!(u.written_bytes(), 6);
    }

    #[test]
    fn a_failed_fsync_makes_what_it_covered_failed_and_later_writes_stay() {
        let mut u = Unsynced::default();
        u.insert(0, b("old"), A, StoreId(1));
        u.write_done(StoreId(1), &Ok(()));
        let mark = u.sync_mark();
        u.insert(100, b("new"), B, StoreId(2));
        u.write_done(StoreId(2), &Ok(()));
        u.sync_done(mark, &Err(StoreError::Io("fsync".into())));
        assert_eq!(u.failed_bytes(), 3);
        assert!(u.failure_of(A, &ALL_LIVE).is_some());
        assert_eq!(u.written_bytes(), 3, "B's write came after the fsync");
    }

    #[test]
    fn a_write_over_another_sessions_unwritten_bytes_answers_for_them_too() {
        let mut u = Unsynced::default();
        u.insert(0, b("aaaa"), A, StoreId(1));
        u.write_done(StoreId(1), &Err(StoreError::NoSpace("full".into())));
        u.insert(0, b("bbbb"), B, StoreId(2));
        assert!(
            u.failure_of(A, &ALL_LIVE).is_none(),
            "B's write is still running"
        );
        assert!(
            u.holds_from(A, &ALL_LIVE),
            "A's write survives only through B's"
        );
        u.write_done(StoreId(2), &Err(StoreError::NoSpace("full".into())));
        assert!(u.failure_of(A, &ALL_LIVE).is_some());
        assert!(u.failure_of(B, &ALL_LIVE).is_some());
        assert_eq!(u.retry(StoreId(3)).len(), 1);
        u.write_done(StoreId(3), &Ok(()));
        let mark = u.sync_mark();
        u.sync_done(mark, &Ok(()));
        assert!(!u.holds_from(A, &ALL_LIVE) && !u.holds_from(B, &ALL_LIVE));
    }

    #[test]
    fn failed_bytes_any_ended_session_depends_on_concern_every_syncer() {
        const C: SessionId = SessionId(3);
        let mut u = Unsynced::default();
        u.insert(0, b("aaaa"), A, StoreId(1));
        u.insert(0, b("bbbb"), B, StoreId(2));
        u.write_done(StoreId(2), &Err(StoreError::NoSpace("full".into())));
        // A's bytes survive only through B's, and A ended: C (perhaps A's
        // client in a new session) hears of it while B is still live.
        let a_ended = |s: SessionId| s != A;
        assert!(u.failure_of(C, &a_ended).is_some());
        // B wrote them, and B ended: C hears of it while A is still live.
        let b_ended = |s: SessionId| s != B;
        assert!(u.failure_of(C, &b_ended).is_some());
        assert!(u.failure_of(C, &ALL_LIVE).is_none(), "not C's concern");
    }

    #[test]
    fn truncating_drops_the_bytes_past_the_new_end() {
        let mut u = Unsynced::default();
        u.insert(0, b("abcdef"), A, StoreId(1));
        u.truncate(2);
        assert_eq!(u.bytes(), 2);
        assert_eq!(&u.overlay(0, b("......"))[..], b"ab....");
    }
}
