//! A per-word history checker: every read sees the latest completed write.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// One operation on one word, with logical times from a global counter
/// taken just before it started and just after it completed.
#[derive(Clone, Debug)]
pub struct Record {
    pub slot: u64,
    pub write: bool,
    pub value: u64,
    pub start: u64,
    pub end: u64,
}

/// Collects records from many tasks.
#[derive(Default)]
pub struct History {
    clock: AtomicU64,
    records: Mutex<Vec<Record>>,
}

impl History {
    pub fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    pub fn record(&self, r: Record) {
        self.records.lock().unwrap().push(r);
    }

    pub fn len(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    /// Checks every read: it saw the initial value or a write that had
    /// started before the read ended, and never a value that was already
    /// overwritten (a write that completed before the last write completed
    /// before the read began had even started). Returns the violations.
    pub fn violations(&self, initial: u64) -> Vec<String> {
        let records = self.records.lock().unwrap().clone();
        let mut writes: BTreeMap<(u64, u64), Record> = BTreeMap::new();
        for r in records.iter().filter(|r| r.write) {
            writes.insert((r.slot, r.value), r.clone());
        }
        let mut bad = Vec::new();
        for r in records.iter().filter(|r| !r.write) {
            // The last write to this slot that completed before the read began.
            let last = writes
                .values()
                .filter(|w| w.slot == r.slot && w.end < r.start)
                .max_by_key(|w| w.end);
            if r.value == initial {
                if let Some(l) = last {
                    bad.push(format!(
                        "read {r:?} saw the initial value after {l:?} completed"
                    ));
                }
                continue;
            }
            let Some(w) = writes.get(&(r.slot, r.value)) else {
                bad.push(format!("read {r:?} saw a value nobody wrote"));
                continue;
            };
            if w.start > r.end {
                bad.push(format!(
                    "read {r:?} saw {w:?}, which started after the read ended"
                ));
            }
            if let Some(l) = last
                && w.end < l.start
            {
                bad.push(format!(
                    "read {r:?} saw {w:?}, overwritten by {l:?} before the read began"
                ));
            }
        }
        bad
    }
}
