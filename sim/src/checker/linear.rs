//! Linearizability of one register (one cell), Wing-Gong style with Lowe's
//! memoization: a depth-first search for an order of the operations that
//! respects real time and the register's semantics, remembering every
//! (set of linearized operations, value) it has already explored.
//!
//! Operations with an unknown outcome are *optional*: they may be placed
//! once, anywhere after their invocation (and before their completion, if
//! they have one), or left out.

use std::collections::HashSet;

/// What an operation does to the register.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Act {
    /// Store a value.
    Write(u64),
    /// Return the current value.
    Read(u64),
    /// Store `new`, returning the previous value (`None`: not known).
    Swap {
        /// Stored value.
        new: u64,
        /// Returned value, when known.
        prev: Option<u64>,
    },
    /// Store `new` if the value is `expected`; returns the previous value
    /// and whether it stored (`None`: not known).
    Cas {
        /// Expected value.
        expected: u64,
        /// Stored value.
        new: u64,
        /// Returned `(previous, applied)`, when known.
        result: Option<(u64, bool)>,
    },
}

impl Act {
    /// The value after this act on `v`, or `None` if it cannot happen there.
    fn apply(self, v: u64) -> Option<u64> {
        match self {
            Act::Write(n) => Some(n),
            Act::Read(r) => (r == v).then_some(v),
            Act::Swap { new, prev } => prev.is_none_or(|p| p == v).then_some(new),
            Act::Cas {
                expected,
                new,
                result,
            } => match result {
                None => Some(if v == expected { new } else { v }),
                Some((prev, applied)) => {
                    if prev != v || applied != (v == expected) {
                        None
                    } else if applied {
                        Some(new)
                    } else {
                        Some(v)
                    }
                }
            },
        }
    }
}

/// One operation on the register.
#[derive(Clone, Debug)]
pub struct LinOp {
    /// Index in the history (for reports).
    pub id: usize,
    /// Real-time order of invocation.
    pub invoke: u64,
    /// Real-time order of completion (`u64::MAX`: none).
    pub complete: u64,
    /// Must be placed (its outcome is known).
    pub mandatory: bool,
    /// What it does.
    pub act: Act,
}

/// The verdict on one register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinResult {
    /// A linearization exists.
    Linearizable,
    /// None exists; the longest linearizable prefix (history ids, in order).
    NotLinearizable {
        /// The longest prefix found.
        prefix: Vec<usize>,
    },
    /// The search passed its budget of states.
    GaveUp,
}

/// Leaves out every optional operation whose stored value no operation
/// returns or expects. This does not change the verdict (values are
/// unique). Take a linearization that places such an operation W storing v:
/// the operations after it, up to the next unconditional store, cannot be
/// reads (they would return v) nor swaps or compare-exchanges with a known
/// result (it would name v), so they are optional compare-exchanges, which
/// did not apply (none expects v). Taking out W and those leaves a
/// linearization of the rest. Failed and lost writes are mostly never seen,
/// and each one left in doubles the orders the search may have to try.
fn drop_unobserved(ops: &[LinOp]) -> Vec<LinOp> {
    let seen: HashSet<u64> = ops
        .iter()
        .flat_map(|o| match o.act {
            Act::Read(v) => [Some(v), None],
            Act::Swap { prev, .. } => [prev, None],
            Act::Cas {
                expected, result, ..
            } => [Some(expected), result.map(|(p, _)| p)],
            Act::Write(_) => [None, None],
        })
        .flatten()
        .collect();
    ops.iter()
        .filter(|o| {
            o.mandatory
                || match o.act {
                    Act::Write(v) | Act::Swap { new: v, .. } | Act::Cas { new: v, .. } => {
                        seen.contains(&v)
                    }
                    Act::Read(_) => true,
                }
        })
        .cloned()
        .collect()
}

struct Search<'a> {
    ops: &'a [LinOp],
    seen: HashSet<(Vec<u64>, u64)>,
    budget: usize,
    mandatory_left: usize,
    path: Vec<usize>,
    best: Vec<usize>,
    gave_up: bool,
}

/// Checks that `ops` (in any order) on a register starting at `init` are
/// linearizable. `budget` bounds the states explored.
pub fn check_register(init: u64, ops: &[LinOp], budget: usize) -> LinResult {
    let mut ops = drop_unobserved(ops);
    ops.sort_by_key(|o| (o.invoke, o.id));
    let words = ops.len().div_ceil(64);
    let mut s = Search {
        ops: &ops,
        seen: HashSet::new(),
        budget,
        mandatory_left: ops.iter().filter(|o| o.mandatory).count(),
        path: Vec::new(),
        best: Vec::new(),
        gave_up: false,
    };
    let mut done = vec![0u64; words];
    if s.dfs(&mut done, init, 0) {
        LinResult::Linearizable
    } else if s.gave_up {
        LinResult::GaveUp
    } else {
        LinResult::NotLinearizable {
            prefix: s.best.iter().map(|i| ops[*i].id).collect(),
        }
    }
}

impl Search<'_> {
    fn dfs(&mut self, done: &mut [u64], value: u64, frontier: u64) -> bool {
        if self.mandatory_left == 0 {
            return true;
        }
        if self.seen.len() >= self.budget {
            self.gave_up = true;
            return false;
        }
        if !self.seen.insert((done.to_vec(), value)) {
            return false;
        }
        if self.path.len() > self.best.len() {
            self.best = self.path.clone();
        }
        let is_done = |d: &[u64], i: usize| d[i / 64] & (1 << (i % 64)) != 0;
        let deadline = (0..self.ops.len())
            .filter(|i| self.ops[*i].mandatory && !is_done(done, *i))
            .map(|i| self.ops[i].complete)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..self.ops.len() {
            let o = &self.ops[i];
            if o.invoke >= deadline {
                break;
            }
            if is_done(done, i) || o.complete <= frontier {
                continue;
            }
            let Some(next) = o.act.apply(value) else {
                continue;
            };
            let mandatory = o.mandatory;
            done[i / 64] |= 1 << (i % 64);
            if mandatory {
                self.mandatory_left -= 1;
            }
            self.path.push(i);
            let ok = self.dfs(done, next, frontier.max(o.invoke));
            self.path.pop();
            if mandatory {
                self.mandatory_left += 1;
            }
            done[i / 64] &= !(1 << (i % 64));
            if ok {
                return true;
            }
            if self.gave_up {
                return false;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: usize, invoke: u64, complete: u64, act: Act) -> LinOp {
        LinOp {
            id,
            invoke,
            complete,
            mandatory: true,
            act,
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let ops = [op(0, 1, 2, Act::Write(5)), op(1, 3, 4, Act::Read(5))];
        assert_eq!(check_register(0, &ops, 1000), LinResult::Linearizable);
    }

    #[test]
    fn stale_read_after_completed_write_is_not() {
        let ops = [op(0, 1, 2, Act::Write(5)), op(1, 3, 4, Act::Read(0))];
        assert!(matches!(
            check_register(0, &ops, 1000),
            LinResult::NotLinearizable { .. }
        ));
    }

    #[test]
    fn concurrent_read_may_see_either() {
        let ops = [
            op(0, 1, 4, Act::Write(5)),
            op(1, 2, 3, Act::Read(0)),
            op(2, 2, 3, Act::Read(5)),
        ];
        assert_eq!(check_register(0, &ops, 1000), LinResult::Linearizable);
    }

    #[test]
    fn unknown_write_may_or_may_not_happen_but_only_once() {
        let mut w = op(0, 1, u64::MAX, Act::Write(5));
        w.mandatory = false;
        let seen = [w.clone(), op(1, 5, 6, Act::Read(5))];
        assert_eq!(check_register(0, &seen, 1000), LinResult::Linearizable);
        let unseen = [w.clone(), op(1, 5, 6, Act::Read(0))];
        assert_eq!(check_register(0, &unseen, 1000), LinResult::Linearizable);
        // Seen, overwritten, then seen again: it would have to happen twice.
        let twice = [
            w,
            op(1, 5, 6, Act::Read(5)),
            op(2, 7, 8, Act::Write(9)),
            op(3, 9, 10, Act::Read(9)),
            op(4, 11, 12, Act::Read(5)),
        ];
        assert!(matches!(
            check_register(0, &twice, 1000),
            LinResult::NotLinearizable { .. }
        ));
    }

    #[test]
    fn unseen_optional_writes_are_left_out_without_changing_the_verdict() {
        let mut lost = op(0, 1, u64::MAX, Act::Write(5));
        lost.mandatory = false;
        let mut seen = op(1, 1, u64::MAX, Act::Write(6));
        seen.mandatory = false;
        let reads = [op(2, 3, 4, Act::Read(6)), op(3, 5, 6, Act::Read(6))];
        let all: Vec<LinOp> = [lost, seen].into_iter().chain(reads).collect();
        let kept: Vec<usize> = drop_unobserved(&all).iter().map(|o| o.id).collect();
        assert_eq!(kept, vec![1, 2, 3]);
        assert_eq!(check_register(0, &all, 1000), LinResult::Linearizable);
        // Many concurrent unknown writes nobody saw cost nothing.
        let mut many: Vec<LinOp> = (0..200)
            .map(|i| {
                let mut w = op(10 + i, 1, u64::MAX, Act::Write(100 + i as u64));
                w.mandatory = false;
                w
            })
            .collect();
        many.push(op(1, 2, 3, Act::Read(0)));
        many.push(op(2, 4, 5, Act::Write(7)));
        many.push(op(3, 6, 7, Act::Read(7)));
        assert_eq!(check_register(0, &many, 1000), LinResult::Linearizable);
        // A compare-exchange that expects an unseen value keeps its writer:
        // without the write it could not have applied.
        let mut w = op(0, 1, u64::MAX, Act::Write(5));
        w.mandatory = false;
        let mut cas = op(
            1,
            2,
            u64::MAX,
            Act::Cas {
                expected: 5,
                new: 9,
                result: None,
            },
        );
        cas.mandatory = false;
        let seen_after = [w, cas, op(2, 3, 4, Act::Read(9))];
        assert_eq!(drop_unobserved(&seen_after).len(), 3);
        assert_eq!(
            check_register(0, &seen_after, 1000),
            LinResult::Linearizable
        );
        // A stale read is still caught.
        many.push(op(4, 8, 9, Act::Read(0)));
        assert!(matches!(
            check_register(0, &many, 1000),
            LinResult::NotLinearizable { .. }
        ));
    }

    #[test]
    fn compare_exchange_must_agree_with_the_value() {
        let cas = Act::Cas {
            expected: 0,
            new: 7,
            result: Some((0, true)),
        };
        let ok = [op(0, 1, 2, cas), op(1, 3, 4, Act::Read(7))];
        assert_eq!(check_register(0, &ok, 1000), LinResult::Linearizable);
        let bad = [op(0, 1, 2, Act::Write(3)), op(1, 3, 4, cas)];
        assert!(matches!(
            check_register(0, &bad, 1000),
            LinResult::NotLinearizable { .. }
        ));
    }
}
