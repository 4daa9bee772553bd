//! `rmmap-sim --cluster`: seeds of the cluster level (shard ownership of
//! several members against an in-memory etcd, under faults).

use std::process::ExitCode;
use std::time::Instant as WallClock;

use rmmap_sim::cluster::{
    ClusterBug, ClusterConfig, ClusterReport, ClusterStats, cluster_replay_command,
    run_cluster_seed_guarded,
};

use super::Args;

fn config(args: &Args) -> Result<ClusterConfig, String> {
    let mut cfg = ClusterConfig::default();
    if let Some(c) = args.clients {
        cfg.members = c.clamp(1, 9);
    }
    if let Some(s) = args.fault_secs {
        cfg.fault_time = std::time::Duration::from_secs(s);
    }
    cfg.bug = match args.bug.as_deref() {
        None => None,
        Some("serve-after-lease-loss") => Some(ClusterBug::ServeAfterLeaseLoss),
        Some(other) => {
            return Err(format!(
                "unknown cluster bug {other:?}: serve-after-lease-loss"
            ));
        }
    };
    if cfg.bug.is_some() && !cfg!(feature = "bug-injection") {
        return Err(
            "--bug needs the feature: cargo run -p rmmap-sim --release --features bug-injection"
                .into(),
        );
    }
    Ok(cfg)
}

fn print_failure(r: &ClusterReport, cfg: &ClusterConfig) {
    println!(
        "cluster seed {} FAILED with {} violation(s):",
        r.seed,
        r.violations.len()
    );
    for v in r.violations.iter().take(5) {
        println!("  {v}");
    }
    println!("replay: {}", cluster_replay_command(r.seed, cfg));
}

/// Runs `--cluster`.
pub(crate) fn main(args: &Args) -> ExitCode {
    let mut cfg = match config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        cfg.keep_trace = true;
        let r = run_cluster_seed_guarded(seed, &cfg);
        let failed = !r.violations.is_empty();
        if failed || args.trace {
            for l in &r.trace {
                println!("{l}");
            }
        }
        println!(
            "cluster seed {seed}: {} serving intervals checked, trace hash {:016x}, {:?}",
            r.claims, r.trace_hash, r.stats
        );
        if failed {
            print_failure(&r, &cfg);
            return ExitCode::FAILURE;
        }
        println!("cluster seed {seed} passed");
        return ExitCode::SUCCESS;
    }
    let n = args.seeds.unwrap_or(100);
    let started = WallClock::now();
    let (mut claims, mut failed) = (0u64, Vec::new());
    let mut stats = ClusterStats::default();
    for seed in args.start..args.start + n {
        let r = run_cluster_seed_guarded(seed, &cfg);
        claims += r.claims;
        stats.add(&r.stats);
        if !r.violations.is_empty() {
            print_failure(&r, &cfg);
            failed.push(seed);
            if args.fail_fast {
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{n} cluster seeds from {} in {secs:.1} s: {:.1} seeds/s, {:.0} s of virtual time, \
         {claims} serving intervals checked, {} coordinator requests; faults: {} kills, \
         {} partitions ({} longer than the lease), {} planned leaves; {} shards lost when the \
         window closed, {} takeovers with a grace, {} clean handovers; {} failing seed(s){}",
        args.start,
        n as f64 / secs,
        stats.virtual_time.as_secs_f64(),
        stats.requests,
        stats.kills,
        stats.partitions,
        stats.long_partitions,
        stats.leaves,
        stats.windows_closed,
        stats.takeovers,
        stats.clean_handovers,
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(": {failed:?}")
        }
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
