//! The cross-client cache invariant: never a page held exclusively by one
//! client while another holds a readable copy (or also holds it
//! exclusively), counting only clients that trust their lease now.
//!
//! Across server runs (a client has not yet noticed a restart) only one
//! conflict counts, reported as `old-run-cache`: a client of a newer run
//! holds a page exclusively while a client of an older run still trusts a
//! copy (it would read stale data). The converse is allowed: an old-run
//! owner that writes on after the restart writes into a dead run, and its
//! client is told those writes were lost.

use std::collections::BTreeMap;

use crate::checker::Violation;

use super::Sim;

/// `(client, server run, exclusive)` for each holder of a page.
type Holders = Vec<(usize, u32, bool)>;

impl Sim<'_> {
    pub(super) fn check_caches(&mut self) {
        let now = self.cluster.now;
        let mut holders: BTreeMap<(String, u64), Holders> = BTreeMap::new();
        for (i, n) in self.cluster.nodes.iter().enumerate() {
            if self.clients[i].crashed || !n.client.lease_valid_at(now) {
                continue;
            }
            let run = self.session_segment(i);
            for p in n.client.cached_page_view() {
                holders
                    .entry((p.path.clone(), p.page))
                    .or_default()
                    .push((i, run, p.exclusive));
            }
        }
        for ((path, page), hs) in holders {
            for &(a, run_a, ex_a) in &hs {
                for &(b, run_b, _) in &hs {
                    if a == b || !ex_a || run_a < run_b {
                        continue;
                    }
                    let check = if run_a == run_b {
                        "cache-coherence"
                    } else {
                        "old-run-cache"
                    };
                    if self.violations.iter().any(|v| v.check == check) {
                        continue;
                    }
                    let d = format!(
                        "at {now:?}: page {page} of {path}: exclusive at client {a} (server run {run_a}) while client {b} \
                         (server run {run_b}) holds it too; holders {hs:?}"
                    );
                    self.violations
                        .push(Violation::new(check, None, d, Vec::new()));
                }
            }
        }
    }
}
