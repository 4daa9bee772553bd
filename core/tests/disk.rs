//! The disk as an effect of the server: slow, out of order, full, failing.
//! Each test states the guarantee of docs/CONSISTENCY.md section 3.1 or 3.2
//! it checks, through real clients in the in-memory cluster.

use std::time::Duration;

use rmmap_core::client::{ClientEvent, Event, MapOptions, OpError};
use rmmap_core::harness::Cluster;
use rmmap_core::protocol::ErrorCode;
use rmmap_core::server::ServerConfig;
use rmmap_core::store::{DiskFault, MemStore, StoreOp};

const PAGE: u64 = 512;

fn config() -> ServerConfig {
    ServerConfig {
        page_size: PAGE as u32,
        max_frame: 1 << 20,
        lease: Duration::from_secs(2),
        ..ServerConfig::default()
    }
}

fn cluster(clients: usize, seed: u64) -> (Cluster, MemStore) {
    let store = MemStore::new();
    store.insert("f", vec![0u8; (8 * PAGE) as usize]);
    let mut c = Cluster::new(config(), store.clone(), clients, seed);
    c.settle();
    (c, store)
}

fn code(e: &OpError) -> Option<ErrorCode> {
    match e {
        OpError::Server { code, .. } => Some(*code),
        _ => None,
    }
}

/// A write the disk refuses is kept by the server: every reader gets it,
/// the writer's sync fails naming the cause (not a lost session), and once
/// the disk takes writes again a sync succeeds and the bytes are durable.
#[test]
fn a_write_the_disk_refuses_stays_readable_and_fails_only_its_writers_sync() {
    let (mut c, store) = cluster(2, 1);
    let w = c
        .map(0, "f", 0, 8 * PAGE, MapOptions::read_write())
        .unwrap();
    let r = c.map(1, "f", 0, 8 * PAGE, MapOptions::read_only()).unwrap();
    c.write(0, w, 100, b"latest").unwrap();
    store.inject(DiskFault::Full);
    // The reader's fetch recalls the page; the server cannot write it.
    assert_eq!(&c.read(1, r, 100, 6).unwrap()[..], b"latest");
    let e = c.sync(0, w).unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::NoSpace), "{e}");
    assert!(e.to_string().contains('f'), "names the file: {e}");
    assert_eq!(&store.durable_contents("f").unwrap()[100..106], &[0u8; 6]);
    // The reader's own sync concerns none of its bytes: it succeeds.
    c.sync(1, r).unwrap();
    // Nobody reads anything older, whatever the disk holds.
    assert_eq!(&c.read(0, w, 100, 6).unwrap()[..], b"latest");
    assert!(
        c.nodes[0]
            .events
            .iter()
            .all(|e| !matches!(e, Event::Connection(ClientEvent::SessionLost { .. }))),
        "no session was lost"
    );
    store.heal();
    c.sync(0, w).unwrap();
    assert_eq!(&store.durable_contents("f").unwrap()[100..106], b"latest");
    assert!(store.faults_seen() > 0);
}

/// After a failed fsync the kernel may drop the dirty pages: the server
/// does not assume they reached the disk; it serves them from memory, and a
/// later sync writes them again before it succeeds.
#[test]
fn after_a_failed_fsync_the_data_is_written_again_before_a_sync_succeeds() {
    let (mut c, store) = cluster(2, 2);
    let w = c
        .map(0, "f", 0, 8 * PAGE, MapOptions::read_write())
        .unwrap();
    let r = c.map(1, "f", 0, 8 * PAGE, MapOptions::read_only()).unwrap();
    c.write(0, w, 0, b"first").unwrap();
    store.inject(DiskFault::FailedSync);
    let e = c.sync(0, w).unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::Io), "{e}");
    // The store dropped the bytes; the server still has them, and another
    // client's fetch gets them from it.
    assert_eq!(&store.contents("f").unwrap()[..5], &[0u8; 5]);
    assert_eq!(&c.read(1, r, 0, 5).unwrap()[..], b"first");
    c.sync(0, w).unwrap();
    assert_eq!(&store.durable_contents("f").unwrap()[..5], b"first");
}

/// A short write (ENOSPC half-way) leaves part of the data on the disk; the
/// server writes all of it again (here: before the sync, which succeeds).
#[test]
fn a_short_write_is_written_again_whole() {
    let (mut c, store) = cluster(1, 3);
    let w = c
        .map(0, "f", 0, 8 * PAGE, MapOptions::read_write())
        .unwrap();
    let data: Vec<u8> = (0..(2 * PAGE) as usize).map(|i| i as u8).collect();
    c.write(0, w, 0, &data).unwrap();
    store.inject(DiskFault::ShortWrite);
    c.sync(0, w).unwrap();
    assert_eq!(store.faults_seen(), 1, "the write-back was cut short");
    assert_eq!(
        &store.durable_contents("f").unwrap()[..data.len()],
        &data[..]
    );
}

/// Past the bound of data the disk refused, new write ownership is refused
/// with no_space rather than accepted and lost; reads go on.
#[test]
fn past_the_bound_of_unwritten_data_new_writes_are_refused() {
    let store = MemStore::new();
    store.insert("f", vec![0u8; (8 * PAGE) as usize]);
    let cfg = ServerConfig {
        max_unwritten_bytes: PAGE,
        ..config()
    };
    let mut c = Cluster::new(cfg, store.clone(), 2, 4);
    c.settle();
    let w = c
        .map(0, "f", 0, 8 * PAGE, MapOptions::read_write())
        .unwrap();
    let r = c
        .map(1, "f", 0, 8 * PAGE, MapOptions::read_write())
        .unwrap();
    c.write(0, w, 0, &vec![1u8; PAGE as usize]).unwrap();
    store.inject(DiskFault::Full);
    assert!(c.sync(0, w).is_err());
    let e = c.write(1, r, 4 * PAGE, b"x").unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::NoSpace), "{e}");
    assert_eq!(&c.read(1, r, 0, 4).unwrap()[..], &[1u8; 4]);
    store.heal();
    // The retry timer writes it; then writes are taken again.
    c.run_for(Duration::from_secs(2));
    c.write(1, r, 4 * PAGE, b"x").unwrap();
    c.sync(0, w).unwrap();
}

/// Store requests that finish late and out of order change no outcome: two
/// clients writing and reading the same pages always read the latest write.
#[test]
fn a_slow_disk_that_finishes_out_of_order_keeps_reads_latest() {
    let (mut c, store) = cluster(2, 5);
    let mut n = 0u64;
    c.set_disk_hook(Box::new(move |req| {
        n += 1;
        // Reads slow, writes fast, every third request very slow.
        let ms = match req.op {
            StoreOp::Read { .. } => 7,
            _ if n % 3 == 0 => 13,
            _ => 1,
        };
        Duration::from_millis(ms)
    }));
    let m0 = c
        .map(0, "f", 0, 8 * PAGE, MapOptions::read_write())
        .unwrap();
    let m1 = c
        .map(1, "f", 0, 8 * PAGE, MapOptions::read_write())
        .unwrap();
    let ms = [m0, m1];
    for round in 0..60u64 {
        let i = (round % 2) as usize;
        let at = (round * 37) % (7 * PAGE);
        let v = round.to_le_bytes();
        c.write(i, ms[i], at, &v).unwrap();
        let other = 1 - i;
        assert_eq!(
            &c.read(other, ms[other], at, 8).unwrap()[..],
            &v,
            "round {round}"
        );
        if round % 10 == 9 {
            c.sync(i, ms[i]).unwrap();
        }
    }
    c.sync(0, m0).unwrap();
    c.sync(1, m1).unwrap();
    let last = 59u64;
    let at = ((last * 37) % (7 * PAGE)) as usize;
    assert_eq!(
        &store.durable_contents("f").unwrap()[at..at + 8],
        &last.to_le_bytes()
    );
    assert!(c.store_requests > 0);
}

/// Open files are a cache: with room for two, one client maps and reads
/// eight files (each closed and reopened as needed) while another keeps
/// working on its own.
#[test]
fn a_client_mapping_more_files_than_the_server_keeps_open_stalls_nobody() {
    let store = MemStore::new();
    for k in 0..8 {
        store.insert(&format!("many/{k}"), vec![k as u8; PAGE as usize]);
    }
    store.insert("mine", vec![0u8; PAGE as usize]);
    let cfg = ServerConfig {
        max_open_files: 2,
        ..config()
    };
    let mut c = Cluster::new(cfg, store, 2, 6);
    c.settle();
    let own = c.map(1, "mine", 0, PAGE, MapOptions::read_write()).unwrap();
    let mut maps = Vec::new();
    for k in 0..8 {
        let path = format!("many/{k}");
        maps.push(c.map(0, &path, 0, PAGE, MapOptions::read_write()).unwrap());
        c.write(1, own, 0, &[k as u8; 8]).unwrap();
    }
    for (k, m) in maps.iter().enumerate() {
        assert_eq!(&c.read(0, *m, 0, 4).unwrap()[..], &[k as u8; 4]);
        c.write(0, *m, 8, b"again").unwrap();
        c.sync(0, *m).unwrap();
    }
    c.sync(1, own).unwrap();
}

/// A server grants nothing — not even a session, whose lease its client may
/// serve reads under — before its run state is recorded: a crash before
/// that would leave the next run no reason to wait for those leases.
#[test]
fn no_session_begins_before_the_run_state_is_recorded() {
    let (mut c, _store) = cluster(1, 7);
    // Restart over a disk that takes a second to record the new run.
    c.set_disk_hook(Box::new(|req| match req.op {
        StoreOp::SaveRunState { .. } => Duration::from_secs(1),
        _ => Duration::ZERO,
    }));
    c.restart_server(false);
    let started = c.now;
    c.settle();
    assert!(
        c.now - started >= Duration::from_secs(1),
        "a session began {:?} after the start",
        c.now - started
    );
}
