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
///
/// The upper half is the name (`client + 1` in 4 bits, the operation in 20,
/// the word in 8) and the lower half a scrambled copy of it, so that a word
/// torn by a short write (the first bytes of one value over the last of
/// another) is never a valid value, and [`torn_halves`] names both parts.
pub fn encode_value(client: usize, op: u64, word: usize) -> u64 {
    assert!(
        client < 15 && op < 1 << 20 && word < 1 << 8,
        "values name at most 15 clients, 2^20 operations per client and 256 words"
    );
    let name = ((client as u32 + 1) << 28) | ((op as u32) << 8) | word as u32;
    join(name, scramble(name))
}

/// A bijection of `u32` with `scramble(0) == 0` (multiplication by an odd
/// constant).
const SCRAMBLE: u32 = 0x9E37_79B1;

fn scramble(name: u32) -> u32 {
    name.wrapping_mul(SCRAMBLE)
}

fn unscramble(x: u32) -> u32 {
    // The inverse of SCRAMBLE modulo 2^32, by Newton's iteration.
    let mut inv = SCRAMBLE;
    for _ in 0..5 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(SCRAMBLE.wrapping_mul(inv)));
    }
    x.wrapping_mul(inv)
}

fn join(name: u32, check: u32) -> u64 {
    ((name as u64) << 32) | check as u64
}

/// The value whose name is `name` (0 is the initial value).
fn named(name: u32) -> u64 {
    join(name, scramble(name))
}

/// Whether `v` is a value some write could have stored (or the initial 0).
pub fn is_valid_value(v: u64) -> bool {
    v == named((v >> 32) as u32)
}

/// A word torn by a short write: `(newer, older)`, the value whose first
/// four bytes (the lower half: words are little-endian) it holds and the
/// value whose last four bytes it holds. `None` for a valid value.
pub fn torn_halves(v: u64) -> Option<(u64, u64)> {
    if is_valid_value(v) {
        return None;
    }
    Some((named(unscramble(v as u32)), named((v >> 32) as u32)))
}

/// Renders a value as `c<client>#<op>.<word>` (or `init`, or both halves
/// of a torn word).
pub fn show_value(v: u64) -> String {
    if let Some((newer, older)) = torn_halves(v) {
        return format!("torn({}|{})", show_value(newer), show_value(older));
    }
    if v == 0 {
        return "init".into();
    }
    let name = (v >> 32) as u32;
    format!(
        "c{}#{}.{}",
        (name >> 28).wrapping_sub(1),
        (name >> 8) & 0xF_FFFF,
        name & 0xFF
    )
}

/// The value of every cell of `cells` in the files `contents` gives (0 past
/// a file's end, or for a file it does not know).
pub fn cell_values(
    cells: &[Cell],
    mut contents: impl FnMut(usize) -> Option<Vec<u8>>,
) -> BTreeMap<Cell, u64> {
    let mut files: BTreeMap<usize, Option<Vec<u8>>> = BTreeMap::new();
    cells
        .iter()
        .map(|c| {
            let bytes = files.entry(c.file).or_insert_with(|| contents(c.file));
            let at = c.offset as usize;
            let v = bytes
                .as_deref()
                .and_then(|b| b.get(at..at + 8))
                .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
            (*c, v)
        })
        .collect()
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
    /// Per sync that completed OK (history id): what each cell of its file
    /// held on the disk's durable image at that moment (what a crash then
    /// would have left).
    pub synced_images: BTreeMap<usize, BTreeMap<Cell, u64>>,
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
    /// The server shut down gracefully first (it may have run out of time
    /// and been killed).
    pub graceful: bool,
    /// What each cell held in the files afterwards (what the kernel holds,
    /// written or not).
    pub disk: BTreeMap<Cell, u64>,
    /// What each cell held on the disk itself (what an fsync made
    /// durable). After a restart without a power loss the two may differ:
    /// the kernel still holds bytes nobody fsynced, and drops them if an
    /// fsync fails before the new run settles the file, so the new run
    /// starts from either.
    pub durable: BTreeMap<Cell, u64>,
}
