//! The cluster level: shard ownership under kills, partitions, leaves and
//! drifting clocks (docs/CLUSTER.md). The full sweep (10,000 seeds) is
//! `cargo run -p rmmap-sim --release -- --cluster --seeds 10000`.

use rmmap_sim::cluster::{ClusterBug, ClusterConfig, run_cluster_seed};

#[test]
fn no_two_members_serve_a_shard_at_once_and_takeovers_wait_the_grace_over_100_seeds() {
    let cfg = ClusterConfig::default();
    let mut takeovers = 0;
    for seed in 0..100 {
        let r = run_cluster_seed(seed, &cfg);
        assert!(
            r.violations.is_empty(),
            "seed {seed}: {:?}\nreplay: cargo run -p rmmap-sim --release -- --cluster --seed {seed}",
            r.violations
        );
        takeovers += r.stats.takeovers;
        assert!(
            r.stats.partitions + r.stats.kills > 0,
            "seed {seed} injected no fault"
        );
    }
    assert!(
        takeovers > 100,
        "only {takeovers} takeovers: the faults do not bite"
    );
}

#[test]
fn a_member_that_keeps_serving_after_its_lease_is_lost_is_caught_within_10_seeds() {
    let cfg = ClusterConfig {
        bug: Some(ClusterBug::ServeAfterLeaseLoss),
        ..ClusterConfig::default()
    };
    let caught: Vec<u64> = (0..10)
        .filter(|&seed| {
            let r = run_cluster_seed(seed, &cfg);
            r.violations.iter().any(|v| v.check == "cluster-overlap")
        })
        .collect();
    assert!(
        !caught.is_empty(),
        "the overlap check missed the bug in 10 seeds"
    );
    // The same seeds pass without the bug.
    for seed in caught {
        let r = run_cluster_seed(seed, &ClusterConfig::default());
        assert!(
            r.violations.is_empty(),
            "seed {seed} fails without the bug too"
        );
    }
}

#[test]
fn a_cluster_seed_replays_to_the_same_trace() {
    let cfg = ClusterConfig::default();
    for seed in [3, 17] {
        let (a, b) = (run_cluster_seed(seed, &cfg), run_cluster_seed(seed, &cfg));
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert_eq!(a.stats, b.stats);
    }
}

#[test]
fn clocks_drifting_past_the_assumed_bound_break_exclusivity_so_the_bound_is_load_bearing() {
    // Members assume 1% but their clocks drift up to 30%: a slow clock keeps
    // a window open after etcd expired the lease. The checker must see it.
    let cfg = ClusterConfig {
        clock_drift_ppm: 300_000,
        ..ClusterConfig::default()
    };
    let caught = (0..40)
        .filter(|&seed| {
            run_cluster_seed(seed, &cfg)
                .violations
                .iter()
                .any(|v| v.check == "cluster-overlap")
        })
        .count();
    eprintln!("clocks drifting 30% (bound 1%): {caught} of 40 seeds overlap");
    assert!(
        caught > 0,
        "clocks 30x past the drift bound went unnoticed for 40 seeds"
    );
}
