//! How a client ends things, and how it hears that the server does: `unmap`
//! and `close` report what the disk refused instead of success, and a
//! graceful shutdown's `Goodbye` is confirmed with `Bye` and costs the
//! client nothing but a reconnection (docs/CONSISTENCY.md 3.1 and 3.2,
//! PROTOCOL.md section 9).

use std::time::Duration;

use bytes::Bytes;
use rmmap_core::client::{ClientEvent, Event, MapOptions, OpError};
use rmmap_core::harness::{Cluster, Direction};
use rmmap_core::protocol::ErrorCode;
use rmmap_core::server::ServerConfig;
use rmmap_core::store::{DiskFault, MemStore};

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

/// Every mapping some `SessionLost` event named, over the client's life.
fn reported_losses(c: &Cluster, i: usize) -> usize {
    c.nodes[i]
        .events
        .iter()
        .map(|e| match e {
            Event::Connection(ClientEvent::SessionLost { lost, .. }) => lost.len(),
            _ => 0,
        })
        .sum()
}

/// Client 0 writes "latest" at 100, client 1's read recalls it, and the
/// disk refuses it: the server keeps it in memory.
fn refused_write(c: &mut Cluster, store: &MemStore) -> rmmap_core::client::MappingId {
    let w = c
        .map(0, "f", 0, 8 * PAGE, MapOptions::read_write())
        .unwrap();
    let r = c.map(1, "f", 0, 8 * PAGE, MapOptions::read_only()).unwrap();
    c.write(0, w, 100, b"latest").unwrap();
    store.inject(DiskFault::Full);
    assert_eq!(&c.read(1, r, 100, 6).unwrap()[..], b"latest");
    w
}

#[test]
fn unmap_reports_a_write_the_disk_refused_and_keeps_the_mapping() {
    let (mut c, store) = cluster(2, 1);
    let w = refused_write(&mut c, &store);
    let e = c.unmap(0, w).unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::NoSpace), "{e}");
    // Not unmapped: the data is still there, and a later unmap succeeds.
    assert_eq!(&c.read(0, w, 100, 6).unwrap()[..], b"latest");
    store.heal();
    c.unmap(0, w).unwrap();
    assert_eq!(&store.durable_contents("f").unwrap()[100..106], b"latest");
}

#[test]
fn close_reports_a_write_the_disk_refused() {
    let (mut c, store) = cluster(2, 2);
    refused_write(&mut c, &store);
    let e = c.close(0).unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::NoSpace), "{e}");
    // Closed anyway, as close(2) is: later commands say so.
    assert!(c.nodes[0].client.closed().is_some());
}

#[test]
fn close_syncs_what_was_written_so_the_disk_has_it() {
    let (mut c, store) = cluster(1, 3);
    let w = c
        .map(0, "f", 0, 8 * PAGE, MapOptions::read_write())
        .unwrap();
    c.write(0, w, 700, b"closed").unwrap();
    c.close(0).unwrap();
    c.run_for(Duration::from_millis(100));
    assert_eq!(&store.durable_contents("f").unwrap()[700..706], b"closed");
}

#[test]
fn unmap_of_a_mapping_that_lost_writes_fails_saying_what_was_lost() {
    let (mut c, _store) = cluster(1, 4);
    let w = c
        .map(0, "f", 0, 8 * PAGE, MapOptions::read_write())
        .unwrap();
    c.write(0, w, 5, b"gone").unwrap();
    c.restart_server(true);
    c.settle();
    let e = c.unmap(0, w).unwrap_err();
    assert!(
        matches!(&e, OpError::SessionLost(l) if l.path == "f"),
        "{e}"
    );
    // It is gone all the same.
    assert!(matches!(
        c.unmap(0, w).unwrap_err(),
        OpError::UnknownMapping
    ));
}

/// Issue 19: a loss is reported exactly once. Once an operation has heard
/// it, the mapping goes on and its unmap and the client's close succeed.
#[test]
fn a_loss_reported_by_an_operation_is_not_reported_again_at_unmap_or_close() {
    let (mut c, store) = cluster(1, 4);
    store.insert("g", vec![0u8; (8 * PAGE) as usize]);
    let w = c
        .map(0, "f", 0, 8 * PAGE, MapOptions::read_write())
        .unwrap();
    let v = c
        .map(0, "g", 0, 8 * PAGE, MapOptions::read_write())
        .unwrap();
    c.write(0, w, PAGE + 5, b"gone").unwrap();
    c.write(0, v, 5, b"gone").unwrap();
    c.restart_server(true);
    c.settle();
    let e = c.sync(0, w).unwrap_err();
    assert!(
        matches!(&e, OpError::SessionLost(l) if l.pages == vec![1]),
        "{e}"
    );
    assert!(e.to_string().contains("page(s) 1"), "{e}");
    // Told: it goes on with the server's bytes, and unmaps cleanly.
    let server = store.durable_contents("f").unwrap();
    assert_eq!(
        c.read(0, w, PAGE, 16).unwrap()[..],
        server[PAGE as usize..PAGE as usize + 16]
    );
    c.unmap(0, w).unwrap();
    // Not told yet: the close says so.
    let now = c.now;
    let close = c.nodes[0].client.close(now).unwrap();
    let e = c
        .wait(0, close, Duration::from_secs(10))
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&e, OpError::SessionLost(l) if l.path == "g"),
        "{e}"
    );
}

/// A graceful shutdown with unsynced (but handed back) writes: the client
/// confirms the `Goodbye` with `Bye` (so the shutdown does not wait out
/// its farewell), reports nothing lost, and goes on with the next run.
#[test]
fn a_goodbye_is_confirmed_with_bye_and_a_graceful_restart_loses_nothing() {
    let (mut c, store) = cluster(2, 5);
    let w = c
        .map(0, "f", 0, 8 * PAGE, MapOptions::read_write())
        .unwrap();
    let r = c.map(1, "f", 0, 8 * PAGE, MapOptions::read_only()).unwrap();
    c.write(0, w, 100, b"before").unwrap();
    assert_eq!(&c.read(1, r, 0, 8).unwrap()[..], &[0u8; 8]);
    // The farewell waits at most a second for confirmations: well within
    // it, every client said Bye.
    assert!(c.graceful_restart(Duration::from_millis(500)));
    assert_eq!(&store.durable_contents("f").unwrap()[100..106], b"before");
    c.settle();
    assert_eq!(reported_losses(&c, 0), 0, "{:?}", c.nodes[0].events);
    assert_eq!(reported_losses(&c, 1), 0);
    assert_eq!(&c.read(1, r, 100, 6).unwrap()[..], b"before");
    c.write(0, w, 200, b"after").unwrap();
    c.sync(0, w).unwrap();
    assert_eq!(&c.read(1, r, 200, 5).unwrap()[..], b"after");
}

/// A write whose exclusive fetch meets a shutting-down server is not
/// failed: it waits for the next run and completes there. (Client 1 owns a
/// page and its answer to the shutdown's recall is held back, so the
/// shutdown is still recalling when client 0's fetch arrives.)
#[test]
fn a_write_answered_shutting_down_completes_on_the_next_run() {
    let (mut c, store) = cluster(2, 6);
    let w = c
        .map(0, "f", 0, 8 * PAGE, MapOptions::read_write())
        .unwrap();
    let other = c
        .map(1, "f", 0, 8 * PAGE, MapOptions::read_write())
        .unwrap();
    c.write(1, other, 7 * PAGE, b"owned").unwrap();
    c.hold(1, Direction::ToServer, true);
    c.server.begin_shutdown(c.now);
    let op = c.nodes[0]
        .client
        .write(c.now, w, 300, Bytes::from_static(b"waited"))
        .unwrap();
    c.run_for(Duration::from_millis(300));
    assert!(!c.server.is_shut_down(), "still recalling");
    assert!(!c.nodes[0].completions.contains_key(&op.id()), "not failed");
    c.hold(1, Direction::ToServer, false);
    assert!(c.run_until(Duration::from_secs(2), |c| c.server.is_shut_down()));
    assert!(!c.nodes[0].completions.contains_key(&op.id()), "not failed");
    c.restart_server(false);
    let done = c.wait(0, op.id(), Duration::from_secs(30)).expect("done");
    op.finish(done).unwrap();
    c.sync(0, w).unwrap();
    assert_eq!(&store.durable_contents("f").unwrap()[300..306], b"waited");
    assert_eq!(reported_losses(&c, 0), 0);
}

/// Rolling restarts (issue 19): the server is shut down gracefully and
/// started again 20 times while 8 clients write (each its own page, synced
/// only every other round) and read everyone's pages. Every read returns the
/// latest write, every write handed back before a Goodbye is on the disk
/// after it, no client is told of a loss, and no mapping is made again.
#[test]
fn twenty_graceful_restarts_under_eight_writers_lose_nothing_and_need_no_remap() {
    let (mut c, store) = cluster(8, 7);
    let maps: Vec<_> = (0..8)
        .map(|i| {
            c.map(i, "f", 0, 8 * PAGE, MapOptions::read_write())
                .unwrap()
        })
        .collect();
    let mut latest = [[0u8; 8]; 8];
    for round in 0..20u8 {
        for i in 0..8 {
            let value = [round, i as u8, 0xA5, round ^ 0x5A, 1, 2, 3, i as u8];
            c.write(i, maps[i], i as u64 * PAGE + 16, &value).unwrap();
            latest[i] = value;
            if round % 2 == 0 {
                c.sync(i, maps[i]).unwrap();
            }
        }
        for (i, &m) in maps.iter().enumerate() {
            for (j, want) in latest.iter().enumerate() {
                let got = c.read(i, m, j as u64 * PAGE + 16, 8).unwrap();
                assert_eq!(&got[..], want, "round {round}: client {i} reads page {j}");
            }
        }
        assert!(
            c.graceful_restart(Duration::from_millis(900)),
            "round {round}: every client confirmed the Goodbye"
        );
        let disk = store.durable_contents("f").unwrap();
        for (j, want) in latest.iter().enumerate() {
            let at = j * PAGE as usize + 16;
            assert_eq!(&disk[at..at + 8], want, "round {round}: page {j} on disk");
        }
        c.settle();
    }
    for i in 0..8 {
        assert_eq!(
            reported_losses(&c, i),
            0,
            "client {i}: {:?}",
            c.nodes[i].events
        );
    }
}
