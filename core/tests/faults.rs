//! Faults on the in-memory cluster: silent clients, cut connections, server
//! restarts. Nothing is lost silently and nothing is applied twice.

use std::time::Duration;

use bytes::Bytes;
use rmmap_core::client::{
    ClientConfig, ClientEvent, Event, LossCause, MapOptions, MappingId, OpError, SessionLossReason,
};
use rmmap_core::harness::{Cluster, Direction, Verdict};
use rmmap_core::protocol::{AtomicOp, Message};
use rmmap_core::server::ServerConfig;
use rmmap_core::store::MemStore;

const PAGE: u64 = 4096;

fn config(lease_ms: u64) -> ServerConfig {
    ServerConfig {
        lease: Duration::from_millis(lease_ms),
        ..ServerConfig::default()
    }
}

fn cluster(clients: usize, lease_ms: u64) -> (Cluster, MemStore) {
    let store = MemStore::new();
    store.insert("f", vec![0u8; (4 * PAGE) as usize]);
    let mut c = Cluster::new(config(lease_ms), store.clone(), clients, 11);
    c.settle();
    (c, store)
}

#[test]
fn a_silent_client_loses_its_pages_after_its_lease_and_the_others_proceed() {
    let (mut c, _) = cluster(2, 1000);
    let a = c.map(0, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    let b = c.map(1, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    c.write(0, a, 0, b"mine").unwrap();
    // Client 0 falls silent: its link stalls both ways and it cannot reconnect.
    c.nodes[0].unreachable = true;
    c.hold(0, Direction::ToServer, true);
    c.hold(0, Direction::ToClient, true);
    let start = c.now;
    c.write(1, b, 0, b"over").unwrap();
    let waited = c.now - start;
    assert!(
        waited <= Duration::from_millis(1100),
        "writer stalled {waited:?}, more than one lease"
    );
    assert!(
        waited >= Duration::from_millis(500),
        "writer did not wait for the lease ({waited:?})"
    );
    assert_eq!(&c.read(1, b, 0, 4).unwrap()[..], b"over");
    // While partitioned, client 0 never serves its stale copy.
    let mut buf = [0u8; 4];
    let now = c.now;
    assert!(!c.nodes[0].client.try_read(now, a, 0, &mut buf).unwrap());
    // It comes back: the session is gone and it is told what was lost.
    c.nodes[0].unreachable = false;
    c.cut(0);
    c.run_until(Duration::from_secs(30), |c| {
        c.nodes[0].client.is_connected()
    });
    let lost = c.nodes[0].events.iter().find_map(|e| match e {
        Event::Connection(ClientEvent::SessionLost { reason, lost }) => {
            Some((*reason, lost.clone()))
        }
        _ => None,
    });
    let (reason, lost) = lost.expect("the client reports the lost session");
    assert_eq!(reason, SessionLossReason::LeaseExpired);
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].0, a);
    assert_eq!(lost[0].1.dirty_pages, 1);
    assert_eq!(lost[0].1.pages, vec![0], "the lost page is named");
    // The next operation reports the loss, once, naming the page ...
    match c.read(0, a, 0, 4) {
        Err(OpError::SessionLost(l)) => assert_eq!(l.pages, vec![0]),
        other => panic!("expected session_lost, got {other:?}"),
    }
    // ... and the mapping goes on with the server's bytes.
    assert_eq!(&c.read(0, a, 0, 4).unwrap()[..], b"over");
    c.write(0, a, 0, b"back").unwrap();
    c.sync(0, a).unwrap();
    assert_eq!(&c.read(1, b, 0, 4).unwrap()[..], b"back");
    c.unmap(0, a).unwrap();
}

#[test]
fn a_cut_in_the_middle_of_a_write_resumes_and_applies_once() {
    let (mut c, store) = cluster(1, 5000);
    let m = c
        .map(0, "f", 0, 4 * PAGE, MapOptions::read_write())
        .unwrap();
    // Lose the grant for the write, and the connection with it.
    let mut armed = true;
    c.set_hook(Box::new(move |_, d, msg| {
        if armed && d == Direction::ToClient && matches!(msg, Message::Pages(p) if p.exclusive) {
            armed = false;
            return Verdict::DropAndCut;
        }
        Verdict::Deliver
    }));
    c.write(0, m, PAGE - 3, b"across").unwrap();
    // Lose the write-back's acknowledgement: the server applied it, the
    // client sends it again after resuming; the server must not apply twice.
    let mut armed = true;
    c.set_hook(Box::new(move |_, d, msg| {
        if armed && d == Direction::ToClient && matches!(msg, Message::WriteAck(_)) {
            armed = false;
            return Verdict::DropAndCut;
        }
        Verdict::Deliver
    }));
    c.sync(0, m).unwrap();
    assert!(c.nodes[0].events.iter().any(|e| matches!(
        e,
        Event::Connection(ClientEvent::Connected { resumed: true })
    )));
    assert_eq!(
        &store.durable_contents("f").unwrap()[(PAGE - 3) as usize..(PAGE + 3) as usize],
        b"across"
    );
    // An atomic increment whose reply is lost is not counted twice.
    let mut armed = true;
    c.set_hook(Box::new(move |_, d, msg| {
        if armed && d == Direction::ToClient && matches!(msg, Message::AtomicDone(_)) {
            armed = false;
            return Verdict::DropAndCut;
        }
        Verdict::Deliver
    }));
    let (prev, applied) = c.atomic(0, m, 2 * PAGE, AtomicOp::FetchAdd(5)).unwrap();
    assert_eq!((prev, applied), (0, true));
    c.clear_hook();
    let (prev, _) = c.atomic(0, m, 2 * PAGE, AtomicOp::FetchAdd(1)).unwrap();
    assert_eq!(prev, 5, "the first increment was applied exactly once");
}

#[test]
fn a_server_restart_names_every_mapping_that_lost_writes() {
    let store = MemStore::new();
    for f in ["synced", "unsynced", "dirty"] {
        store.insert(f, vec![0u8; PAGE as usize]);
    }
    let mut c = Cluster::new(config(2000), store.clone(), 1, 3);
    c.settle();
    let synced = c
        .map(0, "synced", 0, PAGE, MapOptions::read_write())
        .unwrap();
    let unsynced = c
        .map(0, "unsynced", 0, PAGE, MapOptions::read_write())
        .unwrap();
    let dirty = c
        .map(0, "dirty", 0, PAGE, MapOptions::read_write())
        .unwrap();
    c.write(0, synced, 0, b"kept").unwrap();
    c.sync(0, synced).unwrap();
    // Written after the last sync and never synced: the server may lose it.
    c.sync(0, unsynced).unwrap();
    c.write(0, unsynced, 0, b"gone").unwrap();
    c.write(0, dirty, 0, b"lost").unwrap();
    c.restart_server(true);
    c.run_until(Duration::from_secs(30), |c| {
        c.nodes[0].client.is_connected()
    });
    let lost = c.nodes[0]
        .events
        .iter()
        .find_map(|e| match e {
            Event::Connection(ClientEvent::SessionLost {
                reason: SessionLossReason::ServerRestarted,
                lost,
            }) => Some(lost.clone()),
            _ => None,
        })
        .expect("the restart is reported");
    let ids: Vec<_> = lost.iter().map(|(m, _)| *m).collect();
    assert!(
        ids.contains(&unsynced) && ids.contains(&dirty) && !ids.contains(&synced),
        "lost: {lost:?}"
    );
    for (_, l) in &lost {
        assert_eq!(
            l.cause,
            LossCause::Session(SessionLossReason::ServerRestarted)
        );
    }
    // The synced mapping carries on; the others report what was lost once,
    // then go on with what the server kept.
    assert_eq!(&c.read(0, synced, 0, 4).unwrap()[..], b"kept");
    match c.read(0, dirty, 0, 4) {
        Err(OpError::SessionLost(l)) => {
            assert_eq!(l.dirty_pages, 1);
            assert_eq!(l.pages, vec![0]);
        }
        other => panic!("expected session_lost, got {other:?}"),
    }
    assert_eq!(
        c.read(0, unsynced, 0, 4).unwrap_err().kind(),
        "session_lost"
    );
    for (m, path) in [(dirty, "dirty"), (unsynced, "unsynced")] {
        let server = store.durable_contents(path).unwrap();
        assert_eq!(c.read(0, m, 0, 4).unwrap()[..], server[..4], "{path}");
        c.write(0, m, 0, b"anew").unwrap();
        c.sync(0, m).unwrap();
        assert_eq!(&store.durable_contents(path).unwrap()[..4], b"anew");
        c.unmap(0, m).unwrap();
    }
    assert_eq!(&store.durable_contents("synced").unwrap()[..4], b"kept");
}

/// Pages handed to the server but not synced when it crashed are named, in
/// the event and in the report to the mapping, beside those never handed
/// back; pages a sync covered are not.
#[test]
fn a_crash_names_the_pages_written_since_the_last_sync() {
    let store = MemStore::new();
    store.insert("f", vec![0u8; (4 * PAGE) as usize]);
    let mut c = Cluster::new(config(2000), store.clone(), 2, 5);
    c.settle();
    let m = c
        .map(0, "f", 0, 4 * PAGE, MapOptions::read_write())
        .unwrap();
    let r = c.map(1, "f", 0, 4 * PAGE, MapOptions::read_only()).unwrap();
    c.write(0, m, 0, b"kept").unwrap();
    c.sync(0, m).unwrap();
    c.write(0, m, PAGE, b"one").unwrap();
    c.write(0, m, 3 * PAGE, b"three").unwrap();
    // The reader's fetches recall pages 1 and 3: they reach the server (not
    // its disk) and client 0 holds no dirty data any more.
    assert_eq!(&c.read(1, r, PAGE, 3).unwrap()[..], b"one");
    assert_eq!(&c.read(1, r, 3 * PAGE, 5).unwrap()[..], b"three");
    // A ping's answer confirms the recall answers arrived.
    c.run_for(Duration::from_secs(2));
    c.write(0, m, 2 * PAGE, b"dirty").unwrap();
    c.restart_server(true);
    c.run_until(Duration::from_secs(30), |c| {
        c.nodes[0].client.is_connected()
    });
    let lost = c.nodes[0]
        .events
        .iter()
        .find_map(|e| match e {
            Event::Connection(ClientEvent::SessionLost { lost, .. }) => Some(lost.clone()),
            _ => None,
        })
        .expect("the restart is reported");
    assert_eq!(lost.len(), 1, "{lost:?}");
    let l = &lost[0].1;
    assert_eq!((l.dirty_pages, &l.pages[..]), (1, &[2][..]), "{l:?}");
    assert!(l.unsynced_writes);
    assert_eq!(&l.unsynced_pages[..], &[1, 2, 3], "{l:?}");
    let text = l.to_string();
    assert!(text.contains("may be lost (file page(s) 1,2,3)"), "{text}");
    match c.read(0, m, 0, 4) {
        Err(OpError::SessionLost(once)) => assert_eq!(&once, l),
        other => panic!("expected the loss, once, got {other:?}"),
    }
    assert_eq!(&c.read(0, m, 0, 4).unwrap()[..], b"kept");
}

/// One client configured with `cfg`, settled, with file `f` of `pages`
/// pages mapped read-only.
fn one_client_mapping(cfg: ClientConfig, pages: u64) -> (Cluster, MappingId) {
    let store = MemStore::new();
    store.insert("f", vec![0u8; (pages * PAGE) as usize]);
    let mut c = Cluster::with_clients(config(1000), store, vec![cfg], 5);
    c.settle();
    let m = c
        .map(0, "f", 0, pages * PAGE, MapOptions::read_only())
        .unwrap();
    (c, m)
}

#[test]
fn operations_fail_with_disconnected_when_the_server_stays_away() {
    let cfg = ClientConfig {
        give_up_after: Some(Duration::from_secs(3)),
        ..ClientConfig::default()
    };
    let (mut c, m) = one_client_mapping(cfg, 1);
    c.nodes[0].unreachable = true;
    c.cut(0);
    let now = c.now;
    let op = c.nodes[0].client.read(now, m, 0, 4).unwrap();
    let r = c
        .wait(0, op, Duration::from_secs(10))
        .expect("the read gives up");
    assert!(matches!(r, Err(OpError::Disconnected(_))), "{r:?}");
    // New operations fail at once while the client stays disconnected...
    let op = c.nodes[0].client.read(c.now, m, 0, 4).unwrap();
    let r = c
        .wait(0, op, Duration::from_millis(1))
        .expect("fails at once");
    assert!(matches!(r, Err(OpError::Disconnected(_))), "{r:?}");
    // ...and work again once the server is back.
    c.nodes[0].unreachable = false;
    assert!(c.run_until(Duration::from_secs(30), |c| {
        c.nodes[0].client.is_connected()
    }));
    let op = c.nodes[0].client.read(c.now, m, 0, 4).unwrap();
    let r = c
        .wait(0, op, Duration::from_secs(30))
        .expect("the read completes");
    assert_eq!(
        r.unwrap(),
        rmmap_core::client::Completion::Read(Bytes::from_static(&[0; 4]))
    );
}

/// A cluster member's client (`member_patience`) gives up on a member that
/// stays away after the patience, for its cluster client to ask the
/// others, while the application's bound (`give_up_after`) is longer.
#[test]
fn a_member_clients_operations_give_up_after_the_member_patience() {
    let cfg = ClientConfig {
        give_up_after: Some(Duration::from_secs(30)),
        member_patience: Some(Duration::from_secs(1)),
        ..ClientConfig::default()
    };
    let (mut c, m) = one_client_mapping(cfg, 1);
    c.nodes[0].unreachable = true;
    c.cut(0);
    let started = c.now;
    let op = c.nodes[0].client.read(started, m, 0, 4).unwrap();
    let r = c
        .wait(0, op, Duration::from_secs(5))
        .expect("the read gives up within the patience, not the 30 s bound");
    match r {
        Err(OpError::Disconnected(waited)) => {
            assert!(waited < Duration::from_secs(3), "{waited:?}")
        }
        other => panic!("expected disconnected, got {other:?}"),
    }
}

/// A cluster member's client whose member says goodbye (it left the
/// cluster, its files handed over) fails what waits for it at once, for
/// its cluster client to find the new owners, instead of waiting out the
/// member patience.
#[test]
fn a_member_clients_operations_give_up_at_once_when_the_member_says_goodbye() {
    let cfg = ClientConfig {
        give_up_after: Some(Duration::from_secs(30)),
        member_patience: Some(Duration::from_secs(10)),
        ..ClientConfig::default()
    };
    let (mut c, m) = one_client_mapping(cfg, 4);
    // The read's fetch waits in the link; the member shuts down.
    c.hold(0, Direction::ToServer, true);
    let op = c.nodes[0].client.read(c.now, m, 3 * PAGE, 4).unwrap();
    c.server.begin_shutdown(c.now);
    c.flush();
    let r = c
        .wait(0, op, Duration::from_secs(2))
        .expect("the read gives up on the goodbye, not after the 10 s patience");
    assert!(matches!(r, Err(OpError::Disconnected(_))), "{r:?}");
}
