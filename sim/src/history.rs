//! The history of a run: every operation with its invocation and completion,
//! the sessions clients went through, and what the disk held after each
//! server restart.
//!
//! Real-time order is kept as a sequence number (`seq`) taken from one
//! counter for every invocation and completion, so "A completed before B was
//! invoked" is exact even when both happen at the same virtual instant.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rmmap_core::Instant;
use rmmap_core::client::MappingId;

/// An 8-byte word of a file that the workload reads and writes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    /// Which file (index into the workload's files).
    pub file: usize,
    /// Byte offset in the file, a multiple of 8.
    pub offset: u64,
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "f{}@{}", self.file, self.offset)
    }
}

/// Every written word is unique: it names the client, the operation and the
/// word within it, so a read names the write it saw. 0 is the initial value.
pub fn encode_value(client: usize, op: u64, word: usize) -> u64 {
    ((client as u64 + 1) << 56) | ((op & 0xFF_FFFF_FFFF) << 8) | (word as u64 & 0xFF)
}

/// Renders a value as `c<client>#<op>.<word>` (or `init`).
pub fn show_value(v: u64) -> String {
    if v == 0 {
        "init".into()
    } else {
        format!(
            "c{}#{}.{}",
            (v >> 56).wrapping_sub(1),
            (v >> 8) & 0xFF_FFFF_FFFF,
            v & 0xFF
        )
    }
}

/// What an operation asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Read these cells (one contiguous range).
    Read {
        /// Byte offset where the range starts.
        offset: u64,
        /// The cells covered, in address order.
        cells: Vec<Cell>,
    },
    /// Write these values (one contiguous range).
    Write {
        /// `(cell, value)` in address order.
        cells: Vec<(Cell, u64)>,
    },
    /// Sync a mapping of this file.
    Sync {
        /// The file.
        file: usize,
    },
    /// Atomic swap at the server.
    Swap {
        /// The word.
        cell: Cell,
        /// The new value.
        new: u64,
    },
    /// Atomic compare-exchange at the server.
    Cas {
        /// The word.
        cell: Cell,
        /// Expected value.
        expected: u64,
        /// The new value.
        new: u64,
    },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not completed (yet, or ever: the client crashed).
    Pending,
    /// Completed successfully.
    Ok,
    /// Completed with an error (`OpError::kind`). For writes and atomics this
    /// means "may or may not have happened, at most once".
    Failed(String),
}

/// One operation.
#[derive(Clone, Debug)]
pub struct OpRecord {
    /// Index in the history.
    pub id: usize,
    /// The client.
    pub client: usize,
    /// The client's session incarnation at invocation (0, 1, ...: one more
    /// after every lost session).
    pub incarnation: u32,
    /// The client's incarnation at completion (the one whose cache a write
    /// landed in: a write that had touched a page of the old one would
    /// have failed with its mapping).
    pub end_incarnation: u32,
    /// The server run (0, then one more per restart) whose state the
    /// operation acted on at invocation: the run the client's session was
    /// made in. A client that has not yet noticed a restart still acts on
    /// the old run (from its cache).
    pub segment: u32,
    /// The server run of the client's session at completion.
    pub end_segment: u32,
    /// The mapping used.
    pub mapping: MappingId,
    /// Virtual time of invocation.
    pub invoke_at: Instant,
    /// Virtual time of completion.
    pub complete_at: Option<Instant>,
    /// Real-time order of invocation.
    pub invoke_seq: u64,
    /// Real-time order of completion.
    pub complete_seq: Option<u64>,
    /// What was asked.
    pub kind: OpKind,
    /// How it ended.
    pub outcome: Outcome,
    /// Values read (reads), or the previous value (atomics).
    pub read: Vec<u64>,
    /// Whether a compare-exchange applied.
    pub applied: bool,
}

impl OpRecord {
    /// Completed successfully.
    pub fn ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }
}

impl fmt::Display for OpRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "op{} c{} inc{} seg{} [{:?}..",
            self.id, self.client, self.incarnation, self.segment, self.invoke_at
        )?;
        match self.complete_at {
            Some(t) => write!(f, "{t:?}]")?,
            None => write!(f, "]")?,
        }
        match &self.kind {
            OpKind::Read { cells, .. } => {
                write!(f, " read")?;
                for (i, c) in cells.iter().enumerate() {
                    match self.read.get(i) {
                        Some(v) => write!(f, " {c}={}", show_value(*v))?,
                        None => write!(f, " {c}=?")?,
                    }
                }
            }
            OpKind::Write { cells } => {
                write!(f, " write")?;
                for (c, v) in cells {
                    write!(f, " {c}:={}", show_value(*v))?;
                }
            }
            OpKind::Sync { file } => write!(f, " sync f{file}")?,
            OpKind::Swap { cell, new } => write!(
                f,
                " swap {cell}:={} prev={}",
                show_value(*new),
                self.read.first().map_or("?".into(), |v| show_value(*v))
            )?,
            OpKind::Cas {
                cell,
                expected,
                new,
            } => write!(
                f,
                " cas {cell} {}->{} prev={} applied={}",
                show_value(*expected),
                show_value(*new),
                self.read.first().map_or("?".into(), |v| show_value(*v)),
                self.applied
            )?,
        }
        write!(f, " {:?}", self.outcome)
    }
}

/// How a client's session incarnation ended.
#[derive(Clone, Debug, Default)]
pub struct IncarnationEnd {
    /// The session was lost (`SessionLost` event) for this reason (Debug text).
    pub reason: Option<String>,
    /// The mappings the client was told lost writes.
    pub told: BTreeSet<MappingId>,
    /// The client crashed during this incarnation.
    pub crashed: bool,
    /// Real-time order of the end.
    pub seq: u64,
}

/// Everything the checker needs.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// The operations.
    pub ops: Vec<OpRecord>,
    /// `(client, incarnation)` → how it ended (absent: still alive).
    pub ended: BTreeMap<(usize, u32), IncarnationEnd>,
    /// Per server restart (segment k+1 starts): the real-time order of the
    /// restart, whether it was a crash, and every cell's value on disk.
    pub restarts: Vec<Restart>,
    /// The cells of the workload.
    pub cells: Vec<Cell>,
    /// `(client, incarnation)` → the server run its session was made in.
    pub inc_segment: BTreeMap<(usize, u32), u32>,
    /// Mappings the client was told lost writes through failed operations
    /// (`OpError::SessionLost`), with the real-time order.
    pub told_by_error: BTreeMap<(usize, MappingId), u64>,
}

/// A server restart.
#[derive(Clone, Debug)]
pub struct Restart {
    /// Real-time order.
    pub seq: u64,
    /// Virtual time.
    pub at: Instant,
    /// The store lost what was not synced.
    pub crash: bool,
    /// What each cell held on disk afterwards.
    pub disk: BTreeMap<Cell, u64>,
}
