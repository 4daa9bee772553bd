//! `Client::wait_while`: a futex across machines on a plain mapping. It
//! wakes on another client's write (through the server's invalidation),
//! on a server-side atomic, on this client's own write, and otherwise at
//! its timeout, with the value a write stored.

use std::time::Duration;

use rmmap_core::client::{MapOptions, OpError};
use rmmap_core::harness::Cluster;
use rmmap_core::protocol::AtomicOp;
use rmmap_core::server::ServerConfig;
use rmmap_core::store::MemStore;

const PAGE: u64 = 512;

fn cluster(clients: usize) -> Cluster {
    let store = MemStore::new();
    store.insert("f", vec![0u8; (2 * PAGE) as usize]);
    let cfg = ServerConfig {
        page_size: PAGE as u32,
        max_frame: 1 << 20,
        lease: Duration::from_millis(2000),
        ..ServerConfig::default()
    };
    let mut c = Cluster::new(cfg, store, clients, 77);
    c.settle();
    c
}

#[test]
fn another_clients_write_wakes_the_waiter_with_the_new_value() {
    let mut c = cluster(2);
    let a = c.map(0, "f", 0, 2 * PAGE, MapOptions::read_only()).unwrap();
    let b = c
        .map(1, "f", 0, 2 * PAGE, MapOptions::read_write())
        .unwrap();
    let now = c.now;
    let wait = c.nodes[0]
        .client
        .wait_while(now, a, PAGE + 8, 0, Duration::from_secs(60))
        .unwrap();
    // Still waiting a while later: the word holds 0.
    assert!(c.wait(0, wait.id(), Duration::from_secs(5)).is_none());
    c.write(1, b, PAGE + 8, &7u64.to_le_bytes()).unwrap();
    let wrote = c.now;
    let got = c.wait(0, wait.id(), Duration::from_secs(60)).unwrap();
    assert_eq!(wait.finish(got).unwrap(), Some(7));
    assert!(
        c.now - wrote < Duration::from_millis(50),
        "woken {:?} after the write, not by its invalidation",
        c.now - wrote
    );
}

#[test]
fn a_server_side_atomic_wakes_the_waiter() {
    let mut c = cluster(2);
    let a = c
        .map(0, "f", 0, 2 * PAGE, MapOptions::read_write())
        .unwrap();
    let b = c
        .map(1, "f", 0, 2 * PAGE, MapOptions::read_write())
        .unwrap();
    // Client 0 owns the page (it wrote it): the atomic must recall it.
    c.write(0, a, 0, &5u64.to_le_bytes()).unwrap();
    let now = c.now;
    let wait = c.nodes[0]
        .client
        .wait_while(now, a, 0, 5, Duration::from_secs(60))
        .unwrap();
    assert!(c.wait(0, wait.id(), Duration::from_secs(1)).is_none());
    assert_eq!(c.atomic(1, b, 0, AtomicOp::FetchAdd(3)).unwrap(), (5, true));
    let got = c.wait(0, wait.id(), Duration::from_secs(1)).unwrap();
    assert_eq!(wait.finish(got).unwrap(), Some(8));
}

#[test]
fn this_clients_own_write_wakes_the_waiter() {
    let mut c = cluster(1);
    let a = c
        .map(0, "f", 0, 2 * PAGE, MapOptions::read_write())
        .unwrap();
    let now = c.now;
    let wait = c.nodes[0]
        .client
        .wait_while(now, a, 16, 0, Duration::from_secs(60))
        .unwrap();
    assert!(c.wait(0, wait.id(), Duration::from_secs(1)).is_none());
    c.write(0, a, 16, &9u64.to_le_bytes()).unwrap();
    let got = c.wait(0, wait.id(), Duration::ZERO).unwrap();
    assert_eq!(wait.finish(got).unwrap(), Some(9));
}

#[test]
fn a_value_that_already_differs_returns_at_once_and_an_unchanged_one_times_out() {
    let mut c = cluster(1);
    let a = c
        .map(0, "f", 0, 2 * PAGE, MapOptions::read_write())
        .unwrap();
    c.write(0, a, 0, &1u64.to_le_bytes()).unwrap();
    let now = c.now;
    let wait = c.nodes[0]
        .client
        .wait_while(now, a, 0, 0, Duration::from_secs(60))
        .unwrap();
    let got = c.wait(0, wait.id(), Duration::ZERO).unwrap();
    assert_eq!(wait.finish(got).unwrap(), Some(1));

    let start = c.now;
    let wait = c.nodes[0]
        .client
        .wait_while(start, a, 0, 1, Duration::from_millis(300))
        .unwrap();
    let got = c.wait(0, wait.id(), Duration::from_secs(60)).unwrap();
    assert_eq!(wait.finish(got).unwrap(), None);
    let waited = c.now - start;
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(400),
        "timed out after {waited:?}"
    );
}

#[test]
fn misaligned_and_out_of_range_words_are_refused() {
    let mut c = cluster(1);
    let a = c.map(0, "f", 0, 2 * PAGE, MapOptions::read_only()).unwrap();
    let now = c.now;
    let cl = &mut c.nodes[0].client;
    assert!(matches!(
        cl.wait_while(now, a, 4, 0, Duration::ZERO),
        Err(OpError::Misaligned(4))
    ));
    assert!(matches!(
        cl.wait_while(now, a, 2 * PAGE - 4, 0, Duration::ZERO),
        Err(OpError::OutOfRange { .. })
    ));
    assert!(matches!(
        cl.wait_while(now, a, u64::MAX - 3, 0, Duration::MAX),
        Err(OpError::OutOfRange { .. })
    ));
}
