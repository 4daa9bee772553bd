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

/// `--member`: a server that keeps serving its shards after its etcd lease
/// is lost, beside member b that took them and whose writer writes them,
/// shows the linearizability check a stale read or a lost write, and the
/// cache cross-check a copy of the old run beside b's. Rare (b must have
/// joined, the server must be cut off past its lease, and a client must
/// touch a cell b wrote in the same run): the seeds were found by
/// `rmmap-sim --member --bug member-serves-after-lease-loss --seeds 6000`
/// (the linearizability check on 1 seed of 6,000, 3244, where clients of
/// the server read cells as they were before b's writer wrote them; the
/// cache cross-check on 6 more), and all pass without the bug.
#[test]
fn a_member_serving_after_its_lease_is_lost_is_caught() {
    let base = SimConfig {
        member: true,
        ..SimConfig::default()
    };
    let bugged = SimConfig {
        bug: Some(InjectedBug::MemberServesAfterLeaseLoss),
        ..base.clone()
    };
    let with = history_checks(&bugged, 3244);
    assert!(
        with.contains(&"linearizability"),
        "seed 3244: the history checks missed the bug: {with:?}"
    );
    for seed in [3244, 381, 726, 1861, 3094] {
        let found = run_seed(seed, &bugged).violations;
        assert!(!found.is_empty(), "seed {seed}: the bug went unnoticed");
        let clean = run_seed(seed, &base).violations;
        assert!(
            clean.is_empty(),
            "seed {seed} fails without the bug: {clean:?}"
        );
        eprintln!(
            "member-serves-after-lease-loss, seed {seed}: {:?}",
            found.iter().map(|v| v.check).collect::<Vec<_>>()
        );
    }
}
