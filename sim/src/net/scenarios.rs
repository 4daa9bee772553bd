//! Scripted scenarios: faults and operations at fixed moments, for the
//! situations the random schedule reaches only by luck. Each is run by a
//! test in `tests/net_scenarios.rs` and by
//! `cargo run -p rmmap-sim --release -- --net --scenario NAME --seed N`.
//!
//! The lease is 1.5 s. Files: `f0` (two 512-byte pages) and `f1` (one).

use std::time::Duration;

use super::config::{Dir, Fault, Scenario, ScriptOp};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn read(file: usize, offset: u64, len: u64) -> ScriptOp {
    ScriptOp::Read { file, offset, len }
}

fn write(file: usize, offset: u64, len: u64) -> ScriptOp {
    ScriptOp::Write { file, offset, len }
}

/// Every scenario.
pub fn all() -> Vec<Scenario> {
    vec![
        held_reader(),
        one_way_longer_than_lease(),
        partition_mid_write(),
        crash_with_dirty_page(),
        server_restart_in_flight(),
        handshake_flap(),
    ]
}

/// The scenario called `name`.
pub fn by_name(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}

/// A writer while a reader is held: c0 caches a page, its link is held
/// (first shorter than the lease, then longer) and c1 writes the page. The
/// write must wait until c0 acknowledged the invalidation or its lease ran
/// out; c0's next read must see the write.
pub fn held_reader() -> Scenario {
    Scenario {
        name: "held-reader",
        about: "a writer while a reader is held (shorter, then longer than the lease)",
        clients: 2,
        fault_time: ms(10_000),
        random_ops: false,
        faults: vec![
            (
                ms(1_500),
                Fault::Hold {
                    client: 0,
                    duration: ms(1_000),
                },
            ),
            (
                ms(5_000),
                Fault::Hold {
                    client: 0,
                    duration: ms(3_000),
                },
            ),
        ],
        ops: vec![
            (ms(1_000), 0, read(0, 0, 16)),
            (ms(1_600), 1, write(0, 0, 16)),
            (ms(3_500), 0, read(0, 0, 16)),
            (ms(4_500), 0, read(0, 0, 16)),
            (ms(5_100), 1, write(0, 0, 16)),
            (ms(5_200), 0, read(0, 0, 16)),
            (ms(8_500), 0, read(0, 0, 16)),
        ],
    }
}

/// A one-way partition longer than the lease: c0's requests reach the
/// server, but nothing comes back — no replies, no invalidations. c1 writes
/// the page c0 caches; c0 must stop serving its copy when its lease may
/// have run out, and see the write once the link heals.
pub fn one_way_longer_than_lease() -> Scenario {
    Scenario {
        name: "one-way-lease",
        about: "a one-way partition (server to client) longer than the lease",
        clients: 2,
        fault_time: ms(10_000),
        random_ops: false,
        faults: vec![(
            ms(1_500),
            Fault::OneWay {
                client: 0,
                dir: Dir::ToClient,
                duration: ms(4_000),
            },
        )],
        ops: vec![
            (ms(1_000), 0, read(0, 0, 1024)),
            (ms(1_600), 1, write(0, 0, 16)),
            (ms(1_700), 0, read(0, 0, 16)),
            (ms(2_500), 0, read(0, 512, 8)),
            (ms(4_000), 0, read(0, 0, 16)),
            (ms(4_100), 1, write(0, 512, 16)),
            (ms(7_000), 0, read(0, 0, 1024)),
            (ms(7_500), 1, read(0, 0, 1024)),
        ],
    }
}

/// A partition in the middle of a write, then repair: c0 starts writing a
/// whole page (it must first take the page from c1) and its link goes down
/// a few milliseconds later, once shorter and once longer than the lease.
/// The write may or may not happen, at most once; readers never see it
/// come and go.
pub fn partition_mid_write() -> Scenario {
    Scenario {
        name: "partition-mid-write",
        about: "a partition in the middle of a write (shorter, then longer than the lease)",
        clients: 3,
        fault_time: ms(12_000),
        random_ops: false,
        faults: vec![
            (
                ms(1_505),
                Fault::Partition {
                    client: 0,
                    duration: ms(800),
                },
            ),
            (
                ms(5_503),
                Fault::Partition {
                    client: 0,
                    duration: ms(3_500),
                },
            ),
        ],
        ops: vec![
            (ms(1_000), 1, write(0, 0, 512)),
            (ms(1_500), 0, write(0, 0, 512)),
            (ms(1_520), 2, read(0, 0, 16)),
            (ms(2_000), 2, read(0, 0, 16)),
            (ms(3_000), 0, sync(0)),
            (ms(3_500), 2, read(0, 0, 512)),
            (ms(5_000), 1, write(0, 504, 16)),
            (ms(5_500), 0, write(0, 504, 16)),
            (ms(6_000), 2, read(0, 504, 16)),
            (ms(7_500), 2, read(0, 504, 16)),
            (ms(9_500), 0, read(0, 504, 16)),
            (ms(10_000), 2, read(0, 0, 1024)),
        ],
    }
}

fn sync(file: usize) -> ScriptOp {
    ScriptOp::Sync { file }
}

/// A client crash while it owns a dirty page: c0 writes and syncs `f1`,
/// then writes `f0` and crashes before syncing it (silently, then again
/// with a FIN after it booted). Its synced write survives; its unsynced
/// one may vanish, but never comes back once overwritten.
pub fn crash_with_dirty_page() -> Scenario {
    Scenario {
        name: "crash-dirty",
        about: "a client crash while it owns a dirty page (silent, then with a FIN)",
        clients: 2,
        fault_time: ms(12_000),
        random_ops: false,
        faults: vec![
            (
                ms(2_000),
                Fault::CrashClient {
                    client: 0,
                    down: ms(2_500),
                    silent: true,
                },
            ),
            (
                ms(7_000),
                Fault::CrashClient {
                    client: 0,
                    down: ms(500),
                    silent: false,
                },
            ),
        ],
        ops: vec![
            (ms(1_000), 0, write(1, 0, 16)),
            (ms(1_200), 0, sync(1)),
            (ms(1_500), 0, write(0, 0, 16)),
            (ms(1_700), 0, read(0, 0, 16)),
            (ms(2_100), 1, read(0, 0, 16)),
            (ms(2_200), 1, read(1, 0, 16)),
            (ms(4_000), 1, read(0, 0, 16)),
            (ms(6_000), 0, write(0, 512, 16)),
            (ms(6_200), 1, read(0, 0, 1024)),
            (ms(6_500), 0, write(0, 512, 16)),
            (ms(7_500), 1, read(0, 512, 16)),
            (ms(10_000), 1, read(0, 0, 1024)),
            (ms(10_500), 0, read(0, 0, 1024)),
        ],
    }
}

/// A server restart with writes in flight: every client writes (c0 synced
/// first), and the server crashes a few milliseconds later, losing what was
/// not synced; later it restarts again without losing anything. The random
/// workload runs throughout.
pub fn server_restart_in_flight() -> Scenario {
    Scenario {
        name: "server-restart",
        about: "server restarts (store crash, then process crash) with writes in flight",
        clients: 3,
        fault_time: ms(12_000),
        random_ops: true,
        faults: vec![
            (
                ms(2_004),
                Fault::RestartServer {
                    down: ms(600),
                    lose_unsynced: true,
                },
            ),
            (
                ms(7_003),
                Fault::RestartServer {
                    down: ms(100),
                    lose_unsynced: false,
                },
            ),
        ],
        ops: vec![
            (ms(1_000), 0, write(1, 0, 16)),
            (ms(1_300), 0, sync(1)),
            (ms(2_000), 0, write(0, 0, 512)),
            (ms(2_000), 1, write(0, 504, 16)),
            (ms(2_001), 2, write(1, 0, 8)),
            (ms(2_002), 0, sync(0)),
            (ms(7_000), 1, write(0, 8, 16)),
            (ms(7_000), 2, sync(1)),
            (ms(7_001), 0, write(1, 504, 8)),
        ],
    }
}

/// Links that flap during handshakes: the link goes down for 12 ms every
/// 24 ms, with 10 ms of latency each way, so connections open and their
/// handshakes are cut halfway (a cut turmoil connection stalls until the
/// handshake times out). c0 flaps while it makes its first connection, c1
/// after it boots again, c2 while it reconnects after a partition. Every
/// client must end up connected with every file mapped.
pub fn handshake_flap() -> Scenario {
    let flap = |client| Fault::Flap {
        client,
        period: ms(12),
        times: 60,
    };
    let slow = |client| Fault::Latency {
        client,
        latency: ms(10),
    };
    Scenario {
        name: "handshake-flap",
        about: "links that flap during the first handshake, a reboot and a reconnection",
        clients: 3,
        fault_time: ms(14_000),
        random_ops: true,
        faults: vec![
            (ms(0), slow(0)),
            (ms(0), flap(0)),
            (
                ms(6_000),
                Fault::CrashClient {
                    client: 1,
                    down: ms(300),
                    silent: false,
                },
            ),
            (ms(6_300), slow(1)),
            (ms(6_300), flap(1)),
            (
                ms(8_000),
                Fault::Partition {
                    client: 2,
                    duration: ms(1_000),
                },
            ),
            (ms(9_000), slow(2)),
            (ms(9_000), flap(2)),
        ],
        ops: vec![
            (ms(7_000), 0, write(0, 0, 16)),
            (ms(7_000), 2, write(0, 8, 16)),
            (ms(12_000), 1, read(0, 0, 1024)),
        ],
    }
}
