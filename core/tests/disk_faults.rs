//! The disk fails under the in-memory cluster (`MemStore::inject`): no sync
//! reports success for bytes the disk does not hold, and no completed write
//! vanishes. Each test is a sequence the simulator (`rmmap-sim`) found.

use std::time::Duration;

use rmmap_core::client::MapOptions;
use rmmap_core::harness::{Cluster, Direction, Verdict};
use rmmap_core::protocol::Message;
use rmmap_core::server::ServerConfig;
use rmmap_core::store::{DiskFault, MemStore, StoreOp, StoreRequest};

const PAGE: u64 = 4096;

fn cluster(clients: usize) -> (Cluster, MemStore) {
    let store = MemStore::new();
    store.insert("f", vec![0u8; (2 * PAGE) as usize]);
    let config = ServerConfig {
        lease: Duration::from_millis(1500),
        ..ServerConfig::default()
    };
    let mut c = Cluster::new(config, store.clone(), clients, 5);
    c.settle();
    (c, store)
}

/// A failed fsync makes the kernel drop the file's dirty pages. The next
/// sync writes the lost bytes again and fsyncs; when that fsync fails too,
/// the rewritten bytes are gone from the kernel as well, and the sync must
/// fail. (The server once counted as covered by an fsync only the bytes
/// written before the fsync was asked for, not those of the rewrite queued
/// ahead of it: the second sync reported success, and a later fsync made
/// the server forget bytes that were on no disk. Simulator seed 440.)
#[test]
fn a_sync_whose_rewrite_and_fsync_fail_again_reports_the_failure() {
    let (mut c, store) = cluster(2);
    let a = c.map(0, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    c.write(0, a, 0, b"abcdefgh").unwrap();
    store.inject(DiskFault::FailedSync);
    assert!(c.sync(0, a).is_err(), "the first fsync failed");
    store.inject(DiskFault::FailedSync);
    let second = c.sync(0, a);
    assert!(
        second.is_err(),
        "the rewrite's fsync failed, yet the sync reported {second:?}"
    );
    assert_eq!(
        &store.durable_contents("f").unwrap()[..8],
        &[0u8; 8],
        "nothing reached the disk"
    );
    // Another client reads the bytes the disk lost: the server still has them.
    let b = c.map(1, "f", 0, PAGE, MapOptions::read_only()).unwrap();
    assert_eq!(&c.read(1, b, 0, 8).unwrap()[..], b"abcdefgh");
    // Once the disk works, a sync puts them there.
    c.sync(0, a).unwrap();
    assert_eq!(&store.durable_contents("f").unwrap()[..8], b"abcdefgh");
}

/// A write replaces bytes of another client's earlier write before either
/// reached the disk (the disk is full): the earlier writer's sync must not
/// report success while the disk holds neither write. (The server once
/// blamed a failed write only on the session whose bytes it carried, so
/// the earlier writer, whose own bytes had been replaced, was told its sync
/// succeeded. Simulator seed 402.)
#[test]
fn a_sync_fails_while_a_later_write_over_its_bytes_is_off_the_disk() {
    let (mut c, store) = cluster(2);
    let a = c.map(0, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    let b = c.map(1, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    c.write(0, a, 0, b"aaaaaaaa").unwrap();
    store.inject(DiskFault::Full);
    // Client 1's write recalls client 0's page: its bytes reach the server,
    // whose disk refuses them.
    c.write(1, b, 0, b"bbbbbbbb").unwrap();
    // Client 1's sync writes its own bytes over them; the disk refuses those
    // too.
    assert!(c.sync(1, b).is_err(), "the disk is full");
    let synced = c.sync(0, a);
    assert!(
        synced.is_err(),
        "client 0's sync reported {synced:?} though the disk holds neither write: {:?}",
        &store.durable_contents("f").unwrap()[..8]
    );
    store.heal();
    c.sync(0, a).unwrap();
    assert_eq!(&store.durable_contents("f").unwrap()[..8], b"bbbbbbbb");
}

/// The same, with a write over the bytes queued behind the sync's fsync: the
/// sync's rewrite of its own (earlier refused) bytes fails again, but they
/// had already been replaced in memory by a later write, which only runs
/// after the fsync. When the fsync finishes, the sync's bytes survive only
/// in that later write, still on its way: the sync waits for it (and here
/// reports its failure) instead of succeeding. Simulator seed 505.
#[test]
fn a_sync_waits_for_a_later_write_over_its_bytes_queued_behind_its_fsync() {
    let (mut c, store) = cluster(2);
    let a = c.map(0, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    let b = c.map(1, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    c.write(0, a, 0, b"aaaaaaaa").unwrap();
    store.inject(DiskFault::Full);
    c.write(1, b, 0, b"bbbbbbbb").unwrap();
    store.heal();
    // Every write takes 100 ms: the fsync of client 0's sync waits behind
    // the rewrite of its bytes, and client 1's write-back behind the fsync.
    c.set_disk_hook(Box::new(|r: &StoreRequest| match r.op {
        StoreOp::Write { .. } => Duration::from_millis(100),
        _ => Duration::ZERO,
    }));
    let now = c.now;
    let sync_a = c.nodes[0].client.sync(now, a).unwrap();
    c.flush();
    c.run_for(Duration::from_millis(10));
    let now = c.now;
    let sync_b = c.nodes[1].client.sync(now, b).unwrap();
    c.flush();
    c.run_for(Duration::from_millis(10));
    store.inject(DiskFault::Full);
    let done_a = c.wait(0, sync_a, Duration::from_secs(10));
    let durable = store.durable_contents("f").unwrap()[..8].to_vec();
    assert!(
        !matches!(done_a, Some(Ok(_))) || durable == b"aaaaaaaa" || durable == b"bbbbbbbb",
        "client 0's sync reported success though the disk holds {durable:?}"
    );
    assert!(matches!(done_a, Some(Err(_))), "{done_a:?}");
    assert!(c.wait(1, sync_b, Duration::from_secs(10)).is_some());
    store.heal();
    c.sync(0, a).unwrap();
    assert_eq!(&store.durable_contents("f").unwrap()[..8], b"bbbbbbbb");
}

/// A killed server leaves bytes in the kernel that no fsync covered; the next
/// run reads them from the file. If an fsync of that run fails, the kernel
/// drops them, and reads would go back to older bytes after a client saw the
/// newer ones: within one run, reads are monotonic. The new run fsyncs each
/// file it may write before its first read of it. Simulator seed 1941.
#[test]
fn bytes_an_earlier_run_left_unsynced_do_not_vanish_after_a_client_read_them() {
    let (mut c, store) = cluster(4);
    let w = c.map(0, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    c.write(0, w, 0, b"unsynced").unwrap();
    // Another client reads: the write reaches the server and the kernel, not
    // the disk.
    let r = c.map(1, "f", 0, PAGE, MapOptions::read_only()).unwrap();
    assert_eq!(&c.read(1, r, 0, 8).unwrap()[..], b"unsynced");
    assert_eq!(&store.durable_contents("f").unwrap()[..8], &[0u8; 8]);
    c.restart_server(false);
    c.settle();
    let seen = c.map(2, "f", 0, PAGE, MapOptions::read_only()).unwrap();
    let first = c.read(2, seen, 0, 8).unwrap();
    // A failed fsync in this run.
    let other = c
        .map(3, "f", 0, 2 * PAGE, MapOptions::read_write())
        .unwrap();
    c.write(3, other, PAGE, b"elsewhere").unwrap();
    store.inject(DiskFault::FailedSync);
    assert!(c.sync(3, other).is_err());
    let later = c.read(3, other, 0, 8).unwrap();
    assert_eq!(
        later, first,
        "a client of this run read {first:?}, then another read {later:?}"
    );
}

/// A client's write reached the server, whose disk refused it; then the
/// client was cut off for longer than its lease, and its session ended. Its
/// next sync, in its new session, must still report the failure: its write
/// is not on the disk, and a restart would lose it. (The server once
/// reported failed bytes only to the session that wrote them, and nobody
/// was told once it ended: the sync succeeded, and a shutdown that could not
/// write the bytes lost them silently. Simulator seed 20276.)
#[test]
fn a_sync_after_the_session_expired_reports_the_old_sessions_failed_bytes() {
    let (mut c, store) = cluster(2);
    let a = c.map(0, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    let b = c.map(1, "f", 0, PAGE, MapOptions::read_only()).unwrap();
    c.write(0, a, 0, b"expiring").unwrap();
    store.inject(DiskFault::Full);
    // Client 1's read brings client 0's bytes to the server: the disk
    // refuses them.
    assert_eq!(&c.read(1, b, 0, 8).unwrap()[..], b"expiring");
    // The server confirms it has them (so the client does not count them
    // lost with its session).
    c.run_for(Duration::from_secs(1));
    // Client 0 is cut off for longer than its lease.
    c.nodes[0].unreachable = true;
    c.cut(0);
    c.run_for(Duration::from_secs(3));
    c.nodes[0].unreachable = false;
    assert!(c.run_until(Duration::from_secs(10), |c| {
        c.nodes[0].client.is_connected()
    }));
    let synced = c.sync(0, a);
    assert!(
        matches!(&synced, Err(e) if e.kind() == "no_space"),
        "the write is on no disk, yet the sync reported {synced:?}"
    );
    store.heal();
    c.run_for(Duration::from_secs(2));
    c.sync(0, a).unwrap();
    assert_eq!(&store.durable_contents("f").unwrap()[..8], b"expiring");
}

/// A client's write was replaced, before either reached the disk (it is
/// full), by another client's write, which the disk refused too; then the
/// first client was cut off for longer than its lease and its session ended.
/// Its next sync, in its new session, must report the failure: its write
/// survives only through the other client's bytes, which are on no disk.
/// (The server once reported the failed bytes of an ended session to every
/// syncer only when every session concerned with them had ended: the other
/// writer was still connected, so the first client's sync succeeded.)
#[test]
fn a_sync_after_the_session_expired_reports_failed_bytes_written_over_its_own() {
    let (mut c, store) = cluster(2);
    let a = c.map(0, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    let b = c.map(1, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    c.write(0, a, 0, b"aaaaaaaa").unwrap();
    store.inject(DiskFault::Full);
    // Client 1's write recalls client 0's page: its bytes reach the server,
    // whose disk refuses them.
    c.write(1, b, 0, b"bbbbbbbb").unwrap();
    // Client 0's read recalls client 1's page: its bytes, written over client
    // 0's, are refused too.
    assert_eq!(&c.read(0, a, 0, 8).unwrap()[..], b"bbbbbbbb");
    c.run_for(Duration::from_secs(1));
    // Client 0 is cut off for longer than its lease; client 1 stays.
    c.nodes[0].unreachable = true;
    c.cut(0);
    c.run_for(Duration::from_secs(3));
    c.nodes[0].unreachable = false;
    assert!(c.run_until(Duration::from_secs(10), |c| {
        c.nodes[0].client.is_connected()
    }));
    let synced = c.sync(0, a);
    assert!(
        matches!(&synced, Err(e) if e.kind() == "no_space"),
        "neither write is on the disk, yet the sync reported {synced:?}"
    );
    store.heal();
    c.run_for(Duration::from_secs(2));
    c.sync(0, a).unwrap();
    assert_eq!(&store.durable_contents("f").unwrap()[..8], b"bbbbbbbb");
}

/// A client's write reached the server, whose disk refused it; then the
/// client broke the protocol (its Hello arrived twice), which dooms its
/// session: the session lingers until its lease runs out but can never be
/// resumed, and the client carries on in a new one. Its next sync there must
/// report the failure. (The server counted a doomed session as one that
/// could still be told, so nobody was: the sync succeeded while the bytes
/// were on no disk, and a crash lost them. Simulator seed 62891.)
#[test]
fn a_sync_after_a_protocol_violation_reports_the_doomed_sessions_failed_bytes() {
    let (mut c, store) = cluster(2);
    let a = c.map(0, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    let b = c.map(1, "f", 0, PAGE, MapOptions::read_only()).unwrap();
    c.write(0, a, 0, b"violator").unwrap();
    store.inject(DiskFault::Full);
    // Client 1's read brings client 0's bytes to the server: the disk
    // refuses them.
    assert_eq!(&c.read(1, b, 0, 8).unwrap()[..], b"violator");
    c.run_for(Duration::from_secs(1));
    // Client 0 reconnects, and its Hello is delivered twice: the second is a
    // protocol violation on the resumed session.
    let mut duplicated = false;
    c.set_hook(Box::new(move |i, d, m| match (i, d, m) {
        (0, Direction::ToServer, Message::Hello(_)) if !duplicated => {
            duplicated = true;
            Verdict::Duplicate
        }
        _ => Verdict::Deliver,
    }));
    c.cut(0);
    c.run_for(Duration::from_millis(200));
    assert!(c.run_until(Duration::from_secs(1), |c| {
        c.nodes[0].client.is_connected()
    }));
    let synced = c.sync(0, a);
    assert!(
        matches!(&synced, Err(e) if e.kind() == "no_space"),
        "the write is on no disk, yet the sync reported {synced:?}"
    );
    c.clear_hook();
    store.heal();
    c.run_for(Duration::from_secs(2));
    c.sync(0, a).unwrap();
    assert_eq!(&store.durable_contents("f").unwrap()[..8], b"violator");
}
