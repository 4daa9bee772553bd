//! Bounded seed sweeps: every seed's history is consistent and every run
//! settles after its faults stop. Longer sweeps: `cargo run -p rmmap-sim
//! --release -- --seeds N`.

use rmmap_sim::{SimConfig, replay_command, run_seed_guarded};

fn sweep(cfg: &SimConfig, seeds: std::ops::Range<u64>) {
    let mut failed = Vec::new();
    let mut ops = 0;
    for seed in seeds.clone() {
        let r = run_seed_guarded(seed, cfg);
        ops += r.ops_checked;
        if let Some(v) = r.violations.first() {
            failed.push(format!(
                "seed {seed}: {v}\n  replay: {}",
                replay_command(seed, cfg)
            ));
        }
    }
    assert!(ops > 0);
    assert!(
        failed.is_empty(),
        "{} of {} seeds failed:\n{}",
        failed.len(),
        seeds.end - seeds.start,
        failed.join("\n")
    );
}

#[test]
fn histories_without_faults_are_linearizable() {
    sweep(
        &SimConfig {
            faults: false,
            ..SimConfig::default()
        },
        0..300,
    );
}

#[test]
fn histories_with_faults_are_consistent_and_runs_settle() {
    sweep(&SimConfig::default(), 0..300);
}

#[test]
fn small_runs_without_faults_are_linearizable() {
    // Short runs: a cheap guard against false alarms of the checker.
    sweep(
        &SimConfig {
            faults: false,
            steps: 40,
            ..SimConfig::default()
        },
        0..100,
    );
}

/// `wait_while` among the operations, under every fault: the value each
/// wait returns is checked as a read of its word. (A client that ignored
/// its lease in `wait_while` failed 2 of 3,000 seeds.)
#[test]
fn waits_under_faults_return_linearizable_values() {
    sweep(
        &SimConfig {
            waits: true,
            ..SimConfig::default()
        },
        0..300,
    );
}
