//! `rmmap-sim --net`: network-level seeds (the real rmmap-tokio client and
//! server over turmoil) and scripted scenarios.

use std::process::ExitCode;
use std::time::Instant as WallClock;

use rmmap_sim::net::{
    NetConfig, NetReport, NetStats, net_replay_command, run_net_seed_guarded, scenarios,
};

use super::Args;

fn config(args: &Args) -> Result<NetConfig, String> {
    let mut cfg = match args.scenario.as_deref() {
        None => NetConfig::default(),
        Some(name) => NetConfig::scenario(scenarios::by_name(name).ok_or_else(|| {
            let names: Vec<&str> = scenarios::all().iter().map(|s| s.name).collect();
            format!(
                "unknown scenario {name:?}; the scenarios: {}",
                names.join(", ")
            )
        })?),
    };
    if let Some(c) = args.clients {
        cfg.clients = c.clamp(1, 8);
    }
    if let Some(r) = args.op_rate {
        cfg.op_rate = r;
    }
    if let Some(s) = args.fault_secs {
        cfg.fault_time = std::time::Duration::from_secs(s);
    }
    if args.lying_disk {
        cfg.lying_disk_from = Some(std::time::Duration::from_secs(3));
    }
    Ok(cfg)
}

fn print_failure(r: &NetReport, cfg: &NetConfig) {
    println!(
        "net seed {} FAILED with {} violation(s):",
        r.seed,
        r.violations.len()
    );
    for v in r.violations.iter().take(5) {
        println!("  {v}");
    }
    println!("replay: {}", net_replay_command(r.seed, cfg));
}

/// Runs a seed twice more with the trace kept and prints where they part.
fn print_divergence(seed: u64, cfg: &NetConfig) {
    let cfg = NetConfig {
        keep_trace: true,
        ..cfg.clone()
    };
    let (a, b) = (
        run_net_seed_guarded(seed, &cfg),
        run_net_seed_guarded(seed, &cfg),
    );
    let at = a.trace.iter().zip(&b.trace).position(|(x, y)| x != y);
    match at {
        Some(i) => {
            println!("  the traces part at line {i}:");
            for l in &a.trace[i.saturating_sub(3)..(i + 3).min(a.trace.len())] {
                println!("    a: {l}");
            }
            for l in &b.trace[i.saturating_sub(3)..(i + 3).min(b.trace.len())] {
                println!("    b: {l}");
            }
        }
        None => println!("  (two more runs agree: {} lines)", a.trace.len()),
    }
}

/// Runs `--net`.
pub(crate) fn main(args: &Args) -> ExitCode {
    if args.scenario.as_deref() == Some("list") {
        for s in scenarios::all() {
            println!("{:22} {}", s.name, s.about);
        }
        return ExitCode::SUCCESS;
    }
    let mut cfg = match config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        cfg.keep_trace = true;
        let r = run_net_seed_guarded(seed, &cfg);
        let failed = !r.violations.is_empty();
        if failed || args.trace {
            for l in &r.trace {
                println!("{l}");
            }
        }
        println!(
            "net seed {seed}: {} operations checked, trace hash {:016x}, {:?}",
            r.ops_checked, r.trace_hash, r.stats
        );
        if failed {
            print_failure(&r, &cfg);
            return ExitCode::FAILURE;
        }
        println!("net seed {seed} passed");
        return ExitCode::SUCCESS;
    }
    let n = args.seeds.unwrap_or(20);
    let started = WallClock::now();
    let (mut ops, mut failed, mut done) = (0u64, Vec::new(), 0u64);
    let mut stats = NetStats::default();
    for seed in args.start..args.start + n {
        let r = run_net_seed_guarded(seed, &cfg);
        if args.twice {
            let again = run_net_seed_guarded(seed, &cfg);
            if again.trace_hash != r.trace_hash {
                println!(
                    "net seed {seed} is NOT deterministic: trace hash {:016x} then {:016x}; replay: {}",
                    r.trace_hash,
                    again.trace_hash,
                    net_replay_command(seed, &cfg)
                );
                failed.push(seed);
                print_divergence(seed, &cfg);
            }
        }
        done += 1;
        ops += r.ops_checked;
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
        "{done} network-level seeds from {} in {secs:.1} s: {:.2} seeds/s, {ops} operations checked ({:.0}/s), \
         {:.0} s of virtual time; faults: {} applied ({} partitions, {} one-way, {} holds, {} longer than the lease, \
         {} latency changes, {} client crashes ({} after unsynced writes), {} server restarts of which {} lost unsynced data); \
         {} sessions lost, {} handshakes ({} first handshakes cut); settled at most {:.1} s after the faults stopped; \
         {} failing seed(s){}",
        args.start,
        done as f64 / secs,
        ops as f64 / secs,
        stats.virtual_time.as_secs_f64(),
        stats.faults(),
        stats.partitions,
        stats.one_way,
        stats.holds,
        stats.long_faults,
        stats.latency_changes,
        stats.client_crashes,
        stats.crashes_with_unsynced_writes,
        stats.server_restarts,
        stats.store_crashes,
        stats.sessions_lost,
        stats.connects,
        stats.handshakes_cut,
        stats.settle.as_secs_f64(),
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
