//! Checks stated directly rather than through a linearization: they name
//! the guarantee that broke, which makes failures easier to read.

use crate::history::{Cell, OpKind, OpRecord, show_value};

use super::linear::Act;
use super::{CellOp, Facts, Violation};

/// The value a write-like operation stores in `cell`, if it stored one.
fn stored(o: &OpRecord, cell: Cell) -> Option<u64> {
    if !o.ok() {
        return None;
    }
    match &o.kind {
        OpKind::Write { cells } => cells.iter().find(|(c, _)| *c == cell).map(|(_, v)| *v),
        OpKind::Swap { cell: c, new } if *c == cell => Some(*new),
        OpKind::Cas { cell: c, new, .. } if *c == cell && o.applied => Some(*new),
        _ => None,
    }
}

/// Read-your-writes, monotonic reads, stale reads and phantom values on one
/// cell in one segment.
pub fn check_cell(
    facts: &Facts<'_>,
    cell: Cell,
    seg: u32,
    ops: &[CellOp],
    out: &mut Vec<Violation>,
) {
    let h = facts.history;
    let reads: Vec<(&CellOp, u64)> = ops
        .iter()
        .filter_map(|o| match o.act {
            Act::Read(v) => Some((o, v)),
            _ => None,
        })
        .collect();
    let init = facts.initial(cell, seg);
    for (r, v) in &reads {
        if *v == init {
            continue;
        }
        match facts.writer.get(&(cell, *v)) {
            None => out.push(Violation::new(
                "phantom-value",
                Some(cell),
                format!("{} returned a value nobody wrote", h.ops[r.id]),
                vec![r.id],
            )),
            Some(&w) if h.ops[w].invoke_seq > r.complete => out.push(Violation::new(
                "phantom-value",
                Some(cell),
                format!(
                    "{} returned the value of {}, invoked after the read completed",
                    h.ops[r.id], h.ops[w]
                ),
                vec![r.id, w],
            )),
            Some(_) => {}
        }
    }
    // Read-your-writes, across reconnections, unless the write was lost
    // with its session (then only within the incarnation).
    for w in ops
        .iter()
        .filter(|o| matches!(o.act, Act::Write(_)) && o.complete != u64::MAX)
    {
        let wr = &h.ops[w.id];
        if !wr.ok() || wr.segment != seg || wr.end_segment != seg {
            continue;
        }
        let lost = facts.possibly_lost(wr);
        for (r, v) in &reads {
            if r.client != w.client
                || r.invoke <= w.complete
                || (lost && r.incarnation != wr.end_incarnation)
            {
                continue;
            }
            if facts.before(cell, *v, wr) {
                out.push(Violation::new(
                    "read-your-writes",
                    Some(cell),
                    format!("{} did not see the client's own earlier {wr}", h.ops[r.id]),
                    vec![w.id, r.id],
                ));
            }
        }
    }
    // Monotonic reads (per client) and stale reads (across clients): once a
    // read saw the value of write W, no later read sees a value written
    // before W began.
    for (r1, v1) in &reads {
        let Some(&w1) = facts.writer.get(&(cell, *v1)) else {
            continue;
        };
        let w1 = &h.ops[w1];
        for (r2, v2) in &reads {
            if r2.invoke <= r1.complete || v2 == v1 {
                continue;
            }
            let same = r1.client == r2.client;
            if r1.private && (!same || r2.incarnation != r1.incarnation) {
                continue;
            }
            if facts.before(cell, *v2, w1) {
                out.push(Violation::new(
                    if same { "monotonic-reads" } else { "stale-read" },
                    Some(cell),
                    format!(
                        "{} saw {} after {} had seen {} (written by {w1}); an overwritten value came back",
                        h.ops[r2.id],
                        show_value(*v2),
                        h.ops[r1.id],
                        show_value(*v1)
                    ),
                    vec![r1.id, r2.id, w1.id],
                ));
            }
        }
    }
}

/// At every server restart: nothing synced is lost, and nothing unsynced is
/// lost without its client being told.
pub fn check_restarts(facts: &Facts<'_>, out: &mut Vec<Violation>) {
    let h = facts.history;
    for (k, r) in h.restarts.iter().enumerate() {
        let k = k as u32;
        for (&cell, &d) in &r.disk {
            if d != 0 && !facts.writer.contains_key(&(cell, d)) {
                let msg = format!(
                    "after restart {k} the disk holds {}, which nobody wrote",
                    show_value(d)
                );
                out.push(Violation::new("phantom-value", Some(cell), msg, Vec::new()));
                continue;
            }
            for w in &h.ops {
                let Some(v) = stored(w, cell) else { continue };
                if w.end_segment > k || v == d || !facts.before(cell, d, w) {
                    continue;
                }
                // The disk holds something older than w: w is gone.
                if facts.synced(w, r.seq) {
                    out.push(Violation::new(
                        "durability",
                        Some(cell),
                        format!(
                            "{w} was synced, but after restart {k} (crash={}) the disk holds the older {}",
                            r.crash,
                            show_value(d)
                        ),
                        vec![w.id],
                    ));
                } else if w.segment == k && !told(facts, w) {
                    out.push(Violation::new(
                        "silent-loss",
                        Some(cell),
                        format!(
                            "{w} was lost in restart {k} (crash={}; the disk holds {}) and client {} was never told \
                             (no SessionLost naming {:?}, no operation failed with session_lost)",
                            r.crash,
                            show_value(d),
                            w.client,
                            w.mapping
                        ),
                        vec![w.id],
                    ));
                }
            }
        }
    }
}

/// Whether the client learnt that `w`'s mapping lost writes (or crashed).
fn told(facts: &Facts<'_>, w: &OpRecord) -> bool {
    let h = facts.history;
    h.ended
        .range((w.client, w.end_incarnation)..(w.client + 1, 0))
        .any(|(_, e)| e.crashed || e.told.contains(&w.mapping))
        || h.told_by_error.contains_key(&(w.client, w.mapping))
}

/// A client that has not yet noticed a server restart may still serve reads
/// from its cache (its lease is valid). That is only safe while nobody can
/// change the data in the new server run: a read served from the old run
/// must not begin after a write of the new run to the same cell completed.
pub fn check_old_run_reads(facts: &Facts<'_>, out: &mut Vec<Violation>) {
    let h = facts.history;
    if h.restarts.is_empty() {
        return;
    }
    for r in h
        .ops
        .iter()
        .filter(|r| r.ok() && r.segment == r.end_segment)
    {
        let OpKind::Read { cells, .. } = &r.kind else {
            continue;
        };
        for (i, &cell) in cells.iter().enumerate() {
            let newer = h.ops.iter().find(|w| {
                w.segment > r.segment
                    && w.segment == w.end_segment
                    && w.complete_seq.is_some_and(|c| c < r.invoke_seq)
                    && stored(w, cell).is_some_and(|v| v != r.read[i])
                    && !facts.possibly_lost(w)
            });
            if let Some(w) = newer {
                out.push(Violation::new(
                    "old-run-read",
                    Some(cell),
                    format!(
                        "{r} was served from server run {} after {w} had completed in run {}: \
                         a restarted server let a write through while an old cache was still trusted",
                        r.segment, w.segment
                    ),
                    vec![r.id, w.id],
                ));
            }
        }
    }
}
