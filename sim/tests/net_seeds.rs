//! Network level, random fault schedules: for a bounded number of seeds
//! every history passes the checker and every run settles once the faults
//! stop; and a deliberately broken disk is caught, so a clean sweep means
//! something. More seeds: `cargo run -p rmmap-sim --release -- --net
//! --seeds N`.

use std::time::Duration;

use rmmap_sim::net::{NetConfig, net_replay_command, run_net_seed_guarded};

fn sweep(cfg: &NetConfig, seeds: std::ops::Range<u64>) {
    let (mut failed, mut ops, mut faults) = (Vec::new(), 0, 0);
    for seed in seeds.clone() {
        let r = run_net_seed_guarded(seed, cfg);
        ops += r.ops_checked;
        faults += r.stats.faults();
        if let Some(v) = r.violations.first() {
            failed.push(format!(
                "seed {seed}: {v}\n  replay: {}",
                net_replay_command(seed, cfg)
            ));
        }
    }
    assert!(ops > 0 && faults > 0);
    assert!(
        failed.is_empty(),
        "{} of {} seeds failed:\n{}",
        failed.len(),
        seeds.end - seeds.start,
        failed.join("\n")
    );
}

#[test]
fn histories_under_random_faults_are_consistent_and_runs_settle() {
    sweep(&NetConfig::default(), 0..16);
}

#[test]
fn histories_with_five_clients_are_consistent_and_runs_settle() {
    let cfg = NetConfig {
        clients: 5,
        ..NetConfig::default()
    };
    sweep(&cfg, 100..106);
}

#[test]
fn a_disk_that_drops_acknowledged_writes_is_caught_within_five_seeds() {
    let cfg = NetConfig {
        lying_disk_from: Some(Duration::from_secs(3)),
        ..NetConfig::default()
    };
    let caught = (0..5).find(|&seed| !run_net_seed_guarded(seed, &cfg).violations.is_empty());
    assert!(
        caught.is_some(),
        "the checker missed a lying disk in 5 seeds"
    );
}
