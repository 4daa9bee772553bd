//! Checks stated directly rather than through a linearization: they name
//! the guarantee that broke, which makes failures easier to read.

use crate::history::{Cell, OpKind, OpRecord, show_value, torn_halves};

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
        if init.contains(v) {
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

/// What a word on the disk stands for in the checks below: a word torn by
/// a short write counts as the older of its two halves (the newer write did
/// not reach the disk whole).
fn effective(raw: u64) -> u64 {
    torn_halves(raw).map_or(raw, |(_, older)| older)
}

/// The values a word on the disk is made of (both halves of a torn word)
/// that nobody wrote.
fn unwritten_parts(facts: &Facts<'_>, cell: Cell, raw: u64) -> Vec<u64> {
    let parts = match torn_halves(raw) {
        Some((newer, older)) => vec![newer, older],
        None => vec![raw],
    };
    parts
        .into_iter()
        .filter(|v| *v != 0 && !facts.writer.contains_key(&(cell, *v)))
        .collect()
}

/// At every server restart: nothing synced is lost, and nothing unsynced is
/// lost without its client being told.
pub fn check_restarts(facts: &Facts<'_>, out: &mut Vec<Violation>) {
    let h = facts.history;
    for (k, r) in h.restarts.iter().enumerate() {
        let k = k as u32;
        for (&cell, &raw) in &r.disk {
            // Losses are judged by what the disk holds: what only the
            // kernel held may still vanish (clients were told it may).
            let held = r.durable.get(&cell).copied().unwrap_or(raw);
            if let Some(&bad) = [raw, held]
                .iter()
                .find(|v| !unwritten_parts(facts, cell, **v).is_empty())
            {
                let msg = format!(
                    "after restart {k} the disk holds {}, which nobody wrote",
                    show_value(bad)
                );
                out.push(Violation::new("phantom-value", Some(cell), msg, Vec::new()));
                continue;
            }
            let raw = held;
            let d = effective(raw);
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
                            "{w} was synced, but after restart {k} (crash={}, graceful={}) the disk holds the older {}",
                            r.crash,
                            r.graceful,
                            show_value(raw)
                        ),
                        vec![w.id],
                    ));
                } else if w.segment == k && !told(facts, w) {
                    out.push(Violation::new(
                        "silent-loss",
                        Some(cell),
                        format!(
                            "{w} was lost in restart {k} (crash={}, graceful={}; the disk holds {}) and client {} was never told \
                             (no SessionLost naming {:?}, no operation failed with session_lost)",
                            r.crash,
                            r.graceful,
                            show_value(raw),
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

/// At every sync that completed OK: every write (or atomic) its client
/// completed in the same incarnation before invoking it is on the disk's
/// durable image of the file at that moment (its value, or a value written
/// later), so that a power loss right then would keep it. A sync that
/// reports success for data the disk does not hold is the one lie the
/// durability guarantee forbids.
pub fn check_syncs(facts: &Facts<'_>, out: &mut Vec<Violation>) {
    let h = facts.history;
    for (&sid, image) in &h.synced_images {
        let s = &h.ops[sid];
        if s.end_incarnation != s.incarnation {
            continue;
        }
        for (&cell, &raw) in image {
            if !unwritten_parts(facts, cell, raw).is_empty() {
                let msg = format!(
                    "when {s} completed, the durable image holds {}, which nobody wrote",
                    show_value(raw)
                );
                out.push(Violation::new("phantom-value", Some(cell), msg, vec![sid]));
                continue;
            }
            let d = effective(raw);
            for w in &h.ops {
                let Some(v) = stored(w, cell) else { continue };
                if w.client != s.client
                    || w.end_incarnation != s.incarnation
                    || w.complete_seq.is_none_or(|c| c > s.invoke_seq)
                    || v == d
                    || !facts.before(cell, d, w)
                {
                    continue;
                }
                out.push(Violation::new(
                    "sync-durability",
                    Some(cell),
                    format!(
                        "{s} reported success, but the disk's durable image holds the older {} \
                         where {w}, completed before the sync began, wrote {}",
                        show_value(raw),
                        show_value(v)
                    ),
                    vec![w.id, sid],
                ));
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
