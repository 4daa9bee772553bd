//! Network level: one seed gives one trace. Everything derives from the
//! seed (turmoil's generator, the workload, the fault schedule, the seeds of
//! rmmap-tokio's client and server cores), so running a seed twice in one
//! process gives the same trace hash, history and verdict.

use rmmap_sim::net::{NetConfig, net_replay_command, run_net_seed, scenarios};

fn twice(seed: u64, cfg: &NetConfig) {
    let a = run_net_seed(seed, cfg);
    let b = run_net_seed(seed, cfg);
    assert_eq!(
        a.trace_hash,
        b.trace_hash,
        "seed {seed} is not deterministic; look for where the traces part: {} --trace",
        net_replay_command(seed, cfg)
    );
    assert_eq!(a.history.ops.len(), b.history.ops.len());
    assert_eq!(a.violations, b.violations);
    assert!(a.stats.ops > 0 && a.stats.faults() > 0);
}

#[test]
fn a_random_seed_run_twice_gives_the_same_trace_hash() {
    for seed in [7, 1_000_003] {
        twice(seed, &NetConfig::default());
    }
}

#[test]
fn a_scenario_run_twice_gives_the_same_trace_hash() {
    let cfg = NetConfig::scenario(scenarios::server_restart_in_flight());
    twice(11, &cfg);
}

#[test]
fn keeping_the_trace_text_does_not_change_the_run() {
    let cfg = NetConfig::default();
    let quiet = run_net_seed(5, &cfg);
    let loud = run_net_seed(
        5,
        &NetConfig {
            keep_trace: true,
            ..cfg
        },
    );
    assert_eq!(quiet.trace_hash, loud.trace_hash);
    assert!(loud.trace.len() > 50);
}

#[test]
fn different_seeds_take_different_paths() {
    let cfg = NetConfig::default();
    let a = run_net_seed(1, &cfg);
    let b = run_net_seed(2, &cfg);
    assert_ne!(a.trace_hash, b.trace_hash);
}
