//! A server restart costs a client its session, not its cache: copies it
//! held are checked against the new run by their bytes (`Refresh`), and only
//! pages that changed travel again (issue 19; PROTOCOL.md section 6,
//! CONSISTENCY.md section 3.2).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use rmmap_core::client::{MapOptions, MappingId};
use rmmap_core::harness::{Cluster, Direction, Verdict};
use rmmap_core::protocol::Message;
use rmmap_core::server::{ServerBug, ServerConfig};
use rmmap_core::store::MemStore;

const PAGE: u64 = 512;
const PAGES: u64 = 8;

fn config() -> ServerConfig {
    ServerConfig {
        page_size: PAGE as u32,
        max_frame: 1 << 20,
        lease: Duration::from_secs(2),
        ..ServerConfig::default()
    }
}

/// What the server sent: pages with data, pages vouched for without data.
#[derive(Default, Debug)]
struct Sent {
    with_data: u64,
    without_data: u64,
    refreshes: u64,
}

/// Client 0 reads every page of "f" into its cache; every frame is counted
/// from then on.
fn cached_reader(seed: u64) -> (Cluster, MemStore, MappingId, Rc<RefCell<Sent>>) {
    let store = MemStore::new();
    let contents: Vec<u8> = (0..PAGES * PAGE).map(|i| (i % 251) as u8).collect();
    store.insert("f", contents.clone());
    let mut c = Cluster::new(config(), store.clone(), 2, seed);
    c.settle();
    let m = c
        .map(0, "f", 0, PAGES * PAGE, MapOptions::read_only())
        .unwrap();
    assert_eq!(c.read(0, m, 0, PAGES * PAGE).unwrap(), contents);
    let sent = Rc::new(RefCell::new(Sent::default()));
    let s = sent.clone();
    c.set_hook(Box::new(move |i, dir, msg| {
        let mut s = s.borrow_mut();
        match (i, dir, msg) {
            (0, Direction::ToClient, Message::Pages(p)) => {
                for g in &p.pages {
                    if g.data.is_some() {
                        s.with_data += 1;
                    } else {
                        s.without_data += 1;
                    }
                }
            }
            (0, Direction::ToServer, Message::Refresh(_)) => s.refreshes += 1,
            _ => {}
        }
        Verdict::Deliver
    }));
    (c, store, m, sent)
}

/// Changes page 3 of "f" on the disk between two server runs.
fn change_page_3(store: &MemStore) -> Vec<u8> {
    let mut now = store.durable_contents("f").unwrap();
    now[(3 * PAGE) as usize..(3 * PAGE + 5) as usize].copy_from_slice(b"newer");
    store.insert("f", now.clone());
    now
}

#[test]
fn a_graceful_restart_keeps_the_cache_and_resends_only_what_changed() {
    let (mut c, store, m, sent) = cached_reader(1);
    c.server.begin_shutdown(c.now);
    assert!(c.run_until(Duration::from_secs(2), |c| c.server.is_shut_down()));
    let now = change_page_3(&store);
    c.restart_server(false);
    c.settle();
    assert_eq!(c.read(0, m, 0, PAGES * PAGE).unwrap(), now);
    let s = sent.borrow();
    assert!(s.refreshes >= 1, "{s:?}");
    assert_eq!(s.with_data, 1, "only the changed page travels: {s:?}");
    assert_eq!(s.without_data, PAGES - 1, "{s:?}");
}

/// After a crash, the copies are checked the same way: a copy of bytes that
/// never reached the disk is replaced by what the disk has.
#[test]
fn after_a_crash_a_copy_of_lost_bytes_is_replaced_by_the_disk_s() {
    let (mut c, store, m, sent) = cached_reader(2);
    let w = c
        .map(1, "f", 0, PAGES * PAGE, MapOptions::read_write())
        .unwrap();
    let durable = store.durable_contents("f").unwrap();
    // Client 1 writes page 5 without syncing; client 0 reads it.
    c.write(1, w, 5 * PAGE + 7, b"unsynced").unwrap();
    assert_eq!(&c.read(0, m, 5 * PAGE + 7, 8).unwrap()[..], b"unsynced");
    let before = sent.borrow().with_data;
    c.restart_server(true);
    c.settle();
    assert_eq!(c.read(0, m, 0, PAGES * PAGE).unwrap(), durable);
    let s = sent.borrow();
    assert_eq!(s.with_data - before, 1, "only page 5 travels: {s:?}");
    assert_eq!(s.without_data, PAGES - 1, "{s:?}");
}

/// The check is what keeps a changed page out: a server that vouches for
/// every copy without comparing (the injected bug) leaves the old bytes in
/// the client's cache, and the same read as above sees them.
#[test]
fn a_server_that_trusts_every_copy_is_caught() {
    let (mut c, store, m, _sent) = cached_reader(3);
    c.server.begin_shutdown(c.now);
    assert!(c.run_until(Duration::from_secs(2), |c| c.server.is_shut_down()));
    let old = store.durable_contents("f").unwrap();
    let now = change_page_3(&store);
    c.restart_server(false);
    c.server.inject_bug(ServerBug::RefreshTrustsDigests);
    c.settle();
    let read = c.read(0, m, 0, PAGES * PAGE).unwrap();
    assert_eq!(read, old, "the bug keeps the stale page");
    assert_ne!(read, now);
}

/// A page another client wrote and synced: the reader's copy of the new
/// bytes is as current after a graceful restart as the untouched pages, and
/// nothing travels again.
#[test]
fn a_copy_of_synced_writes_is_current_after_a_graceful_restart() {
    let (mut c, store, m, sent) = cached_reader(4);
    let w = c
        .map(1, "f", 0, PAGES * PAGE, MapOptions::read_write())
        .unwrap();
    c.write(1, w, 2 * PAGE, b"synced").unwrap();
    c.sync(1, w).unwrap();
    // Client 0's copy of page 2 was invalidated by the write; it reads the
    // new bytes once, then the server restarts gracefully.
    assert_eq!(&c.read(0, m, 2 * PAGE, 6).unwrap()[..], b"synced");
    assert!(c.graceful_restart(Duration::from_secs(2)));
    c.settle();
    let before = sent.borrow().with_data;
    let want = store.durable_contents("f").unwrap();
    assert_eq!(c.read(0, m, 0, PAGES * PAGE).unwrap(), want);
    assert_eq!(sent.borrow().with_data, before, "every copy was current");
}
