//! Network-level scenarios: the real rmmap-tokio client and server over
//! turmoil, each scenario a script of faults and operations
//! (`rmmap_sim::net::scenarios`). Every run's history must pass the checker
//! and settle after the faults stop; each test also states the scenario's
//! own guarantee in terms of its scripted operations.

use std::time::Duration;

use rmmap_core::Instant;
use rmmap_sim::history::{OpKind, OpRecord, Outcome};
use rmmap_sim::net::{NetConfig, NetReport, Scenario, net_replay_command, run_net_seed, scenarios};

/// Seeds per scenario: each changes latencies, turmoil's choices and the
/// cores' seeds, not the script. Two by default; more with
/// `RMMAP_NET_SCENARIO_SEEDS=N`.
fn seeds() -> std::ops::Range<u64> {
    let n = std::env::var("RMMAP_NET_SCENARIO_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    1..1 + n
}

/// Runs the scenario and fails with the seed and the replay command if the
/// checker found anything.
fn run(s: Scenario, seed: u64) -> NetReport {
    let cfg = NetConfig::scenario(s);
    let r = run_net_seed(seed, &cfg);
    if !r.violations.is_empty() {
        let mut msg = format!(
            "seed {seed}: {} violation(s); replay: {}\n",
            r.violations.len(),
            net_replay_command(seed, &cfg)
        );
        for v in r.violations.iter().take(5) {
            msg.push_str(&format!("  {v}\n"));
        }
        panic!("{msg}");
    }
    r
}

/// Scenario operation `i`, which must have run.
fn op(r: &NetReport, i: usize) -> &OpRecord {
    let id = r.scripted[i].unwrap_or_else(|| panic!("seed {}: script op {i} never ran", r.seed));
    &r.history.ops[id]
}

fn written(o: &OpRecord) -> Vec<u64> {
    match &o.kind {
        OpKind::Write { cells } => cells.iter().map(|(_, v)| *v).collect(),
        other => panic!("op{} is not a write: {other:?}", o.id),
    }
}

fn at(ms: u64) -> Instant {
    Instant::from_duration(Duration::from_millis(ms))
}

#[test]
fn a_held_reader_never_serves_an_overwritten_value_and_delays_the_writer_by_at_most_a_lease() {
    for seed in seeds() {
        let r = run(scenarios::held_reader(), seed);
        let (short, long) = (op(&r, 1), op(&r, 4));
        assert!(short.ok() && long.ok(), "seed {seed}: the writes failed");
        // The reader reads after each write completed: it sees the write.
        for (w, rd) in [(1, 2), (1, 3), (4, 6)] {
            let (w, rd) = (op(&r, w), op(&r, rd));
            assert!(
                w.complete_seq < Some(rd.invoke_seq),
                "seed {seed}: too late"
            );
            assert!(rd.ok(), "seed {seed}: {rd}");
            assert_eq!(rd.read, written(w), "seed {seed}: {rd} after {w}");
        }
        // Held for twice the lease: the server took the page back when the
        // reader's lease ran out instead of waiting for the hold to end.
        let done = long.complete_at.expect("completed");
        assert!(done < at(5_000 + 3_000), "seed {seed}: {long}");
        assert!(r.stats.sessions_lost >= 1, "seed {seed}: {:?}", r.stats);
    }
}

#[test]
fn a_one_way_partition_longer_than_the_lease_stops_the_stale_cache() {
    for seed in seeds() {
        let r = run(scenarios::one_way_longer_than_lease(), seed);
        let w = op(&r, 1);
        assert!(w.ok(), "seed {seed}: {w}");
        // Requests got through, invalidations did not: the write waited
        // for the cut-off reader's lease, not for the partition to end.
        assert!(w.complete_at < Some(at(1_500 + 4_000)), "seed {seed}: {w}");
        // Its read after the write completed never returns the old copy.
        let rd = op(&r, 4);
        assert!(w.complete_seq < Some(rd.invoke_seq));
        if rd.ok() {
            assert_eq!(rd.read, written(w), "seed {seed}: {rd}");
        }
        let last = op(&r, 6);
        assert!(last.ok(), "seed {seed}: {last}");
        assert_eq!(&last.read[..2], &written(w)[..], "seed {seed}: {last}");
    }
}

#[test]
fn a_write_cut_by_a_partition_ends_once_the_link_heals_and_is_seen_by_its_writer() {
    for seed in seeds() {
        let r = run(scenarios::partition_mid_write(), seed);
        for i in [1, 7] {
            let w = op(&r, i);
            assert_ne!(w.outcome, Outcome::Pending, "seed {seed}: {w}");
        }
        // Read-your-writes across the long partition (and the session it cost).
        let (w, rd) = (op(&r, 7), op(&r, 10));
        if w.ok() && w.complete_seq < Some(rd.invoke_seq) && rd.ok() {
            assert_eq!(rd.read, written(w), "seed {seed}: {rd} after {w}");
        }
    }
}

#[test]
fn a_client_crash_with_a_dirty_page_keeps_what_it_synced() {
    for seed in seeds() {
        let r = run(scenarios::crash_with_dirty_page(), seed);
        let (synced, sync) = (op(&r, 0), op(&r, 1));
        assert!(synced.ok() && sync.ok(), "seed {seed}");
        // The other client reads the synced file after the crash.
        let rd = op(&r, 5);
        assert!(rd.ok(), "seed {seed}: {rd}");
        assert_eq!(rd.read, written(synced), "seed {seed}: {rd}");
        // The unsynced write may be lost, but what the survivor sees of it
        // does not change once it has seen it.
        let (first, later) = (op(&r, 4), op(&r, 6));
        assert!(first.ok() && later.ok(), "seed {seed}");
        assert_eq!(first.read, later.read, "seed {seed}: {first} then {later}");
        assert!(
            r.history.ended.values().filter(|e| e.crashed).count() == 2,
            "seed {seed}: two crashes"
        );
    }
}

#[test]
fn a_server_restart_with_writes_in_flight_loses_only_unsynced_writes_and_says_so() {
    for seed in seeds() {
        let r = run(scenarios::server_restart_in_flight(), seed);
        assert_eq!(r.history.restarts.len(), 2, "seed {seed}");
        assert!(r.history.restarts[0].crash && !r.history.restarts[1].crash);
        for i in [2, 3, 4, 6, 8] {
            let w = op(&r, i);
            assert_ne!(w.outcome, Outcome::Pending, "seed {seed}: {w}");
        }
        // Someone's session was lost with the store, and was told.
        assert!(r.stats.sessions_lost >= 1, "seed {seed}: {:?}", r.stats);
        assert!(r.stats.ops > 50, "seed {seed}: the random workload ran");
    }
}

#[test]
fn links_that_flap_during_handshakes_still_let_every_client_in() {
    for seed in seeds() {
        let r = run(scenarios::handshake_flap(), seed);
        // 3 × 60 flaps and one partition; c0's first handshake and c1's
        // after its reboot were cut at least once.
        assert_eq!(r.stats.partitions, 181, "seed {seed}: {:?}", r.stats);
        assert!(r.stats.handshakes_cut >= 2, "seed {seed}: {:?}", r.stats);
        assert_eq!(r.stats.client_crashes, 1);
        for i in 0..3 {
            let o = op(&r, i);
            assert!(o.ok(), "seed {seed}: {o}");
        }
        // Every client host, and the rebooted one again, got in.
        assert!(r.stats.connects >= 4, "seed {seed}: {:?}", r.stats);
    }
}
