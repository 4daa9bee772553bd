//! A server as a cluster member (docs/CLUSTER.md, issue 17), against the
//! in-memory coordinator: it serves only its shards and answers `moved` for
//! the others, hands shards over without losing a byte, and when it is cut
//! off from the coordinator stops serving (and tells the writers what they
//! lost) before another member can own its shards.

use std::time::Duration;

use rmmap_core::client::{MapOptions, OpError};
use rmmap_core::cluster::{ClusterConfig, OwnershipBug, ShardId, desired_owner, shard_of};
use rmmap_core::harness::Cluster;
use rmmap_core::protocol::ErrorCode;
use rmmap_core::server::ServerConfig;
use rmmap_core::store::MemStore;

const PAGE: u64 = 512;
const SHARDS: u32 = 8;
const B_ADDR: &str = "10.0.0.2:7878";

fn member(id: &str, addr: &str) -> ClusterConfig {
    ClusterConfig {
        shards: SHARDS,
        lease_ttl: Duration::from_secs(3),
        safety_margin: Duration::from_millis(500),
        client_lease: Duration::from_secs(2),
        ..ClusterConfig::new(id, addr)
    }
}

fn config() -> ServerConfig {
    ServerConfig {
        page_size: PAGE as u32,
        max_frame: 1 << 20,
        lease: Duration::from_secs(2),
        cluster: Some(member("a", "10.0.0.1:7878")),
        ..ServerConfig::default()
    }
}

/// A file name whose shard member `owner` should own among `members`.
fn file_of(owner: &str, members: &[&str]) -> String {
    (0..1000)
        .map(|i| format!("f{i}"))
        .find(|p| desired_owner(members.iter().copied(), shard_of(p, SHARDS)) == Some(owner))
        .expect("some file lands on every member")
}

/// Member "a" (the server) alone, every shard its own, and two clients.
fn alone(store: &MemStore) -> Cluster {
    let mut c = Cluster::new(config(), store.clone(), 2, 7);
    let owned = c.run_until(Duration::from_secs(30), |c| {
        c.server.held_shards().len() == SHARDS as usize
    });
    assert!(owned, "member a took {:?}", c.server.held_shards());
    c.settle();
    c
}

fn rw_create() -> MapOptions {
    MapOptions {
        create: true,
        ..MapOptions::read_write()
    }
}

fn moved_to(r: Result<impl std::fmt::Debug, OpError>) -> String {
    match r {
        Err(OpError::Server {
            code: ErrorCode::Moved,
            message,
        }) => message,
        other => panic!("expected moved, got {other:?}"),
    }
}

#[test]
fn a_member_serves_its_shards_and_sends_the_others_on() {
    let store = MemStore::new();
    let mut c = alone(&store);
    c.add_member(member("b", B_ADDR));
    let settled = c.run_until(Duration::from_secs(30), |c| {
        let held = c.server.held_shards();
        let theirs = (0..SHARDS)
            .filter(|s| desired_owner(["a", "b"], ShardId(*s)) == Some("b"))
            .count();
        held.len() == SHARDS as usize - theirs
    });
    assert!(settled, "a still holds {:?}", c.server.held_shards());
    let mine = file_of("a", &["a", "b"]);
    let theirs = file_of("b", &["a", "b"]);

    let m = c.map(0, &mine, 0, PAGE, rw_create()).unwrap();
    c.write(0, m, 0, b"mine").unwrap();
    c.sync(0, m).unwrap();
    assert_eq!(&store.durable_contents(&mine).unwrap()[..4], b"mine");

    let r = c.map(1, &theirs, 0, PAGE, rw_create());
    assert_eq!(moved_to(r), B_ADDR);
    assert!(
        store.contents(&theirs).is_none(),
        "nothing was created here"
    );
}

#[test]
fn a_planned_move_recalls_syncs_and_loses_nothing() {
    let store = MemStore::new();
    let mut c = alone(&store);
    // A file that will move to b once b joins, written and not synced.
    let moving = file_of("b", &["a", "b"]);
    let m = c.map(0, &moving, 0, PAGE, rw_create()).unwrap();
    c.write(0, m, 0, b"unsynced but safe").unwrap();
    let r = c.map(1, &moving, 0, PAGE, MapOptions::read_only()).unwrap();
    assert_eq!(&c.read(1, r, 0, 4).unwrap()[..], b"unsy");

    c.add_member(member("b", B_ADDR));
    let shard = shard_of(&moving, SHARDS);
    let moved = c.run_until(Duration::from_secs(30), |c| {
        !c.server.held_shards().iter().any(|(s, _)| *s == shard)
    });
    assert!(moved, "the shard was not handed over");
    // The drain recalled the dirty page and synced it before the release.
    assert_eq!(
        &store.durable_contents(&moving).unwrap()[..17],
        b"unsynced but safe"
    );
    // Both clients' copies were revoked: reading goes to b now. Nobody is
    // told of a loss, because nothing was lost.
    assert_eq!(moved_to(c.read(0, m, 0, 4)), B_ADDR);
    assert_eq!(moved_to(c.read(1, r, 0, 4)), B_ADDR);
    assert_eq!(c.server.session_count(), 2, "no session ended");
}

#[test]
fn a_member_cut_off_from_the_coordinator_stops_before_its_lease_ends() {
    cut_off(None);
}

/// The test above catches a member that keeps serving after its lease is
/// lost: the member still holds its shards when another member takes them.
#[test]
#[should_panic(expected = "a kept its shards")]
fn mutation_a_member_serving_after_its_lease_is_caught() {
    cut_off(Some(OwnershipBug::ServeAfterLeaseLoss));
}

fn cut_off(bug: Option<OwnershipBug>) {
    let store = MemStore::new();
    let mut c = alone(&store);
    if let Some(bug) = bug {
        c.server.inject_ownership_bug(bug);
    }
    let f = file_of("a", &["a"]);
    let m = c.map(0, &f, 0, PAGE, rw_create()).unwrap();
    c.write(0, m, 0, b"synced").unwrap();
    c.sync(0, m).unwrap();
    c.write(0, m, 0, b"SYNCED").unwrap();
    let r = c.map(1, &f, 0, PAGE, MapOptions::read_only()).unwrap();
    // The reader's fetch recalls the page: the write is at the member now,
    // acknowledged and not synced.
    assert_eq!(&c.read(1, r, 0, 6).unwrap()[..], b"SYNCED");

    let lease = c
        .coordination
        .as_ref()
        .unwrap()
        .mem
        .range("/rmmap/members/a")
        .1
        .first()
        .and_then(|kv| kv.lease)
        .expect("a is registered under a lease");
    let expiry = |c: &Cluster| {
        c.coordination
            .as_ref()
            .unwrap()
            .mem
            .lease_expiry(lease)
            .expect("the lease is alive")
    };
    c.cut_coordinator(true);
    let ends = expiry(&c);
    let stopped = c.run_until(Duration::from_secs(10), |c| {
        c.server.held_shards().is_empty()
    });
    assert!(stopped, "a kept its shards");
    assert!(
        c.now < ends,
        "a stopped at {:?}, not before its lease ended at {ends:?}",
        c.now
    );
    // Both sessions ended. A client may serve its cache until its lease
    // runs out (which is why a new owner waits a lease before it grants
    // writes); then the writer is told its unsynced write was lost, and
    // the reader's copy is no longer trusted.
    assert_eq!(c.server.session_count(), 0);
    c.run_for(Duration::from_secs(2));
    // The member dropped that write with the shard, so the writer resumes
    // as after a crash and names the page (without the fix it was told
    // nothing: its own cache held nothing dirty).
    let w = c.read(0, m, 0, 6);
    match &w {
        Err(OpError::SessionLost(l)) => assert!(
            l.unsynced_writes && l.unsynced_pages.contains(&0),
            "the writer was told too little: {l:?}"
        ),
        other => panic!("the writer was not told: {other:?}"),
    }
    // What was synced stays durable.
    c.run_for(Duration::from_secs(1));
    assert_eq!(&store.durable_contents(&f).unwrap()[..6], b"synced");
    let rr = c.read(1, r, 0, 6);
    assert!(
        rr.is_err(),
        "the reader read from a member that lost the shard: {rr:?}"
    );

    // Back in touch, a takes its shards again (with the grace) and serves.
    c.cut_coordinator(false);
    let back = c.run_until(Duration::from_secs(30), |c| {
        c.server.held_shards().len() == SHARDS as usize
    });
    assert!(back, "a did not come back");
    let again = c.map(1, &f, 0, PAGE, MapOptions::read_only()).unwrap();
    // It serves what the shared storage holds (the dropped write had been
    // handed to the store before the loss; the writer was told it may be
    // lost, as after a crash).
    let disk = store.contents(&f).unwrap();
    assert_eq!(c.read(1, again, 0, 6).unwrap(), disk[..6]);
}

/// A mapping leaving its member (`Client::hand_over`, CLUSTER.md section
/// 6): after a `moved` it reports only what is still dirty here; after the
/// member was lost, also the pages written since their last sync; either
/// way once, and nothing of it is written back to the old member later.
#[test]
fn a_mapping_handed_over_says_once_what_it_lost_and_leaves_nothing_behind() {
    use rmmap_core::client::{LossCause, SessionLossReason};
    let store = MemStore::new();
    let mut c = alone(&store);
    let f = file_of("a", &["a"]);
    let m = c.map(0, &f, 0, 4 * PAGE, rw_create()).unwrap();
    c.write(0, m, 0, b"synced").unwrap();
    c.sync(0, m).unwrap();
    // Page 1 written back (a reader recalled it) and not synced; page 2
    // written and still dirty in the client's cache.
    c.write(0, m, PAGE, b"written back").unwrap();
    let r = c.map(1, &f, PAGE, PAGE, MapOptions::read_only()).unwrap();
    assert_eq!(&c.read(1, r, 0, 12).unwrap()[..], b"written back");
    c.write(0, m, 2 * PAGE, b"dirty here").unwrap();
    // The reader's recall was answered with page 1, and the member has not
    // confirmed the answer yet: a handover does not name it (a drain waits
    // for every answer), a loss would (it may not have arrived).
    assert!(c.nodes[0].client.has_unconfirmed_recall_answers());

    // Handed over cleanly (moved): only the dirty page is named.
    let now = c.now;
    let lost = c.nodes[0].client.hand_over(now, m, false).unwrap();
    let lost = lost.expect("the dirty page is lost");
    assert_eq!(lost.pages, vec![2], "{lost}");
    assert_eq!(lost.dirty_pages, 1);
    assert!(
        !lost.unsynced_writes,
        "a handover loses no synced data: {lost}"
    );
    // Told once.
    let again = c.nodes[0].client.hand_over(now, m, false).unwrap();
    assert_eq!(again, None, "reported twice");
    // Nothing of it reaches the member: not by write-back, not by the
    // unmap's sync.
    let _ = c.unmap(0, m);
    c.run_for(Duration::from_secs(2));
    let on_disk = store.contents(&f).unwrap();
    assert_eq!(
        &on_disk[2 * PAGE as usize..2 * PAGE as usize + 10],
        &[0; 10]
    );

    // The member lost: the pages written since their last sync are named
    // as well.
    let m = c.map(0, &f, 0, 4 * PAGE, rw_create()).unwrap();
    c.write(0, m, 3 * PAGE, b"unsynced").unwrap();
    let r3 = c
        .map(1, &f, 3 * PAGE, PAGE, MapOptions::read_only())
        .unwrap();
    assert_eq!(&c.read(1, r3, 0, 8).unwrap()[..], b"unsynced");
    c.run_for(Duration::from_millis(500));
    let now = c.now;
    let lost = c.nodes[0].client.hand_over(now, m, true).unwrap().unwrap();
    assert_eq!(
        lost.cause,
        LossCause::Session(SessionLossReason::MemberLost),
        "{lost}"
    );
    assert!(lost.unsynced_writes, "{lost}");
    assert_eq!(&*lost.unsynced_pages, &[3], "{lost}");
    assert!(lost.pages.is_empty(), "written back: {lost}");
}
