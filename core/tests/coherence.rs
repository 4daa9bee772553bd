//! Coherence on the in-memory cluster: every read sees the latest completed
//! write, invalidations precede writes, recalls return dirty data first.

use std::time::Duration;

use rmmap_core::client::{ClientConfig, MapOptions};
use rmmap_core::harness::{Cluster, Direction, Verdict};
use rmmap_core::protocol::{Message, fetch_flags};
use rmmap_core::server::ServerConfig;
use rmmap_core::store::MemStore;

const PAGE: u64 = 4096;

fn cluster(clients: usize, pages: u64) -> (Cluster, MemStore) {
    let store = MemStore::new();
    store.insert("f", vec![0u8; (pages * PAGE) as usize]);
    let mut c = Cluster::new(ServerConfig::default(), store.clone(), clients, 7);
    c.settle();
    (c, store)
}

#[test]
fn two_clients_alternating_1000_times_always_read_the_latest_write() {
    let (mut c, _) = cluster(2, 1);
    let m = [
        c.map(0, "f", 0, PAGE, MapOptions::read_write()).unwrap(),
        c.map(1, "f", 0, PAGE, MapOptions::read_write()).unwrap(),
    ];
    for round in 0u64..1000 {
        let (w, r) = ((round % 2) as usize, ((round + 1) % 2) as usize);
        let value = (round + 1).to_le_bytes();
        let at = (round * 8) % (PAGE - 8);
        c.write(w, m[w], at, &value).unwrap();
        assert_eq!(
            &c.read(r, m[r], at, 8).unwrap()[..],
            &value,
            "round {round}"
        );
        assert_eq!(
            &c.read(w, m[w], at, 8).unwrap()[..],
            &value,
            "round {round} (own write)"
        );
    }
}

#[test]
fn a_readers_copy_is_invalidated_before_the_writers_write_completes() {
    let (mut c, _) = cluster(2, 1);
    let reader = c.map(0, "f", 0, PAGE, MapOptions::read_only()).unwrap();
    let writer = c.map(1, "f", 0, PAGE, MapOptions::read_write()).unwrap();
    assert_eq!(&c.read(0, reader, 0, 4).unwrap()[..], &[0; 4]);
    // Hold the reader's acknowledgements back: the write must not complete.
    c.set_hook(Box::new(|i, d, m| match (i, d, m) {
        (0, Direction::ToServer, Message::InvalidateAck(_)) => {
            Verdict::Delay(Duration::from_millis(200))
        }
        _ => Verdict::Deliver,
    }));
    let now = c.now;
    let op = c.nodes[1]
        .client
        .write(now, writer, 0, bytes::Bytes::from_static(b"new!"))
        .unwrap();
    c.flush();
    c.run_for(Duration::from_millis(100));
    assert!(
        !c.nodes[1].completions.contains_key(&op.id()),
        "the write completed while a shared copy was unanswered"
    );
    // The reader already dropped its copy: a read now must fetch and wait.
    let mut buf = [0u8; 4];
    let now = c.now;
    assert!(
        !c.nodes[0]
            .client
            .try_read(now, reader, 0, &mut buf)
            .unwrap(),
        "stale copy still served"
    );
    let done = c
        .wait(1, op, Duration::from_secs(5))
        .expect("write completes once acknowledged");
    assert!(done.is_ok());
    c.clear_hook();
    assert_eq!(&c.read(0, reader, 0, 4).unwrap()[..], b"new!");
}

#[test]
fn a_recall_returns_dirty_data_before_another_client_reads() {
    let (mut c, store) = cluster(2, 2);
    let a = c
        .map(0, "f", 0, 2 * PAGE, MapOptions::read_write())
        .unwrap();
    let b = c.map(1, "f", 0, 2 * PAGE, MapOptions::read_only()).unwrap();
    c.write(0, a, PAGE - 2, b"dirty").unwrap();
    // The server has not seen the data yet: it lives in client 0's cache.
    assert_eq!(
        &store.contents("f").unwrap()[(PAGE - 2) as usize..(PAGE + 3) as usize],
        &[0; 5]
    );
    let recalls = std::rc::Rc::new(std::cell::Cell::new(0));
    let seen = recalls.clone();
    c.set_hook(Box::new(move |_, d, m| {
        if let (Direction::ToServer, Message::RecallAck(r)) = (d, m) {
            seen.set(seen.get() + r.patches.len());
        }
        Verdict::Deliver
    }));
    assert_eq!(&c.read(1, b, PAGE - 2, 5).unwrap()[..], b"dirty");
    assert_eq!(
        recalls.get(),
        2,
        "both dirty pages came back from the owner with their data"
    );
    assert_eq!(
        &store.contents("f").unwrap()[(PAGE - 2) as usize..(PAGE + 3) as usize],
        b"dirty"
    );
}

#[test]
fn reading_far_more_than_the_cache_holds_keeps_client_and_server_bounded() {
    let pages = 16384u64;
    let store = MemStore::new();
    store.insert("big", vec![5u8; (pages * PAGE) as usize]);
    let cfg = rmmap_core::client::ClientConfig {
        max_cached_pages: 256,
        ..Default::default()
    };
    let mut c = Cluster::with_clients(ServerConfig::default(), store, vec![cfg], 3);
    c.settle();
    let m = c
        .map(0, "big", 0, pages * PAGE, MapOptions::read_only())
        .unwrap();
    let (mut peak, mut server_peak) = (0, 0);
    for chunk in 0..pages / 16 {
        let got = c.read(0, m, chunk * 16 * PAGE, 16 * PAGE).unwrap();
        assert!(got.iter().all(|b| *b == 5));
        peak = peak.max(c.nodes[0].client.cached_pages());
        server_peak = server_peak.max(c.server.directory_size().1);
    }
    // The cache trims itself back to its limit after every step; read-ahead
    // (1,024 pages by default) may be in flight on top.
    assert!(
        peak <= 256 + 1024 + 256,
        "client cache peaked at {peak} pages"
    );
    // Evicted pages are released: the server's directory follows the cache
    // (plus the read-ahead granted but still in flight), not the file.
    assert!(
        server_peak <= peak + 1024 + 256,
        "server directory peaked at {server_peak} entries"
    );
    assert!(c.server.check_invariants().is_ok());
}

#[test]
fn a_sequential_writer_is_written_behind_before_it_syncs() {
    // 4,096 pages written front to back in 16-page writes, with a cache
    // big enough to hold them all (nothing is evicted): write-behind must
    // still send them to the server while they are written.
    let pages = 4096u64;
    let store = MemStore::new();
    store.insert("big", vec![0u8; (pages * PAGE) as usize]);
    let mut c = Cluster::new(ServerConfig::default(), store.clone(), 1, 3);
    c.settle();
    let m = c
        .map(0, "big", 0, pages * PAGE, MapOptions::read_write())
        .unwrap();
    for chunk in 0..pages / 16 {
        let data = vec![(chunk % 251) as u8 + 1; (16 * PAGE) as usize];
        c.write(0, m, chunk * 16 * PAGE, &data).unwrap();
        c.settle();
    }
    assert_eq!(c.nodes[0].client.cached_pages(), pages as usize);
    // Before any sync, everything but the last batch is already at the
    // server (not yet durable: nobody asked for that).
    let written = store.contents("big").unwrap();
    let behind = (pages - 1024) * PAGE;
    for (i, b) in written[..behind as usize].iter().enumerate() {
        let chunk = i as u64 / (16 * PAGE);
        assert_eq!(*b, (chunk % 251) as u8 + 1, "byte {i} not written behind");
    }
    c.sync(0, m).unwrap();
    let durable = store.durable_contents("big").unwrap();
    for (i, b) in durable.iter().enumerate() {
        let chunk = i as u64 / (16 * PAGE);
        assert_eq!(*b, (chunk % 251) as u8 + 1, "byte {i} lost at sync");
    }
    assert!(c.server.check_invariants().is_ok());
}

#[test]
fn a_sequential_writer_takes_ownership_ahead_without_fetching_data() {
    // The file holds 5s; one client writes its first 2,000 pages front to
    // back in 16-page writes, then a second client reads all of it.
    let pages = 4096u64;
    let store = MemStore::new();
    store.insert("big", vec![5u8; (pages * PAGE) as usize]);
    let mut c = Cluster::new(ServerConfig::default(), store.clone(), 2, 5);
    c.settle();
    let w = c
        .map(0, "big", 0, pages * PAGE, MapOptions::read_write())
        .unwrap();
    let fetches = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = fetches.clone();
    c.set_hook(Box::new(move |i, d, m| {
        if let (0, Direction::ToServer, Message::Fetch(f)) = (i, d, m) {
            seen.borrow_mut().push((f.first_page, f.count, f.flags));
        }
        Verdict::Deliver
    }));
    let written = 2000u64;
    for chunk in 0..written / 16 {
        let data = vec![9u8; (16 * PAGE) as usize];
        c.write(0, w, chunk * 16 * PAGE, &data).unwrap();
    }
    c.settle();
    let fetches = fetches.borrow().clone();
    // Ownership came ahead of the writer, a fetch's worth at a time, and
    // without data: the writer overwrites every byte.
    let ahead = fetches.iter().filter(|f| f.0 >= 1024).count();
    assert!(ahead > 0, "no write-ahead: {fetches:?}");
    assert!(
        fetches.len() <= 2 * (written + 1024) as usize / 256 + 4,
        "{} fetches for {written} pages: not batched",
        fetches.len()
    );
    assert!(
        fetches.iter().all(|f| f.2 & fetch_flags::WANT_DATA == 0),
        "page data fetched for pages that are overwritten: {fetches:?}"
    );
    // Pages taken ahead but never written keep the file's bytes: a reader
    // recalls them (clean) and sees 5s; the written ones read 9s.
    let r = c
        .map(1, "big", 0, pages * PAGE, MapOptions::read_only())
        .unwrap();
    let all = c.read(1, r, 0, pages * PAGE).unwrap();
    let split = (written * PAGE) as usize;
    assert!(all[..split].iter().all(|b| *b == 9), "written pages");
    assert!(all[split..].iter().all(|b| *b == 5), "pages taken ahead");
    // A write into the middle of a page taken ahead fetches its data.
    c.write(0, w, (written + 100) * PAGE + 10, b"x").unwrap();
    let page = c.read(1, r, (written + 100) * PAGE, PAGE).unwrap();
    assert_eq!(page[10], b'x');
    assert!(page.iter().enumerate().all(|(i, b)| i == 10 || *b == 5));
    assert!(c.server.check_invariants().is_ok());
}

#[test]
fn read_pages_returns_the_same_bytes_as_read_without_copying_them() {
    let (mut c, _) = cluster(1, 4);
    let m = c
        .map(0, "f", 0, 4 * PAGE, MapOptions::read_write())
        .unwrap();
    let data: Vec<u8> = (0..3 * PAGE).map(|i| (i % 251) as u8).collect();
    c.write(0, m, 100, &data).unwrap();
    c.sync(0, m).unwrap();
    let now = c.now;
    let op = c.nodes[0].client.read_pages(now, m, 100, 3 * PAGE).unwrap();
    let Some(Ok(rmmap_core::client::Completion::ReadPages(parts))) =
        c.wait(0, op, std::time::Duration::from_secs(5))
    else {
        panic!("read_pages failed")
    };
    assert_eq!(parts.len(), 4, "one slice per page touched");
    let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    assert_eq!(joined, data);
    assert_eq!(&c.read(0, m, 100, 3 * PAGE).unwrap()[..], &data[..]);
}

/// A sequential reader or writer on a link with a long round trip: the
/// window of pages asked for ahead of it grows until the stream stops
/// waiting on pages still on their way (as TCP's window does), bounded by
/// half the cache, so the stream takes a few round trips more than its
/// bytes need, not one round trip per initial window.
#[test]
fn read_ahead_and_write_ahead_grow_with_the_round_trip_within_the_cache() {
    let pages = 2048u64;
    let store = MemStore::new();
    store.insert("big", vec![3u8; (pages * PAGE) as usize]);
    let cfg = ClientConfig {
        readahead_pages: 8,
        max_cached_pages: 1024,
        ..ClientConfig::default()
    };
    let mut c = Cluster::with_clients(ServerConfig::default(), store, vec![cfg], 7);
    c.nodes[0].latency = Duration::from_millis(10);
    c.settle();
    let m = c
        .map(0, "big", 0, pages * PAGE, MapOptions::read_write())
        .unwrap();
    // (pages in flight, their peak, fetches, pages fetched)
    let in_flight = std::rc::Rc::new(std::cell::RefCell::new((0u64, 0u64, 0u64, 0u64)));
    let seen = in_flight.clone();
    c.set_hook(Box::new(move |_, d, m| {
        let mut s = seen.borrow_mut();
        match (d, m) {
            (Direction::ToServer, Message::Fetch(f)) => {
                s.0 += u64::from(f.count);
                s.2 += 1;
                s.3 += u64::from(f.count);
            }
            (Direction::ToClient, Message::Pages(p)) => s.0 -= p.pages.len() as u64,
            _ => {}
        }
        s.1 = s.1.max(s.0);
        Verdict::Deliver
    }));
    // 20 ms round trips; 8 pages ahead would take 256 of them (5 s), and
    // the same for the writer (which then took 40 s: one round trip a page).
    let start = c.now;
    for q in 0..pages {
        let got = c.read(0, m, q * PAGE, PAGE).unwrap();
        assert!(got.iter().all(|b| *b == 3));
        assert!(c.nodes[0].client.cached_pages() <= 1024 + 64);
    }
    let read_in = c.now - start;
    let peak_read = in_flight.borrow().1;
    let (_, _, fetches, fetched) = *in_flight.borrow();
    assert_eq!(
        fetched, pages,
        "pages fetched twice: read-ahead evicted before use"
    );
    assert!(
        fetches < pages / 16,
        "{fetches} fetches: read-ahead asks in batches"
    );
    assert!(
        read_in < Duration::from_millis(800),
        "reading {pages} pages took {read_in:?} (peak {peak_read} pages in flight)"
    );
    assert!(
        peak_read > 64 && peak_read <= 512 + 64,
        "peak {peak_read} pages in flight: the window must grow, to half the cache at most"
    );
    // The same for a writer of whole pages (ownership ahead, no data).
    *in_flight.borrow_mut() = (0, 0, 0, 0);
    let start = c.now;
    for q in 0..pages {
        c.write(0, m, q * PAGE, &[4u8; PAGE as usize]).unwrap();
    }
    let written_in = c.now - start;
    let peak_write = in_flight.borrow().1;
    assert!(
        written_in < Duration::from_millis(2000),
        "writing {pages} pages took {written_in:?} (peak {peak_write} pages in flight)"
    );
    assert!(
        peak_write > 64,
        "peak {peak_write}: write-ahead did not grow"
    );
}
