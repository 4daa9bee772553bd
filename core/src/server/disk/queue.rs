//! The order of one file's store requests.
//!
//! The adapter may run the requests it holds at the same time and finish
//! them in any order, so the server only lets requests out together when
//! they commute: reads with reads, reads and writes of disjoint byte ranges,
//! an fsync with reads. Anything else waits for what it conflicts with, in
//! arrival order: a request leaves the queue only when it conflicts with no
//! request running and with no request queued before it. At most
//! [`MAX_RUNNING`] run at once, and only the first [`WINDOW`] waiting ones
//! are considered at a time, so a flood of requests costs a bounded amount
//! per step.

use std::collections::VecDeque;

use crate::store::{StoreFile, StoreId, StoreOp, WriteRun};

/// How far down the queue a request may overtake the ones before it.
const WINDOW: usize = 32;
/// Most requests of one file running at once (plenty for the disk, and it
/// keeps the conflict checks short).
const MAX_RUNNING: usize = 32;

/// What a request touches.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read {
        start: u64,
        end: u64,
    },
    Write {
        start: u64,
        end: u64,
    },
    Sync,
    /// The length: conflicts with everything.
    Whole,
}

impl Access {
    fn conflicts(self, other: Access) -> bool {
        use Access::*;
        match (self, other) {
            (Read { .. }, Read { .. }) | (Read { .. }, Sync) | (Sync, Read { .. }) => false,
            (
                Read { start: a, end: b } | Write { start: a, end: b },
                Read { start: c, end: d } | Write { start: c, end: d },
            ) => a < d && c < b,
            _ => true,
        }
    }
}

/// A request for a file, before its handle is known.
#[derive(Clone, Debug)]
pub(crate) enum FileOp {
    Read {
        offset: u64,
        len: usize,
    },
    Write {
        runs: Vec<WriteRun>,
    },
    SetLen {
        len: u64,
    },
    Sync,
    /// An fsync that nothing may overtake or run beside, reads included:
    /// after it, what reads return stays (see `Disk::adopt`).
    Settle,
}

impl FileOp {
    pub(crate) fn access(&self) -> Access {
        match self {
            FileOp::Read { offset, len } => Access::Read {
                start: *offset,
                end: offset.saturating_add(*len as u64),
            },
            // The span of its runs: conservative, and cheap to compare.
            FileOp::Write { runs } => Access::Write {
                start: runs.iter().map(|r| r.offset).min().unwrap_or(0),
                end: runs
                    .iter()
                    .map(|r| r.offset.saturating_add(r.len()))
                    .max()
                    .unwrap_or(0),
            },
            FileOp::Sync => Access::Sync,
            FileOp::SetLen { .. } | FileOp::Settle => Access::Whole,
        }
    }

    fn with_handle(self, file: StoreFile) -> StoreOp {
        match self {
            FileOp::Read { offset, len } => StoreOp::Read { file, offset, len },
            FileOp::Write { runs } => StoreOp::Write { file, runs },
            FileOp::SetLen { len } => StoreOp::SetLen { file, len },
            FileOp::Sync | FileOp::Settle => StoreOp::Sync { file },
        }
    }
}

/// One file's waiting and running requests.
#[derive(Debug, Default)]
pub(crate) struct FileQueue {
    waiting: VecDeque<(StoreId, FileOp)>,
    running: Vec<(StoreId, Access)>,
}

impl FileQueue {
    pub(crate) fn push(&mut self, id: StoreId, op: FileOp) {
        self.waiting.push_back((id, op));
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    pub(crate) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Whether an fsync is queued or running.
    pub(crate) fn syncing(&self) -> bool {
        self.running.iter().any(|(_, a)| *a == Access::Sync)
            || self
                .waiting
                .iter()
                .any(|(_, op)| matches!(op, FileOp::Sync))
    }

    /// Takes every request that may start now, with the file's handle;
    /// `superseded` says which writes need not run any more (every byte of
    /// them was written again since): they are taken too, without a handle,
    /// to be finished at once.
    pub(crate) fn start(
        &mut self,
        handle: StoreFile,
        superseded: impl Fn(StoreId) -> bool,
    ) -> (Vec<(StoreId, StoreOp)>, Vec<StoreId>) {
        let (mut started, mut skipped) = (Vec::new(), Vec::new());
        let mut blocked: Vec<Access> = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() && blocked.len() < WINDOW && self.running.len() < MAX_RUNNING {
            let (id, op) = &self.waiting[i];
            if matches!(op, FileOp::Write { .. }) && superseded(*id) {
                skipped.push(*id);
                self.waiting.remove(i);
                continue;
            }
            let access = op.access();
            let free = !self.running.iter().any(|(_, r)| r.conflicts(access))
                && !blocked.iter().any(|b| b.conflicts(access));
            if free {
                let (id, op) = self.waiting.remove(i).expect("in range");
                self.running.push((id, access));
                started.push((id, op.with_handle(handle)));
            } else {
                blocked.push(access);
                i += 1;
            }
        }
        (started, skipped)
    }

    /// A running request finished.
    pub(crate) fn finish(&mut self, id: StoreId) {
        self.running.retain(|(r, _)| *r != id);
    }

    /// Takes every waiting request (the file can no longer be opened).
    pub(crate) fn drain_waiting(&mut self) -> Vec<StoreId> {
        self.waiting.drain(..).map(|(id, _)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn writes_written_again_before_they_ran_are_skipped() {
        let mut q = FileQueue::default();
        q.push(StoreId(1), write(0, 10));
        q.push(StoreId(2), write(0, 10));
        q.push(StoreId(3), write(0, 10));
        let (started, skipped) = q.start(StoreFile(1), |id| id.0 < 3);
        assert_eq!(skipped, vec![StoreId(1), StoreId(2)]);
        assert_eq!(started.len(), 1);
    }

    fn read(offset: u64, len: usize) -> FileOp {
        FileOp::Read { offset, len }
    }

    fn write(offset: u64, len: usize) -> FileOp {
        FileOp::Write {
            runs: vec![WriteRun {
                offset,
                parts: vec![Bytes::from(vec![0u8; len])],
            }],
        }
    }

    #[test]
    fn only_requests_that_commute_run_together_and_conflicts_keep_their_order() {
        let mut q = FileQueue::default();
        q.push(StoreId(1), write(0, 10));
        q.push(StoreId(2), read(20, 10));
        q.push(StoreId(3), read(5, 10));
        q.push(StoreId(4), FileOp::Sync);
        q.push(StoreId(5), write(30, 10));
        let ids = |q: &mut FileQueue| {
            let (started, skipped) = q.start(StoreFile(9), |_| false);
            assert!(skipped.is_empty());
            started.into_iter().map(|(i, _)| i.0).collect::<Vec<_>>()
        };
        // The read of 5..15 waits for the write of 0..10; the fsync for that
        // write; the write of 30..40 for the fsync queued before it.
        assert_eq!(ids(&mut q), vec![1, 2]);
        q.finish(StoreId(1));
        assert_eq!(ids(&mut q), vec![3, 4]);
        q.finish(StoreId(4));
        assert_eq!(ids(&mut q), vec![5]);
    }
}
