//! `rmmap-sim`: run seeds of the core-level simulation.
//!
//! `--seed N` runs one seed and prints its trace on failure (`--trace`
//! always); `--seeds N [--start S]` runs many and reports seeds per second
//! and operations checked. `--net` does the same at the network level (the
//! real rmmap-tokio client and server over turmoil), with `--scenario NAME`
//! for a scripted scenario instead of a random fault schedule. `--cluster`
//! runs the cluster level: shard ownership of several members (`--clients`
//! sets how many) against an in-memory etcd.

mod cluster_cli;
mod net_cli;

use std::process::ExitCode;
use std::time::Instant as WallClock;

use clap::Parser;
use rmmap_sim::{InjectedBug, SeedReport, SimConfig, replay_command, run_seed_guarded};

#[derive(Parser, Debug)]
#[command(about = "Deterministic simulation of rmmap: runs seeds and checks consistency")]
struct Args {
    /// Run this one seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Run this many seeds.
    #[arg(long)]
    seeds: Option<u64>,
    /// First seed of `--seeds`.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Clients per run.
    #[arg(long)]
    clients: Option<usize>,
    /// Steps of the fault phase per run.
    #[arg(long)]
    steps: Option<usize>,
    /// Print the trace of `--seed` even when it passes.
    #[arg(long)]
    trace: bool,
    /// With `--seed`: print the trace to stderr as the run goes (for a run
    /// that panics).
    #[arg(long)]
    echo: bool,
    /// Inject a protocol bug (needs `--features bug-injection`):
    /// skip-invalidation, client-ignores-lease, ignore-store-errors or
    /// refresh-trusts-digests; with
    /// `--cluster`, serve-after-lease-loss.
    #[arg(long)]
    bug: Option<String>,
    /// Stop at the first failing seed.
    #[arg(long)]
    fail_fast: bool,
    /// Run without faults (a clean network, no restarts or crashes).
    #[arg(long)]
    no_faults: bool,
    /// Run every fault except the disk's (a disk that is always fast and
    /// never fails).
    #[arg(long)]
    no_disk_faults: bool,
    /// Run every fault except graceful shutdowns.
    #[arg(long)]
    no_graceful: bool,
    /// One operation in ten is a `wait_while` on a word (checked as a read);
    /// off by default so that seeds replay as they always did.
    #[arg(long)]
    waits: bool,
    /// The server is a cluster member beside another, against an in-memory
    /// etcd: cut off from it now and then, handing shards over and taking
    /// them back (docs/CLUSTER.md).
    #[arg(long)]
    member: bool,
    /// Network level: the real rmmap-tokio client and server over turmoil.
    #[arg(long)]
    net: bool,
    /// Cluster level: shard ownership of several members against an
    /// in-memory etcd, with kills, partitions and drifting clocks.
    #[arg(long)]
    cluster: bool,
    /// With `--net`: run this scripted scenario (`--scenario list` lists them).
    #[arg(long)]
    scenario: Option<String>,
    /// With `--net --seeds`: run every seed twice and fail on different trace hashes.
    #[arg(long)]
    twice: bool,
    /// With `--net`: random operations per second over all clients (default 14).
    #[arg(long)]
    op_rate: Option<u32>,
    /// With `--net` or `--cluster`: seconds of the fault phase (default 15; 60 with `--cluster`).
    #[arg(long)]
    fault_secs: Option<u64>,
    /// With `--net`: from 3 s on, the server's disk drops writes while
    /// acknowledging them (outside the model: the checker must fail).
    #[arg(long)]
    lying_disk: bool,
}

fn config(args: &Args) -> Result<SimConfig, String> {
    let mut cfg = SimConfig::default();
    if let Some(c) = args.clients {
        cfg.clients = c.max(1);
    }
    if let Some(s) = args.steps {
        cfg.steps = s;
    }
    cfg.faults = !args.no_faults;
    cfg.disk_faults = !args.no_disk_faults;
    cfg.graceful_restarts = !args.no_graceful;
    cfg.waits = args.waits;
    cfg.member = args.member;
    // History values name at most 15 clients; with `--member`, b's writer
    // is one of them.
    let most = if cfg.member { 14 } else { 15 };
    if cfg.clients > most {
        return Err(format!(
            "--clients {}: at most {most}{} (history values name 15 clients)",
            cfg.clients,
            if cfg.member {
                " with --member, whose member b writes as one more"
            } else {
                ""
            }
        ));
    }
    cfg.bug = match args.bug.as_deref() {
        None => None,
        Some(name) => Some(InjectedBug::parse(name).ok_or_else(|| {
            let names: Vec<&str> = InjectedBug::ALL.iter().map(|(n, _)| *n).collect();
            format!("unknown bug {name:?}: one of {}", names.join(", "))
        })?),
    };
    if cfg.bug.is_some() && !cfg!(feature = "bug-injection") {
        return Err(
            "--bug needs the feature: cargo run -p rmmap-sim --release --features bug-injection"
                .into(),
        );
    }
    Ok(cfg)
}

fn print_failure(r: &SeedReport, cfg: &SimConfig) {
    println!(
        "seed {} FAILED with {} violation(s):",
        r.seed,
        r.violations.len()
    );
    for v in r.violations.iter().take(5) {
        println!("  {v}");
    }
    println!("replay: {}", replay_command(r.seed, cfg));
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.cluster {
        return cluster_cli::main(&args);
    }
    if args.net || args.scenario.is_some() {
        return net_cli::main(&args);
    }
    let mut cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        cfg.keep_trace = true;
        cfg.echo_trace = args.echo;
        let r = run_seed_guarded(seed, &cfg);
        let failed = !r.violations.is_empty();
        if failed || args.trace {
            for l in &r.trace {
                println!("{l}");
            }
        }
        println!(
            "seed {seed}: {} operations checked, trace hash {:016x}, {:?}",
            r.ops_checked, r.trace_hash, r.stats
        );
        if failed {
            print_failure(&r, &cfg);
            return ExitCode::FAILURE;
        }
        println!("seed {seed} passed");
        return ExitCode::SUCCESS;
    }
    let n = args.seeds.unwrap_or(100);
    let started = WallClock::now();
    let (mut ops, mut failed) = (0u64, Vec::new());
    let mut stats = rmmap_sim::Stats::default();
    for seed in args.start..args.start + n {
        let r = run_seed_guarded(seed, &cfg);
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
    let s = &stats;
    println!(
        "{n} seeds from {} in {secs:.1} s: {:.1} seeds/s, {ops} operations checked ({:.0}/s); \
         faults: {} cuts, {} frame drops, {} partitions ({} longer than the lease), \
         {} server kills ({} losing unsynced data), {} graceful restarts ({} during contention, \
         {} cut short), {} client crashes, {} sessions lost; \
         disk: {} full periods, {} broken periods, {} short writes, {} failing fsyncs injected, \
         {} store operations failed of {} run, {} delayed, {} syncs failed on disk, \
         {} torn cells at restarts; membership: {} cuts from etcd, {} shard losses, {} joins and leaves, \
         {} writes by member b; \
         {} failing seed(s){}",
        args.start,
        n as f64 / secs,
        ops as f64 / secs,
        s.cuts,
        s.frames_cut,
        s.partitions,
        s.long_partitions,
        s.restarts,
        s.crash_restarts,
        s.graceful_restarts,
        s.contended_shutdowns,
        s.shutdowns_cut_short,
        s.client_crashes,
        s.sessions_lost,
        s.disk_full,
        s.disk_broken,
        s.short_writes,
        s.failed_syncs,
        s.disk_errors,
        s.store_requests,
        s.store_delayed,
        s.syncs_failed_on_disk,
        s.torn_cells,
        s.member_cuts,
        s.member_losses,
        s.member_moves,
        s.member_writes,
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
