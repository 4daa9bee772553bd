//! The consistency checker. See the crate documentation for the exact model.
//!
//! The history is projected onto cells (8-byte words) and cut into server
//! runs (segments) at every restart. Each (cell, segment) is then checked
//! for linearizability ([`linear`]) and directly for read-your-writes,
//! monotonic reads, stale reads, phantom values ([`direct`]); durability and
//! silent loss are checked at every restart, and durability again at every
//! successful sync against the disk's durable image.

pub mod direct;
pub mod linear;

use std::collections::BTreeMap;
use std::fmt;

use crate::history::{Cell, History, OpKind, OpRecord};
use linear::{Act, LinOp, LinResult, check_register};

/// States the linearizability search may explore per (cell, segment).
const SEARCH_BUDGET: usize = 2_000_000;

/// Something the checker found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which check failed (`linearizability`, `read-your-writes`, ...).
    pub check: &'static str,
    /// The cell, if the check is about one.
    pub cell: Option<Cell>,
    /// What happened.
    pub detail: String,
    /// The operations involved (history ids).
    pub ops: Vec<usize>,
}

impl Violation {
    /// A violation.
    pub fn new(check: &'static str, cell: Option<Cell>, detail: String, ops: Vec<usize>) -> Self {
        Violation {
            check,
            cell,
            detail,
            ops,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.check)?;
        if let Some(c) = self.cell {
            write!(f, " cell {c}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// One operation as seen by one cell in one segment.
#[derive(Clone, Debug)]
pub struct CellOp {
    /// History id.
    pub id: usize,
    /// Client.
    pub client: usize,
    /// Client incarnation at completion.
    pub incarnation: u32,
    /// Real-time order of invocation (or of the restart that began the
    /// segment, for an operation that straddles it).
    pub invoke: u64,
    /// Real-time order of completion; `u64::MAX` when unknown.
    pub complete: u64,
    /// Whether its outcome is known (it must be linearized).
    pub mandatory: bool,
    /// A read of a value the same client wrote in the same incarnation,
    /// which was later lost with its session: the client saw its private
    /// cache, which the rest of the system never saw.
    pub private: bool,
    /// What it did.
    pub act: Act,
}

/// Facts about the history shared by the checks.
pub struct Facts<'a> {
    /// The history.
    pub history: &'a History,
    /// `(cell, value)` → the operation that wrote it.
    pub writer: BTreeMap<(Cell, u64), usize>,
}

impl<'a> Facts<'a> {
    fn new(history: &'a History) -> Self {
        let mut writer = BTreeMap::new();
        for o in &history.ops {
            match &o.kind {
                OpKind::Write { cells } => {
                    for (c, v) in cells {
                        writer.insert((*c, *v), o.id);
                    }
                }
                OpKind::Swap { cell, new } | OpKind::Cas { cell, new, .. } => {
                    writer.insert((*cell, *new), o.id);
                }
                _ => {}
            }
        }
        Facts { history, writer }
    }

    /// The values a segment may start with: what the files held after the
    /// restart that began it, or what the disk held (the kernel may drop
    /// what nobody fsynced before the new run settles the file). Equal for
    /// the first segment and after a power loss.
    pub fn initial(&self, cell: Cell, segment: u32) -> [u64; 2] {
        if segment == 0 {
            return [0, 0];
        }
        let r = &self.history.restarts[segment as usize - 1];
        let files = r.disk.get(&cell).copied().unwrap_or(0);
        [files, r.durable.get(&cell).copied().unwrap_or(files)]
    }

    /// Whether the write of value `v` certainly came before operation `w`
    /// began (it completed before `w` was invoked, or `v` is the initial
    /// zero, or it is from an earlier segment).
    pub fn before(&self, cell: Cell, v: u64, w: &OpRecord) -> bool {
        if v == 0 {
            return true;
        }
        match self.writer.get(&(cell, v)) {
            None => false,
            Some(&x) => {
                let x = &self.history.ops[x];
                x.complete_seq
                    .is_some_and(|c| c < w.invoke_seq || x.end_segment < w.segment)
            }
        }
    }

    /// A cache write whose session was lost, told or crashed, and that no
    /// sync of the same incarnation covered: it may vanish.
    pub fn possibly_lost(&self, w: &OpRecord) -> bool {
        if !matches!(w.kind, OpKind::Write { .. }) || !w.ok() {
            return false;
        }
        let Some(end) = self.history.ended.get(&(w.client, w.end_incarnation)) else {
            return false;
        };
        // A session lost at a restart may have expired before it: the
        // client cannot tell, so neither can we.
        let lost = end.crashed || (end.reason.is_some() && end.told.contains(&w.mapping));
        lost && !self.synced(w, end.seq)
    }

    /// Whether read `r` saw the private cache of its own client: the value
    /// of its own write `w` that may have been lost with the session the
    /// read was served in. An ok write must be possibly lost and of the same
    /// incarnation; a failed or pending write (it may have been applied in
    /// part) counts when the read's incarnation was lost naming the write's
    /// mapping, or the client crashed in it.
    pub fn private_read(&self, r: &OpRecord, w: &OpRecord) -> bool {
        if w.client != r.client || !matches!(w.kind, OpKind::Write { .. }) {
            return false;
        }
        if w.ok() {
            return w.end_incarnation == r.end_incarnation && self.possibly_lost(w);
        }
        self.history
            .ended
            .get(&(r.client, r.end_incarnation))
            .is_some_and(|e| e.crashed || (e.reason.is_some() && e.told.contains(&w.mapping)))
    }

    /// Whether a sync by the same client and incarnation, on the same file,
    /// began after `w` completed and completed OK before real-time `by`.
    pub fn synced(&self, w: &OpRecord, by: u64) -> bool {
        let file = match &w.kind {
            OpKind::Write { cells } => cells[0].0.file,
            OpKind::Swap { cell, .. } | OpKind::Cas { cell, .. } => cell.file,
            _ => return false,
        };
        let Some(done) = w.complete_seq else {
            return false;
        };
        self.history.ops.iter().any(|s| {
            matches!(s.kind, OpKind::Sync { file: f } if f == file)
                && s.client == w.client
                && s.incarnation == w.end_incarnation
                && s.end_incarnation == w.end_incarnation
                && s.ok()
                && s.invoke_seq > done
                && s.complete_seq.is_some_and(|c| c < by)
        })
    }
}

/// Checks a history. Returns what it found and how many operation outcomes
/// it looked at.
pub fn check(history: &History) -> (Vec<Violation>, u64) {
    let facts = Facts::new(history);
    let mut out = Vec::new();
    let segments = history.restarts.len() as u32 + 1;
    for &cell in &history.cells {
        for seg in 0..segments {
            let ops = project(&facts, cell, seg);
            direct::check_cell(&facts, cell, seg, &ops, &mut out);
            let lin: Vec<LinOp> = ops
                .iter()
                .filter(|o| !o.private)
                .map(|o| LinOp {
                    id: o.id,
                    invoke: o.invoke,
                    complete: o.complete,
                    mandatory: o.mandatory,
                    act: o.act,
                })
                .collect();
            let [first, other] = facts.initial(cell, seg);
            let mut verdict = check_register(first, &lin, SEARCH_BUDGET);
            if other != first && verdict != LinResult::Linearizable {
                let again = check_register(other, &lin, SEARCH_BUDGET);
                if again == LinResult::Linearizable {
                    verdict = again;
                }
            }
            match verdict {
                LinResult::Linearizable => {}
                LinResult::GaveUp => out.push(Violation::new(
                    "inconclusive",
                    Some(cell),
                    format!("segment {seg}: the linearizability search passed its budget"),
                    Vec::new(),
                )),
                LinResult::NotLinearizable { prefix } => {
                    let mut d = format!(
                        "segment {seg} (starts at {} or {}): no linearization of {} operations; longest linearizable prefix {:?}; the operations:",
                        crate::history::show_value(first),
                        crate::history::show_value(other),
                        lin.len(),
                        prefix
                    );
                    for o in &ops {
                        d.push_str(&format!(
                            "\n    {}{}",
                            history.ops[o.id],
                            if o.mandatory { "" } else { " (optional)" }
                        ));
                    }
                    out.push(Violation::new(
                        "linearizability",
                        Some(cell),
                        d,
                        ops.iter().map(|o| o.id).collect(),
                    ));
                }
            }
        }
    }
    direct::check_restarts(&facts, &mut out);
    direct::check_syncs(&facts, &mut out);
    direct::check_old_run_reads(&facts, &mut out);
    (out, history.ops.len() as u64)
}

/// The operations that touch `cell` in segment `seg`.
fn project(facts: &Facts<'_>, cell: Cell, seg: u32) -> Vec<CellOp> {
    let h = facts.history;
    let seg_start = if seg == 0 {
        0
    } else {
        h.restarts[seg as usize - 1].seq
    };
    let mut out = Vec::new();
    for o in &h.ops {
        // Pending operations may take effect in any later segment.
        let last = if o.complete_seq.is_some() {
            o.end_segment
        } else {
            u32::MAX
        };
        if seg < o.segment || seg > last {
            continue;
        }
        let straddles = o.segment != last;
        let invoke = if seg == o.segment {
            o.invoke_seq
        } else {
            seg_start
        };
        let bound = o.complete_seq.filter(|_| seg == last).unwrap_or(u64::MAX);
        let ok = o.ok();
        let base = CellOp {
            id: o.id,
            client: o.client,
            incarnation: o.end_incarnation,
            invoke,
            complete: u64::MAX,
            mandatory: false,
            private: false,
            act: Act::Read(0),
        };
        let op = match &o.kind {
            OpKind::Read { cells, .. } => {
                let Some(i) = cells.iter().position(|c| *c == cell) else {
                    continue;
                };
                if !ok || straddles {
                    continue;
                }
                let v = o.read[i];
                let private = facts
                    .writer
                    .get(&(cell, v))
                    .is_some_and(|&w| facts.private_read(o, &h.ops[w]));
                CellOp {
                    complete: bound,
                    mandatory: true,
                    private,
                    act: Act::Read(v),
                    ..base
                }
            }
            OpKind::Write { cells } => {
                let Some((_, v)) = cells.iter().find(|(c, _)| *c == cell) else {
                    continue;
                };
                let mandatory = ok && !straddles && !facts.possibly_lost(o);
                CellOp {
                    complete: if ok { bound } else { u64::MAX },
                    mandatory,
                    act: Act::Write(*v),
                    ..base
                }
            }
            OpKind::Swap { cell: c, new } if *c == cell => {
                let known = ok && seg == last;
                let prev = if known { o.read.first().copied() } else { None };
                CellOp {
                    complete: if known { bound } else { u64::MAX },
                    mandatory: known,
                    act: Act::Swap { new: *new, prev },
                    ..base
                }
            }
            OpKind::Cas {
                cell: c,
                expected,
                new,
            } if *c == cell => {
                let known = ok && seg == last;
                let result = if known {
                    o.read.first().map(|p| (*p, o.applied))
                } else {
                    None
                };
                CellOp {
                    complete: if known { bound } else { u64::MAX },
                    mandatory: known,
                    act: Act::Cas {
                        expected: *expected,
                        new: *new,
                        result,
                    },
                    ..base
                }
            }
            _ => continue,
        };
        out.push(op);
    }
    out
}
