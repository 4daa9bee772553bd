//! The checker can fail: deliberately broken protocols are caught within a
//! bounded number of seeds, by the history checks alone (not by the server's
//! invariant check nor the cache cross-check), on seeds that pass without
//! the bug.

use rmmap_sim::{InjectedBug, SimConfig, run_seed};

/// Checks that look at state rather than at the history.
const STATE_CHECKS: [&str; 3] = ["server-invariant", "cache-coherence", "old-run-cache"];

/// The history checks that fail for `seed`.
fn history_checks(cfg: &SimConfig, seed: u64) -> Vec<&'static str> {
    let r = run_seed(seed, cfg);
    let mut v: Vec<_> = r
        .violations
        .iter()
        .map(|v| v.check)
        .filter(|c| !STATE_CHECKS.contains(c))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The seeds in `0..bound` that pass without `bug` and fail with it.
fn catches(base: SimConfig, bug: InjectedBug, bound: u64) -> Vec<(u64, Vec<&'static str>)> {
    let bugged = SimConfig {
        bug: Some(bug),
        ..base.clone()
    };
    (0..bound)
        .filter_map(|seed| {
            let with = history_checks(&bugged, seed);
            (!with.is_empty() && history_checks(&base, seed).is_empty()).then_some((seed, with))
        })
        .collect()
}

#[test]
fn skipping_invalidations_is_caught_within_20_seeds() {
    let base = SimConfig {
        faults: false,
        ..SimConfig::default()
    };
    let caught = catches(base, InjectedBug::SkipInvalidation, 20);
    assert!(
        !caught.is_empty(),
        "a server that skips invalidations went unnoticed for 20 seeds"
    );
    eprintln!(
        "skip-invalidation caught by {} of 20 seeds: {:?}",
        caught.len(),
        caught.first()
    );
}

/// By the history checks alone this one is rare (about 1 seed in 100: a
/// client must read its copy after its lease ran out, while another client's
/// write of the page has completed); the cache cross-check sees it in about
/// half of the seeds.
#[test]
fn a_client_ignoring_its_lease_is_caught_within_300_seeds() {
    let caught = catches(SimConfig::default(), InjectedBug::ClientIgnoresLease, 300);
    assert!(
        !caught.is_empty(),
        "a client that ignores its lease went unnoticed for 300 seeds"
    );
    eprintln!(
        "client-ignores-lease caught by {} of 300 seeds: {:?}",
        caught.len(),
        caught.first()
    );
}

/// A server that treats a failed disk write or fsync as successful (the
/// server before the disk became an effect) is caught by the history checks
/// once the disk fails, and by the check at every sync against the disk's
/// durable image among them.
#[test]
fn ignoring_store_errors_is_caught_within_20_seeds_of_disk_faults() {
    let caught = catches(SimConfig::default(), InjectedBug::IgnoreStoreErrors, 20);
    assert!(
        !caught.is_empty(),
        "a server that ignores store errors went unnoticed for 20 seeds"
    );
    assert!(
        caught
            .iter()
            .any(|(_, checks)| checks.contains(&"sync-durability")),
        "the sync check never saw it: {caught:?}"
    );
    eprintln!(
        "ignore-store-errors caught by {} of 20 seeds: {:?}",
        caught.len(),
        caught.first()
    );
}

/// A server that vouches for every copy a client carried over a restart,
/// without comparing it with the disk, is caught once a crash has thrown
/// away writes some client had read: that client goes on reading them.
#[test]
fn trusting_carried_copies_is_caught_within_40_seeds() {
    let caught = catches(SimConfig::default(), InjectedBug::RefreshTrustsDigests, 40);
    assert!(
        !caught.is_empty(),
        "a server that trusts every carried copy went unnoticed for 40 seeds"
    );
    eprintln!(
        "refresh-trusts-digests caught by {} of 40 seeds: {:?}",
        caught.len(),
        caught.first()
    );
}

/// The same bug goes unnoticed without the disk's faults: they are what
/// find it, not the network's or the restarts'.
#[test]
fn ignoring_store_errors_goes_unnoticed_on_a_disk_that_never_fails() {
    let cfg = SimConfig {
        disk_faults: false,
        bug: Some(InjectedBug::IgnoreStoreErrors),
        ..SimConfig::default()
    };
    for seed in 0..20 {
        let found = history_checks(&cfg, seed);
        assert!(found.is_empty(), "seed {seed}: {found:?}");
    }
}

#[test]
fn the_cache_cross_check_sees_skipped_invalidations_at_once() {
    let cfg = SimConfig {
        faults: false,
        bug: Some(InjectedBug::SkipInvalidation),
        ..SimConfig::default()
    };
    let caught = (0..5).any(|seed| {
        run_seed(seed, &cfg)
            .violations
            .iter()
            .any(|v| v.check == "cache-coherence")
    });
    assert!(
        caught,
        "the cache cross-check missed a server that skips invalidations"
    );
}
