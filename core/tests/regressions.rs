//! Regression tests for bugs found by the simulator and the fuzzer (see the
//! commit that added each).

use std::time::Duration;

use bytes::Bytes;
use rmmap_core::client::{ClientEvent, Event, MapOptions, SessionLossReason};
use rmmap_core::harness::{Cluster, Direction, Verdict};
use rmmap_core::protocol::{AtomicOp, Message};
use rmmap_core::server::ServerConfig;
use rmmap_core::store::MemStore;

const PAGE: u64 = 512;

fn config(lease_ms: u64) -> ServerConfig {
    ServerConfig {
        page_size: PAGE as u32,
        max_frame: 1 << 20,
        lease: Duration::from_millis(lease_ms),
        ..ServerConfig::default()
    }
}

fn lost_events(
    c: &Cluster,
    i: usize,
) -> Vec<(
    SessionLossReason,
    Vec<(
        rmmap_core::client::MappingId,
        rmmap_core::client::LostWrites,
    )>,
)> {
    c.nodes[i]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Connection(ClientEvent::SessionLost { reason, lost }) => {
                Some((*reason, lost.clone()))
            }
            _ => None,
        })
        .collect()
}

/// sim-3: a page filled by a full overwrite while a data fetch of the same
/// page was in flight kept the fetched (older) bytes.
#[test]
fn a_full_page_write_during_a_fetch_of_that_page_is_kept() {
    let store = MemStore::new();
    store.insert("f", vec![0u8; (4 * PAGE) as usize]);
    let mut c = Cluster::new(config(2000), store, 1, 290);
    c.settle();
    let m = c
        .map(0, "f", 0, 4 * PAGE, MapOptions::read_write())
        .unwrap();
    let now = c.now;
    let partial = c.nodes[0]
        .client
        .write(now, m, 2 * PAGE - 8, Bytes::from(vec![1u8; 16]))
        .unwrap();
    let full = c.nodes[0]
        .client
        .write(now, m, 2 * PAGE, Bytes::from(vec![2u8; PAGE as usize]))
        .unwrap();
    assert!(c.wait(0, partial, Duration::from_secs(5)).unwrap().is_ok());
    assert!(c.wait(0, full, Duration::from_secs(5)).unwrap().is_ok());
    let got = c.read(0, m, 2 * PAGE - 8, PAGE + 8).unwrap();
    // Both writes are concurrent: page 2 is either all 2s, or 1s then 2s.
    let tail = &got[16..];
    assert!(
        tail.iter().all(|b| *b == 2),
        "the full-page write was lost: {:?}",
        &got[..24]
    );
    assert!(got[..8].iter().all(|b| *b == 1));
}

/// sim-4: a restarted server granted write ownership while clients of the
/// previous run could still trust their leases.
#[test]
fn after_a_restart_writes_wait_one_lease_but_reads_do_not() {
    let store = MemStore::new();
    store.insert("f", vec![0u8; PAGE as usize]);
    let mut c = Cluster::new(config(1000), store, 2, 310);
    c.settle();
    let a = c.map(0, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    let b = c.map(1, "f", 0, PAGE, MapOptions::read_only()).unwrap();
    c.write(0, a, 0, b"v1").unwrap();
    c.sync(0, a).unwrap();
    c.restart_server(false);
    let restarted = c.now;
    c.settle();
    assert_eq!(&c.read(1, b, 0, 2).unwrap()[..], b"v1");
    assert!(
        c.now - restarted < Duration::from_millis(900),
        "reads are not held by the grace period"
    );
    // Client 0 learned of the restart (it reconnected), so its write needs
    // ownership from the new server, which waits out the grace period.
    c.write(0, a, 0, b"v2").unwrap();
    assert!(
        c.now - restarted >= Duration::from_millis(1000),
        "a write completed within the grace period"
    );
    assert_eq!(&c.read(1, b, 0, 2).unwrap()[..], b"v2");
    assert!(c.server.check_invariants().is_ok());
}

/// sim-1: dirty data carried by a recall acknowledgement the server never
/// confirmed was lost at session expiry without telling the client, and
/// the client's copy later revalidated as current.
#[test]
fn data_in_an_unconfirmed_recall_ack_is_reported_lost_and_never_revalidated() {
    let store = MemStore::new();
    store.insert("f", vec![0u8; PAGE as usize]);
    let mut c = Cluster::new(config(1000), store, 2, 529);
    c.settle();
    let a = c.map(0, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    let b = c.map(1, "f", 0, PAGE, MapOptions::read_only()).unwrap();
    c.write(0, a, 0, b"mine").unwrap();
    // The recall acknowledgement carrying "mine" is lost with the connection,
    // and client 0 stays away until its session has expired.
    let mut armed = true;
    c.set_hook(Box::new(move |i, d, m| {
        if armed
            && i == 0
            && d == Direction::ToServer
            && matches!(m, Message::RecallAck(r) if !r.patches.is_empty())
        {
            armed = false;
            return Verdict::DropAndCut;
        }
        Verdict::Deliver
    }));
    c.nodes[0].unreachable = true;
    let now = c.now;
    let read = c.nodes[1].client.read(now, b, 0, 4).unwrap();
    let got = c.wait(1, read, Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(
        got,
        rmmap_core::client::Completion::Read(Bytes::from_static(&[0; 4]))
    );
    c.nodes[0].unreachable = false;
    assert!(c.run_until(Duration::from_secs(30), |c| {
        c.nodes[0].client.is_connected()
    }));
    let lost = lost_events(&c, 0);
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].0, SessionLossReason::LeaseExpired);
    assert_eq!(
        lost[0].1.len(),
        1,
        "the mapping whose data was in the lost acknowledgement is named"
    );
    assert_eq!(lost[0].1[0].0, a);
    // Its next read reports the loss instead of showing data nobody else
    // has; after that it reads what the server has.
    assert_eq!(c.read(0, a, 0, 4).unwrap_err().kind(), "session_lost");
    assert_eq!(&c.read(0, a, 0, 4).unwrap()[..], &[0; 4]);
    // A fresh mapping of the file sees what the server has.
    let fresh = c.map(0, "f", 0, PAGE, MapOptions::read_only()).unwrap();
    assert_eq!(&c.read(0, fresh, 0, 4).unwrap()[..], &[0; 4]);
}

/// sim-2: an applied atomic was not counted as a write needing a sync, so a
/// server crash lost it silently.
#[test]
fn an_unsynced_atomic_is_reported_lost_by_a_server_crash() {
    let store = MemStore::new();
    store.insert("f", vec![0u8; PAGE as usize]);
    let mut c = Cluster::new(config(1000), store, 1, 694);
    c.settle();
    let m = c.map(0, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    c.atomic(
        0,
        m,
        8,
        AtomicOp::CompareExchange {
            expected: 0,
            new: 7,
        },
    )
    .unwrap();
    c.restart_server(true);
    assert!(c.run_until(Duration::from_secs(30), |c| {
        c.nodes[0].client.is_connected()
    }));
    let lost = lost_events(&c, 0);
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].1.len(), 1);
    assert!(lost[0].1[0].1.unsynced_writes);
}

/// sim-6: a clean shutdown recorded as the next run's grace only what was
/// left of its own clients' leases, not what was left of the grace it had
/// started with. A run that started inside an earlier run's grace and shut
/// down at once (nobody connected) let the run after it grant write
/// ownership while a client of the first run still trusted its cache.
#[test]
fn a_clean_shutdown_keeps_what_is_left_of_the_grace_it_started_with() {
    let store = MemStore::new();
    store.insert("f", vec![0u8; PAGE as usize]);
    let mut c = Cluster::new(config(10_000), store, 1, 111);
    c.settle();
    let m = c.map(0, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    c.read(0, m, 0, 8).unwrap();
    // The client hears nothing more (no goodbye) and cannot reconnect: it
    // trusts its cached page until its lease runs out.
    c.hold(0, Direction::ToClient, true);
    c.nodes[0].unreachable = true;
    assert!(c.graceful_restart(Duration::from_secs(5)));
    assert!(c.graceful_restart(Duration::from_secs(5)));
    c.run_for(Duration::from_millis(10));
    assert!(c.nodes[0].client.lease_valid_at(c.now));
    assert!(
        c.server.in_grace(c.now),
        "a client of the first run still trusts its cache, but the third run grants writes"
    );
}

/// sim-7: an exclusive fetch that had begun reading its pages from a slow
/// disk when a graceful shutdown began was granted once the read finished:
/// an owner appeared after the shutdown's one round of recalls, and could
/// write bytes the shutdown would neither recall nor sync.
#[test]
fn a_fetch_reading_its_pages_when_shutdown_begins_gets_no_ownership() {
    let store = MemStore::new();
    store.insert("f", vec![0u8; PAGE as usize]);
    let mut c = Cluster::new(config(1500), store, 1, 207);
    c.settle();
    let m = c.map(0, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    c.set_disk_hook(Box::new(|r: &rmmap_core::store::StoreRequest| match r.op {
        rmmap_core::store::StoreOp::Read { .. } => Duration::from_millis(100),
        _ => Duration::ZERO,
    }));
    let now = c.now;
    let write = c.nodes[0]
        .client
        .write(now, m, 0, Bytes::from_static(b"late"))
        .unwrap();
    c.flush();
    c.run_for(Duration::from_millis(10));
    assert_eq!(
        c.server.store_requests_outstanding(),
        1,
        "the page is being read"
    );
    c.server.begin_shutdown(c.now);
    c.flush();
    // The fetch is answered `shutting_down`; the client keeps the write
    // to ask the next run (no restart comes here), so it must not complete.
    let done = c.wait(0, write, Duration::from_secs(5));
    assert!(
        !matches!(done, Some(Ok(_))),
        "the write got ownership during shutdown: {done:?}"
    );
    assert!(c.run_until(Duration::from_secs(5), |c| c.server.is_shut_down()));
}

/// sim-8: a retry of this run's first run-state save (the disk had failed)
/// fired during a graceful shutdown, before the farewell: it recorded the
/// final state with no grace at all, and its completion ended the shutdown
/// there, while a client that never heard the goodbye still trusted its
/// cache. Only the final state's save ends a shutdown now.
#[test]
fn a_run_state_retry_during_shutdown_does_not_end_it_early() {
    let store = MemStore::new();
    store.insert("f", vec![0u8; PAGE as usize]);
    store.inject(rmmap_core::store::DiskFault::Broken);
    let mut c = Cluster::new(config(10_000), store.clone(), 1, 10655);
    store.heal();
    c.settle();
    let m = c.map(0, "f", 0, PAGE, MapOptions::read_only()).unwrap();
    c.read(0, m, 0, 8).unwrap();
    c.run_for(Duration::from_millis(300));
    // The goodbye never reaches the client: the farewell waits for it past
    // the retry of the failed save (one second after the start).
    c.hold(0, Direction::ToClient, true);
    assert!(c.graceful_restart(Duration::from_secs(5)));
    c.run_for(Duration::from_millis(10));
    assert!(c.nodes[0].client.lease_valid_at(c.now));
    assert!(
        c.server.in_grace(c.now),
        "a client of the first run still trusts its cache, but the next run grants writes"
    );
}

/// A page written, synced (its bytes now shared with the write-back) and
/// then recalled with a downgrade because another client reads it stays in
/// the writer's cache as a shared copy, counted once. The recall used to
/// drop such a copy's bytes while the cache went on counting the page, so
/// every such hand-over made the cache look one page fuller than it was.
#[test]
fn a_synced_page_downgraded_by_a_reader_stays_cached_and_counted_once() {
    let store = MemStore::new();
    store.insert("f", vec![0u8; 4096]);
    let mut c = Cluster::new(ServerConfig::default(), store, 2, 11);
    c.settle();
    let w = c.map(0, "f", 0, 4096, MapOptions::read_write()).unwrap();
    let r = c.map(1, "f", 0, 4096, MapOptions::read_only()).unwrap();
    c.write(0, w, 0, b"abcd").unwrap();
    c.sync(0, w).unwrap();
    assert_eq!(&c.read(1, r, 0, 4).unwrap()[..], b"abcd");
    let now = c.now;
    let mut buf = [0u8; 4];
    let writer = &mut c.nodes[0].client;
    assert!(
        writer.try_read(now, w, 0, &mut buf).unwrap(),
        "the writer kept its copy"
    );
    assert_eq!(&buf, b"abcd");
    assert_eq!(writer.cached_pages(), writer.cached_page_view().len());
}

/// sim-9: a client kept its copies of a mapping's pages until the answer to
/// its `Unmap` came back, while the server had stopped counting it as a
/// holder on reading the `Unmap` and granted another client ownership:
/// a reader beside a writer (seeds 8981 and 31710, once r19 let a mapping
/// that lost writes go on and revalidate its clean copies).
#[test]
fn copies_leave_the_cache_when_the_unmap_goes_out() {
    let store = MemStore::new();
    store.insert("f", vec![0u8; PAGE as usize]);
    let mut c = Cluster::new(config(2000), store, 2, 311);
    c.settle();
    let a = c.map(0, "f", 0, PAGE, MapOptions::read_only()).unwrap();
    let b = c.map(1, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    assert_eq!(&c.read(0, a, 0, 2).unwrap()[..], b"\0\0");
    assert_eq!(c.nodes[0].client.cached_page_view().len(), 1);
    // The answer to the Unmap does not come back yet.
    c.hold(0, Direction::ToClient, true);
    let now = c.now;
    let unmap = c.nodes[0].client.unmap(now, a).unwrap();
    c.flush();
    c.run_for(Duration::from_millis(10));
    assert!(
        c.nodes[0].client.cached_page_view().is_empty(),
        "client 0 still holds a page the server no longer counts it a holder of"
    );
    // Client 1 owns the page now, and client 0 holds no copy beside it.
    c.write(1, b, 0, b"v2").unwrap();
    assert!(c.nodes[0].client.cached_page_view().is_empty());
    c.hold(0, Direction::ToClient, false);
    assert!(
        c.wait(0, unmap.id(), Duration::from_secs(5))
            .unwrap()
            .is_ok()
    );
    assert!(c.server.check_invariants().is_ok());
}

/// Found reviewing e48f927: with copies released when the `Unmap` goes out,
/// the first of two unmaps of one file to be answered forgot the file while
/// the other mapping still waited for its `Unmapped`, so a fetch answer for
/// that mapping arriving in between named an unknown handle and the client
/// dropped the connection. The file is kept until its last unmap is done.
#[test]
fn a_file_is_kept_until_its_last_unmap_is_answered() {
    let store = MemStore::new();
    store.insert("f", vec![0u8; (2 * PAGE) as usize]);
    let mut c = Cluster::new(config(2000), store, 1, 313);
    c.settle();
    let a = c.map(0, "f", 0, PAGE, MapOptions::read_only()).unwrap();
    let b = c.map(0, "f", PAGE, PAGE, MapOptions::read_only()).unwrap();
    let hellos = std::rc::Rc::new(std::cell::Cell::new(0));
    let seen = hellos.clone();
    c.set_hook(Box::new(move |_, d, m| {
        if let (Direction::ToServer, Message::Hello(_)) = (d, m) {
            seen.set(seen.get() + 1);
        }
        Verdict::Deliver
    }));
    // Disk reads take 20 ms: b's fetch is answered after a's unmap.
    c.set_disk_hook(Box::new(|r| match r.op {
        rmmap_core::store::StoreOp::Read { .. } => Duration::from_millis(20),
        _ => Duration::ZERO,
    }));
    let now = c.now;
    let read = c.nodes[0].client.read(now, b, 0, 2).unwrap();
    c.flush();
    c.hold(0, Direction::ToClient, true);
    let ua = c.nodes[0].client.unmap(now, a).unwrap();
    c.flush();
    c.run_for(Duration::from_millis(30));
    let now = c.now;
    let ub = c.nodes[0].client.unmap(now, b).unwrap();
    c.flush();
    c.run_for(Duration::from_millis(5));
    // Unmapped(a), then Pages for b's fetch, then Unmapped(b).
    c.hold(0, Direction::ToClient, false);
    assert!(c.wait(0, ua.id(), Duration::from_secs(5)).unwrap().is_ok());
    let _ = c.wait(0, read.id(), Duration::from_secs(5));
    assert!(c.wait(0, ub.id(), Duration::from_secs(5)).unwrap().is_ok());
    assert_eq!(hellos.get(), 0, "the client dropped its connection");
    assert!(c.nodes[0].client.is_connected());
}
