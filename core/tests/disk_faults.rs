//! The disk fails under the in-memory cluster (`MemStore::inject`): no sync
//! reports success for bytes the disk does not hold, and no completed write
//! vanishes. Each test is a sequence the simulator (`rmmap-sim`) found.

use std::time::Duration;

use rmmap_core::client::MapOptions;
use rmmap_core::harness::Cluster;
use rmmap_core::server::ServerConfig;
use rmmap_core::store::{DiskFault, MemStore};

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
