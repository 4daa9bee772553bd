//! The same seed gives the same trace; different seeds give different ones.

use rmmap_sim::{SimConfig, run_seed};

#[test]
fn one_seed_run_twice_gives_the_same_trace_hash() {
    let cfg = SimConfig::default();
    for seed in [3, 1234, u64::MAX] {
        let a = run_seed(seed, &cfg);
        let b = run_seed(seed, &cfg);
        assert_eq!(
            a.trace_hash, b.trace_hash,
            "seed {seed} is not deterministic"
        );
        assert_eq!(a.history.ops.len(), b.history.ops.len());
        assert_eq!(a.violations, b.violations);
    }
}

#[test]
fn keeping_the_trace_text_does_not_change_the_run() {
    let quiet = run_seed(77, &SimConfig::default());
    let loud = run_seed(
        77,
        &SimConfig {
            keep_trace: true,
            ..SimConfig::default()
        },
    );
    assert_eq!(quiet.trace_hash, loud.trace_hash);
    assert!(!loud.trace.is_empty());
}

#[test]
fn different_seeds_take_different_paths() {
    let cfg = SimConfig::default();
    let hashes: std::collections::BTreeSet<u64> =
        (0..20).map(|s| run_seed(s, &cfg).trace_hash).collect();
    assert_eq!(hashes.len(), 20);
}
