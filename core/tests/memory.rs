//! Memory mappings driven through a fake `MemoryBacking` that behaves like
//! userfaultfd memory: loads and stores go straight to "memory" when the
//! page is present (and writable, for stores), and fault otherwise.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmmap_core::client::{Completion, MapOptions, MappingId, MemoryBacking, OpError};
use rmmap_core::harness::{Cluster, Direction};
use rmmap_core::protocol::AtomicOp;
use rmmap_core::server::ServerConfig;
use rmmap_core::store::MemStore;

const PAGE: usize = 512;

#[derive(Default)]
struct Mem {
    pages: Vec<Option<(Vec<u8>, bool)>>,
    failed: Option<String>,
    zaps: usize,
}

#[derive(Clone, Default)]
struct FakeMemory(Arc<Mutex<Mem>>);

impl FakeMemory {
    fn new(pages: usize) -> Self {
        let m = FakeMemory::default();
        m.0.lock().unwrap().pages = vec![None; pages];
        m
    }
}

impl MemoryBacking for FakeMemory {
    fn install(&mut self, index: u64, data: &[u8], writable: bool) {
        self.0.lock().unwrap().pages[index as usize] = Some((data.to_vec(), writable));
    }
    fn protect(&mut self, index: u64) {
        if let Some(p) = &mut self.0.lock().unwrap().pages[index as usize] {
            p.1 = false;
        }
    }
    fn unprotect(&mut self, index: u64) {
        if let Some(p) = &mut self.0.lock().unwrap().pages[index as usize] {
            p.1 = true;
        }
    }
    fn zap(&mut self, index: u64) {
        let mut g = self.0.lock().unwrap();
        g.pages[index as usize] = None;
        g.zaps += 1;
    }
    fn read(&mut self, index: u64, out: &mut [u8]) {
        let g = self.0.lock().unwrap();
        out.copy_from_slice(
            &g.pages[index as usize]
                .as_ref()
                .expect("read of a present page")
                .0,
        );
    }
    fn fail(&mut self, error: &OpError) {
        self.0.lock().unwrap().failed = Some(error.to_string());
    }
}

/// A load of one byte: faults until the page is present.
fn load(
    c: &mut Cluster,
    i: usize,
    m: MappingId,
    mem: &FakeMemory,
    at: usize,
) -> Result<u8, OpError> {
    loop {
        if let Some((d, _)) = &mem.0.lock().unwrap().pages[at / PAGE] {
            return Ok(d[at % PAGE]);
        }
        let op = c.nodes[i]
            .client
            .memory_fault(c.now, m, (at / PAGE) as u64, false)?;
        match c
            .wait(i, op, Duration::from_secs(60))
            .expect("fault resolves")
        {
            Ok(Completion::FaultResolved) => {}
            other => return other.map(|_| 0),
        }
    }
}

/// A store of one byte: faults until the page is present and writable.
fn store(
    c: &mut Cluster,
    i: usize,
    m: MappingId,
    mem: &FakeMemory,
    at: usize,
    v: u8,
) -> Result<(), OpError> {
    loop {
        if let Some((d, true)) = &mut mem.0.lock().unwrap().pages[at / PAGE] {
            d[at % PAGE] = v;
            return Ok(());
        }
        let op = c.nodes[i]
            .client
            .memory_fault(c.now, m, (at / PAGE) as u64, true)?;
        match c
            .wait(i, op, Duration::from_secs(60))
            .expect("fault resolves")
        {
            Ok(Completion::FaultResolved) => {}
            other => return other.map(|_| ()),
        }
    }
}

/// Client `i` maps the 4 pages of "f" into a fake memory, read-write.
fn map_all(c: &mut Cluster, i: usize) -> (MappingId, FakeMemory) {
    let mem = FakeMemory::new(4);
    let now = c.now;
    let op = c.nodes[i]
        .client
        .map_memory(
            now,
            "f",
            0..4 * PAGE as u64,
            MapOptions::read_write(),
            Box::new(mem.clone()),
        )
        .unwrap();
    let Some(Ok(Completion::Mapped { mapping, .. })) = c.wait(i, op, Duration::from_secs(5)) else {
        panic!("memory map failed")
    };
    (mapping, mem)
}

fn setup(lease_ms: u64) -> (Cluster, MemStore, [(MappingId, FakeMemory); 2]) {
    let store = MemStore::new();
    store.insert("f", vec![0u8; 4 * PAGE]);
    let config = ServerConfig {
        page_size: PAGE as u32,
        max_frame: 1 << 20,
        lease: Duration::from_millis(lease_ms),
        ..ServerConfig::default()
    };
    let mut c = Cluster::new(config, store.clone(), 2, 9);
    c.settle();
    let maps: Vec<(MappingId, FakeMemory)> = (0..2).map(|i| map_all(&mut c, i)).collect();
    let maps: [(MappingId, FakeMemory); 2] = maps.try_into().unwrap_or_else(|_| unreachable!());
    (c, store, maps)
}

#[test]
fn stores_through_memory_are_seen_by_loads_on_another_client() {
    let (mut c, _, [(a, ma), (b, mb)]) = setup(2000);
    for round in 0..50u8 {
        let at = (round as usize * 37) % (4 * PAGE);
        store(&mut c, 0, a, &ma, at, round + 1).unwrap();
        assert_eq!(
            load(&mut c, 1, b, &mb, at).unwrap(),
            round + 1,
            "round {round}"
        );
        store(
            &mut c,
            1,
            b,
            &mb,
            at + 1 - (at + 1) / (4 * PAGE),
            round + 100,
        )
        .unwrap();
        assert_eq!(
            load(&mut c, 0, a, &ma, at + 1 - (at + 1) / (4 * PAGE)).unwrap(),
            round + 100
        );
    }
    assert!(
        ma.0.lock().unwrap().zaps > 0,
        "pages left memory when revoked"
    );
}

#[test]
fn sync_writes_what_memory_holds() {
    let (mut c, store_, [(a, ma), _]) = setup(2000);
    store(&mut c, 0, a, &ma, 5, 42).unwrap();
    store(&mut c, 0, a, &ma, PAGE + 7, 43).unwrap();
    let now = c.now;
    let op = c.nodes[0].client.sync(now, a).unwrap();
    assert!(c.wait(0, op, Duration::from_secs(5)).unwrap().is_ok());
    let d = store_.durable_contents("f").unwrap();
    assert_eq!((d[5], d[PAGE + 7]), (42, 43));
    // After the write-back the page is write-protected: the next store faults
    // (locally: no round trip) and is written back by the next sync.
    assert_eq!(
        ma.0.lock().unwrap().pages[0].as_ref().map(|p| p.1),
        Some(false)
    );
    store(&mut c, 0, a, &ma, 6, 44).unwrap();
    let op = c.nodes[0].client.sync(c.now, a).unwrap();
    assert!(c.wait(0, op, Duration::from_secs(5)).unwrap().is_ok());
    assert_eq!(store_.durable_contents("f").unwrap()[6], 44);
}

#[test]
fn atomics_on_a_memory_mapping_are_seen_in_memory() {
    let (mut c, _, [(a, ma), (b, mb)]) = setup(2000);
    assert_eq!(load(&mut c, 1, b, &mb, 8).unwrap(), 0);
    store(&mut c, 0, a, &ma, 8, 5).unwrap();
    let now = c.now;
    let op = c.nodes[1]
        .client
        .atomic(now, b, 8, AtomicOp::FetchAdd(10))
        .unwrap();
    match c.wait(1, op, Duration::from_secs(5)).unwrap() {
        Ok(Completion::Atomic { previous, .. }) => {
            assert_eq!(previous, 5, "the store in memory was recalled first")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(load(&mut c, 0, a, &ma, 8).unwrap(), 15);
    assert_eq!(load(&mut c, 1, b, &mb, 8).unwrap(), 15);
}

#[test]
fn pages_leave_memory_when_the_lease_view_ends() {
    let (mut c, _, [(a, ma), _]) = setup(1000);
    assert_eq!(load(&mut c, 0, a, &ma, 0).unwrap(), 0);
    store(&mut c, 0, a, &ma, PAGE, 9).unwrap();
    // Partitioned: no renewals. Within one lease every page is out of memory,
    // the store's change kept in the cache.
    c.hold(0, Direction::ToServer, true);
    c.hold(0, Direction::ToClient, true);
    c.nodes[0].unreachable = true;
    assert!(c.run_until(Duration::from_secs(2), |c| {
        !c.nodes[0].client.lease_valid_at(c.now)
    }));
    c.run_for(Duration::from_millis(1));
    assert!(
        ma.0.lock().unwrap().pages.iter().all(|p| p.is_none()),
        "memory still serves after the lease view ended"
    );
    // The store's change was taken into the cache: back in touch, either the
    // session lived on and the change is there, or the session was lost and
    // the mapping says it lost one dirty page. Never silently gone.
    c.hold(0, Direction::ToServer, false);
    c.hold(0, Direction::ToClient, false);
    c.nodes[0].unreachable = false;
    match load(&mut c, 0, a, &ma, PAGE) {
        Ok(v) => assert_eq!(v, 9),
        Err(OpError::SessionLost(l)) => assert_eq!(l.dirty_pages, 1),
        Err(e) => panic!("{e}"),
    }
}

/// Issue 19: a memory mapping that lost writes with its session reports it
/// to one fault, naming the page, and is not failed: the next fault fetches
/// the server's bytes and the thread goes on.
#[test]
fn a_lost_session_is_reported_to_one_fault_then_the_memory_mapping_goes_on() {
    let (mut c, _, [(a, ma), (b, mb)]) = setup(1000);
    store(&mut c, 0, a, &ma, 3, 7).unwrap();
    c.nodes[0].unreachable = true;
    c.cut(0);
    // Another client takes the page after client 0's lease ran out.
    store(&mut c, 1, b, &mb, 3, 8).unwrap();
    c.nodes[0].unreachable = false;
    assert!(c.run_until(Duration::from_secs(30), |c| {
        c.nodes[0].client.is_connected()
    }));
    let failed = ma.0.lock().unwrap().failed.clone();
    assert!(failed.is_none(), "the memory failed for good: {failed:?}");
    match load(&mut c, 0, a, &ma, 3) {
        Err(OpError::SessionLost(l)) => assert_eq!(l.pages, vec![0]),
        other => panic!("expected session_lost, got {other:?}"),
    }
    // Reported: the lost page is fetched again, with the server's byte.
    assert_eq!(load(&mut c, 0, a, &ma, 3).unwrap(), 8);
    store(&mut c, 0, a, &ma, 3, 9).unwrap();
    assert_eq!(load(&mut c, 1, b, &mb, 3).unwrap(), 9);
}

/// A memory mapping that leaves its member (a cluster move) names the
/// pages stored into and not written back, takes every page out of the
/// memory and lets go of it: nothing of it is written back to this member
/// afterwards, and nothing this member does reaches the memory again.
#[test]
fn a_memory_mapping_handed_over_names_its_stores_and_leaves_its_memory() {
    let (mut c, store_, [(a, ma), (b, mb)]) = setup(2000);
    store(&mut c, 0, a, &ma, 3, 1).unwrap();
    let op = c.nodes[0].client.sync(c.now, a).unwrap();
    c.wait(0, op, Duration::from_secs(5)).unwrap().unwrap();
    // Stored into since the sync: page 0 again, and page 2.
    store(&mut c, 0, a, &ma, 4, 2).unwrap();
    store(&mut c, 0, a, &ma, 2 * PAGE, 3).unwrap();
    let now = c.now;
    let lost = c.nodes[0].client.hand_over(now, a, true).unwrap();
    let lost = lost.expect("the stores since the sync are lost");
    assert_eq!(lost.pages, vec![0, 2], "{lost}");
    assert!(lost.unsynced_writes, "{lost}");
    assert_eq!(&*lost.unsynced_pages, &[0, 2], "{lost}");
    {
        let m = ma.0.lock().unwrap();
        assert!(m.pages.iter().all(Option::is_none), "pages left in memory");
        assert!(m.failed.is_none(), "{:?}", m.failed);
    }
    // Told once.
    assert_eq!(c.nodes[0].client.hand_over(now, a, true).unwrap(), None);
    // The other client writes page 0: client 0's member does not reach
    // the memory it let go of (a page installed there now would be a copy
    // no protocol keeps coherent).
    store(&mut c, 1, b, &mb, 5, 9).unwrap();
    c.run_for(Duration::from_millis(500));
    let zaps = ma.0.lock().unwrap().zaps;
    let _ = c.unmap(0, a);
    c.run_for(Duration::from_secs(2));
    let m = ma.0.lock().unwrap();
    assert!(m.pages.iter().all(Option::is_none));
    assert_eq!(m.zaps, zaps, "the unmap touched the memory");
    drop(m);
    // Nothing stored after the sync reached the file.
    let on_disk = store_.contents("f").unwrap();
    assert_eq!((on_disk[3], on_disk[4], on_disk[2 * PAGE]), (1, 0, 0));
}

/// A memory mapping that follows its file (a cluster client's) gives up a
/// fault on an unreachable member after the member patience, for its
/// cluster client to move it; one that stays waits the longer bound.
#[test]
fn a_memory_mapping_that_follows_its_file_gives_up_faults_after_the_member_patience() {
    use rmmap_core::client::ClientConfig;
    for follows in [true, false] {
        let store = MemStore::new();
        store.insert("f", vec![0u8; 4 * PAGE]);
        let config = ServerConfig {
            page_size: PAGE as u32,
            max_frame: 1 << 20,
            lease: Duration::from_millis(1000),
            ..ServerConfig::default()
        };
        let cfg = ClientConfig {
            give_up_after: Some(Duration::from_secs(30)),
            member_patience: Some(Duration::from_secs(1)),
            ..ClientConfig::default()
        };
        let mut c = Cluster::with_clients(config, store, vec![cfg], 5);
        c.settle();
        let (mapping, _) = map_all(&mut c, 0);
        if follows {
            c.nodes[0].client.follow_file(mapping).unwrap();
        }
        c.nodes[0].unreachable = true;
        c.cut(0);
        let op = c.nodes[0]
            .client
            .memory_fault(c.now, mapping, 1, false)
            .unwrap();
        let r = c.wait(0, op, Duration::from_secs(5));
        match (follows, r) {
            (true, Some(Err(OpError::Disconnected(waited)))) => {
                assert!(waited < Duration::from_secs(3), "{waited:?}")
            }
            (false, None) => {}
            (_, other) => panic!("follows {follows}: {other:?}"),
        }
    }
}

/// A probe (a cluster client asking a member whether it serves a range)
/// is not refused by a memory mapping of the range, as a map is, and its
/// end leaves the memory mapping's pages where they are.
#[test]
fn a_probe_of_a_memory_mapped_range_is_answered_and_leaves_the_memory_alone() {
    let (mut c, _, [(a, ma), _]) = setup(2000);
    store(&mut c, 0, a, &ma, 3, 7).unwrap();
    let now = c.now;
    let refused = c.nodes[0]
        .client
        .map(now, "f", 0..PAGE as u64, MapOptions::read_only());
    assert!(
        matches!(refused, Err(OpError::Overlap { .. })),
        "{refused:?}"
    );
    let op = c.nodes[0]
        .client
        .probe_map(now, "f", 0..PAGE as u64)
        .unwrap();
    let Some(Ok(Completion::Mapped { mapping: probe, .. })) = c.wait(0, op, Duration::from_secs(5))
    else {
        panic!("the probe was not answered")
    };
    let zaps = ma.0.lock().unwrap().zaps;
    let op = c.nodes[0].client.unmap(c.now, probe).unwrap();
    c.wait(0, op, Duration::from_secs(5)).unwrap().unwrap();
    c.run_for(Duration::from_millis(500));
    let m = ma.0.lock().unwrap();
    assert_eq!(m.zaps, zaps, "the probe's end took pages out of memory");
    assert_eq!(m.pages[0].as_ref().map(|p| p.0[3]), Some(7));
}
