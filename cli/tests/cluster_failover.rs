//! Failover of `rmmap serve --cluster` members against a real etcd
//! (docs/CLUSTER.md sections 3, 4, 7), with the timings of cluster_serve.rs:
//! a 2 s etcd lease (TTL), a 0.3 s margin, a 1 s client lease.
//!
//! - a mapping on a SIGKILLed owner goes on at the new owner: one operation
//!   reports the writes the owner had not synced, the file reads exactly as
//!   synced within two leases and the takeover grace, and the mapping writes
//!   again within one lease, the grace and a few seconds;
//! - a member cut off from etcd stops serving its files within its serving
//!   window, before any other member owns its shards, and owns shards again
//!   once it reaches etcd;
//! - a planned leave (SIGTERM) moves the leaving member's mappings to the
//!   next owner, which takes their writes without the grace; nothing written
//!   before it is lost, and no loss is reported;
//! - a memory mapping does the same at the same address: after SIGKILL one
//!   access reports the store the owner had not written back, the next
//!   read the new owner's bytes; after SIGTERM stores go on through the new
//!   owner with nothing reported.
//!
//! Each test prints its figures (`eprintln`, see `--nocapture`). The tests
//! run one at a time: three clusters at once on two cores would blur them.
//! Needs the `etcd` binary (Debian: `etcd-server`); skipped with a message
//! without it.
//! `cargo test -p rmmap-cli --features cluster --test cluster_failover`.

mod cluster_common;

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cluster_common::proxy::Proxy;
use cluster_common::{
    Etcd, Member, SHARDS, Scene, TTL, listed, map_at, owner_of, rmmap, serving_window, settled,
    status, takeover_grace,
};
use rmmap_core::cluster::{desired_owner, shard_of};
use rmmap_tokio::{
    Access, Client, ClientConfig, ClusterClient, ErrorCode, LossCause, MapOptions, MemoryMapping,
    OpError, SessionLossReason, memory_support,
};

/// One test at a time (see the module docs).
static SERIAL: Mutex<()> = Mutex::new(());

fn serially(test: impl Future<Output = ()>) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

/// Starts members `ids` once etcd answers, all reaching etcd directly
/// except those named in `via`, which reach it at the URL given there; waits
/// until every shard is owned as placed.
async fn cluster(
    etcd: &Etcd,
    scene: &Scene,
    ids: &[&'static str],
    via: &[(&str, &str)],
) -> Vec<Member> {
    let coordinator = etcd.coordinator().await;
    let members: Vec<Member> = ids
        .iter()
        .map(|&id| {
            let url = via
                .iter()
                .find(|(v, _)| *v == id)
                .map_or(etcd.url.as_str(), |(_, u)| u);
            Member::start(id, &scene.root, url, &scene.logs)
        })
        .collect();
    settled(&coordinator, ids, Duration::from_secs(15)).await;
    members
}

/// A file name that placement among `ids` gives to `owner`.
fn file_of(owner: &str, ids: &[&str], stem: &str) -> String {
    (0..)
        .map(|i| format!("{stem}-{i}.bin"))
        .find(|n| desired_owner(ids.iter().copied(), shard_of(n, SHARDS)) == Some(owner))
        .unwrap()
}

/// `rmmap put --offset OFFSET` of `data` through `addrs`: mapped
/// read-write, written and synced when it succeeds.
fn put_at(scene: &Scene, addrs: &str, path: &str, offset: u64, data: &[u8]) -> Result<(), String> {
    let local = scene.dir.path().join(format!("put-{offset}.bin"));
    std::fs::write(&local, data).unwrap();
    let out = rmmap(&[
        "put",
        local.to_str().unwrap(),
        addrs,
        path,
        "--offset",
        &offset.to_string(),
    ]);
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// `rmmap cat` of the whole file through `addrs`.
fn cat(addrs: &str, path: &str) -> Result<Vec<u8>, String> {
    let out = rmmap(&["cat", addrs, path]);
    match out.status.success() {
        true => Ok(out.stdout),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn a_sigkilled_owners_mappings_go_on_at_the_new_owner_within_the_bounds() {
    serially(async {
        let Some(etcd) = Etcd::start("failover after SIGKILL") else {
            return;
        };
        let scene = Scene::new();
        let ids = ["a", "b", "c"];
        let mut members = cluster(&etcd, &scene, &ids, &[]).await;
        let coordinator = etcd.coordinator().await;

        // Version 1, replaced in part by version 2 through a mapping: both
        // synced, so the file must read back as version 2, not a byte of
        // version 1 where version 2 wrote.
        let name = file_of("a", &ids, "killed");
        let shard = shard_of(&name, SHARDS);
        let all = listed(&[&members[0], &members[1], &members[2]]);
        let v1 = pattern(3 * 4096, 1);
        let put = put_at(&scene, &all, &name, 0, &v1);
        assert!(put.is_ok(), "put through {all}: {put:?}");
        // A client of the cluster, its mapping on the owner, a.
        let addrs: Vec<&str> = all.split(',').collect();
        let client = ClusterClient::connect(&addrs, ClientConfig::default())
            .await
            .unwrap();
        let m = client
            .map(&name, 0..v1.len() as u64, Access::ReadWrite)
            .await
            .unwrap();
        let on_a = client.connection(&members[0].addr).unwrap();
        assert!(m.client().same_connection(&on_a), "mapped on a");
        let v2 = pattern(6000, 2);
        m.write(3000, &v2).await.unwrap();
        m.sync().await.unwrap();
        let mut synced = v1.clone();
        synced[3000..9000].copy_from_slice(&v2);
        // Written and never synced, on file page 2 only: the page the
        // client must be told it may have lost.
        m.write(9500, b"never synced").await.unwrap();

        // Its owner, as etcd and `rmmap cluster status` record it.
        assert_eq!(owner_of(&coordinator, shard).await.as_deref(), Some("a"));
        let text = status(&etcd.url);
        let line = text.lines().find(|l| l.starts_with("member a ")).unwrap();
        assert!(line.contains(&format!(" {shard}@")), "{text}");

        let killed = Instant::now();
        members[0].kill();
        // The same mapping goes on. Reads may be served from its cache
        // while the client's lease lasts; a sync needs the member: its
        // connection to a is down for the member patience (1 s), the client
        // asks b and c, which send it back to a until a's lease runs out at
        // etcd (TTL after its last keep-alive), then the new owner maps the
        // range and one operation reports what a may have lost.
        // Asserted: the first sync answered within 2·TTL + grace (5.3 s).
        let read_bound = 2 * TTL + takeover_grace();
        let mut reports = Vec::new();
        let mut others = Vec::new();
        let answered_after = loop {
            match m.sync().await {
                Ok(()) => break killed.elapsed(),
                Err(OpError::SessionLost(l)) => reports.push(l),
                Err(e) => others.push(e.kind()),
            }
            assert!(
                killed.elapsed() < read_bound,
                "no sync {read_bound:?} after SIGKILL; {reports:?}, {others:?}"
            );
        };
        assert_eq!(reports.len(), 1, "told once: {reports:?}, {others:?}");
        let lost = &reports[0];
        assert_eq!(
            lost.cause,
            LossCause::Session(SessionLossReason::MemberLost),
            "{lost}"
        );
        assert!(lost.unsynced_writes, "{lost}");
        assert_eq!(&*lost.unsynced_pages, &[2], "{lost}");
        // Not yet written back, page 2 is named as lost outright.
        assert!(lost.pages.iter().all(|&q| q == 2), "{lost}");
        // Everything synced reads back, from the new owner; page 2 beyond
        // the synced bytes holds what a kept of the unsynced write, all or
        // nothing of it.
        let mut got = vec![0; v1.len()];
        m.read(0, &mut got).await.unwrap();
        let read_after = killed.elapsed();
        assert!(got[..9500] == synced[..9500], "synced bytes after SIGKILL");
        let kept = &got[9500..9512];
        assert!(
            kept == b"never synced" || kept == &synced[9500..9512],
            "the unsynced write torn: {kept:?}"
        );
        synced[9500..9512].copy_from_slice(kept);
        assert!(!m.client().same_connection(&on_a), "moved off a");
        // Writes wait the takeover grace, client_lease·(1 + ρ) + m, from
        // the acquire. Asserted: kill → first synced write through the same
        // mapping within TTL + grace + 3 s of slack (6.3 s).
        let write_bound = TTL + takeover_grace() + Duration::from_secs(3);
        let v3 = pattern(100, 3);
        m.write(8000, &v3).await.unwrap();
        m.sync().await.unwrap();
        let write_after = killed.elapsed();
        assert!(write_after < write_bound, "{write_after:?}");
        synced[8000..8100].copy_from_slice(&v3);
        let new_owner = owner_of(&coordinator, shard).await;
        assert_eq!(new_owner.as_deref(), desired_owner(["b", "c"], shard));
        // `all` lists the dead member first: the CLI gets past it.
        let got = cat(&all, &name).unwrap();
        assert!(got == synced, "cat after the write: not the synced bytes");
        drop((m, on_a, client));
        eprintln!(
            "FIGURES sigkill: kill -> the dead member's mapping answered at the new owner \
             {answered_after:?}, read {read_after:?} (bound {read_bound:?}), kill -> first synced write through it {write_after:?} \
             (bound {write_bound:?}); TTL {TTL:?}, grace {:?}; errors on the way: {others:?}",
            takeover_grace()
        );
    });
}

/// What a probe of a member for a file found.
#[derive(Debug, PartialEq)]
enum Probe {
    Served,
    Refused(ErrorCode),
}

/// Maps `path` at `addr` and says whether the member served it; anything
/// but a grant, `busy` or `moved` fails the test.
async fn probe(addr: &str, path: &str) -> Probe {
    let reply = tokio::time::timeout(Duration::from_secs(2), map_at(addr, path, 4096))
        .await
        .unwrap_or_else(|_| panic!("the member at {addr} did not answer a Map in 2 s"));
    match reply {
        Ok((client, _)) => {
            drop(client);
            Probe::Served
        }
        Err(OpError::Server { code, .. }) if matches!(code, ErrorCode::Busy | ErrorCode::Moved) => {
            Probe::Refused(code)
        }
        Err(e) => panic!("the member at {addr} answered {e}"),
    }
}

#[test]
fn a_member_cut_off_from_etcd_stops_serving_before_its_shards_are_taken() {
    serially(async {
        let Some(etcd) = Etcd::start("a member cut off from etcd") else {
            return;
        };
        let scene = Scene::new();
        let gate = Proxy::start(etcd.url.trim_start_matches("http://"));
        let gate_url = format!("http://{}", gate.addr);
        let ids = ["a", "b", "c"];
        let members = cluster(&etcd, &scene, &ids, &[("c", &gate_url)]).await;
        let coordinator = etcd.coordinator().await;
        let cut_member = &members[2];
        let name = file_of("c", &ids, "cut");
        let shard = shard_of(&name, SHARDS);
        std::fs::write(scene.root.join(&name), pattern(4096, 4)).unwrap();
        assert_eq!(probe(&cut_member.addr, &name).await, Probe::Served);

        // Polled in turn, every 10 ms: the cut member (does it serve the
        // file?) and etcd (does another member own its shard?).
        let cut = Instant::now();
        gate.mute();
        let mut last_served = None;
        let mut stopped = None;
        // The start of the last etcd read that still showed no other owner:
        // the takeover came after it.
        let mut free_at = Duration::ZERO;
        let mut taken = None;
        let limit = 3 * TTL;
        while taken.is_none_or(|t: Duration| cut.elapsed() < t + Duration::from_millis(300)) {
            assert!(
                cut.elapsed() < limit,
                "{limit:?} after the cut: stopped {stopped:?}, taken {taken:?}: {}",
                cut_member.log()
            );
            match probe(&cut_member.addr, &name).await {
                Probe::Served => {
                    assert!(
                        stopped.is_none() && taken.is_none(),
                        "the cut member served {name} again at {:?}, after it stopped \
                         ({stopped:?}) or its shard was taken ({taken:?})",
                        cut.elapsed()
                    );
                    last_served = Some(cut.elapsed());
                }
                Probe::Refused(_) => {
                    stopped.get_or_insert(cut.elapsed());
                }
            }
            let asked = cut.elapsed();
            match owner_of(&coordinator, shard).await {
                Some(o) if o != "c" => {
                    taken.get_or_insert(cut.elapsed());
                }
                _ if taken.is_none() => free_at = asked,
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stopped = stopped.expect("the cut member never stopped serving");
        let taken = taken.unwrap();
        eprintln!(
            "FIGURES cut: last served {last_served:?}, first refused {stopped:?}, \
             last seen free {free_at:?}, first seen taken {taken:?} after the cut \
             (window {:?})",
            serving_window()
        );
        // The member's last successful keep-alive was sent before the cut,
        // so its window, TTL·(1 − ρ) − m = 1.68 s, closed by then (plus an
        // event-loop turn and a probe).
        assert!(
            stopped <= serving_window() + Duration::from_millis(250),
            "the cut member served {stopped:?} after the cut: {}",
            cut_member.log()
        );
        // It had stopped when etcd still showed no other owner.
        assert!(
            stopped <= free_at,
            "refused first at {stopped:?}, but the shard was taken after {free_at:?}"
        );
        assert!(
            taken <= 2 * TTL,
            "shard {shard} taken {taken:?} after the cut"
        );

        // Healed, the member joins again and is given its shards back.
        let healed = Instant::now();
        gate.heal();
        let bound = 3 * TTL + Duration::from_secs(2);
        settled(&coordinator, &ids, bound).await;
        let back = healed.elapsed();
        assert_eq!(probe(&cut_member.addr, &name).await, Probe::Served);
        eprintln!(
            "FIGURES heal: every shard placed again {back:?} after the heal (bound {bound:?})"
        );
    });
}

#[test]
fn a_planned_leave_moves_writes_without_the_takeover_grace() {
    serially(async {
        let Some(etcd) = Etcd::start("a planned leave") else {
            return;
        };
        let scene = Scene::new();
        let ids = ["a", "b", "c"];
        let mut members = cluster(&etcd, &scene, &ids, &[]).await;
        let coordinator = etcd.coordinator().await;
        let name = file_of("a", &ids, "leaving");
        let shard = shard_of(&name, SHARDS);
        let new_owner = desired_owner(["b", "c"], shard).unwrap();
        let all = listed(&[&members[0], &members[1], &members[2]]);
        let survivors = listed(&[&members[1], &members[2]]);
        let v1 = pattern(4 * 4096, 5);
        assert!(put_at(&scene, &all, &name, 0, &v1).is_ok());

        // Being written when the SIGTERM comes: the drain recalls the
        // page, dirty and never synced by its writer.
        let addrs: Vec<&str> = all.split(',').collect();
        let writer = ClusterClient::connect(&addrs, ClientConfig::default())
            .await
            .unwrap();
        let m = writer
            .map(&name, 0..v1.len() as u64, Access::ReadWrite)
            .await
            .unwrap();
        let on_a = writer.connection(&members[0].addr).unwrap();
        assert!(m.client().same_connection(&on_a), "mapped on a");
        m.write(100, b"written, never synced").await.unwrap();
        let mut expect = v1.clone();
        expect[100..121].copy_from_slice(b"written, never synced");

        // The same mapping writes on through the new owner, and is told of
        // no loss: the drain recalled its page and synced it. Writes that
        // reach a before its drain begins are drained with the rest; the
        // figure is the first synced write through the new owner.
        let left = Instant::now();
        members[0].signal_term();
        let v2 = pattern(200, 6);
        let mut errors = Vec::new();
        let write_after = loop {
            match m.write(8192, &v2).await {
                Ok(()) => match m.sync().await {
                    Ok(()) if !m.client().same_connection(&on_a) => break left.elapsed(),
                    Ok(()) => tokio::time::sleep(Duration::from_millis(5)).await,
                    Err(e) => errors.push(e),
                },
                Err(e) => errors.push(e),
            }
            assert!(
                left.elapsed() < 2 * TTL,
                "no write through the new owner after SIGTERM: {errors:?}"
            );
        };
        assert!(
            !errors.iter().any(|e| matches!(e, OpError::SessionLost(_))),
            "a loss reported for a planned leave: {errors:?}"
        );
        expect[8192..8392].copy_from_slice(&v2);
        let exit = members[0].terminate(Duration::from_secs(10)).await;
        assert!(exit.success(), "{exit}: {}", members[0].log());
        assert_eq!(
            owner_of(&coordinator, shard).await.as_deref(),
            Some(new_owner)
        );
        // A takeover nobody handed over would hold writes for the grace
        // (1.31 s) from the acquire; a clean handover holds them only for
        // the drain. Asserted: under half the grace.
        let grace = takeover_grace();
        assert!(
            write_after < grace / 2,
            "first write {write_after:?} after SIGTERM; the grace is {grace:?}; {errors:?}"
        );
        drop((m, on_a, writer));
        let got = cat(&survivors, &name).unwrap();
        assert!(got == expect, "cat after the leave: not what was written");
        eprintln!(
            "FIGURES leave: SIGTERM -> first synced write on the new owner through the \
             leaving member's mapping {write_after:?} (grace {grace:?}); errors on the way: {:?}",
            errors.iter().map(|e| e.kind()).collect::<Vec<_>>()
        );
    });
}

/// A cluster client's memory mapping of `name`, read-write over `len`
/// bytes, on the member that owns it; `None` (with a message) where this
/// machine has no userfaultfd.
async fn memory_map(client: &ClusterClient, name: &str, len: u64) -> Option<MemoryMapping> {
    if let Err(e) = memory_support() {
        eprintln!("SKIPPED memory mappings in a cluster: {e}");
        return None;
    }
    let opts = MapOptions {
        access: Access::ReadWrite,
        create: false,
    };
    Some(client.map_memory_with(name, 0..len, opts).await.unwrap())
}

/// The little-endian word at `offset` of `data`.
fn word(data: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(data[offset..offset + 8].try_into().unwrap())
}

/// Three members, a file that `a` owns (`pages` pages of pattern `seed`),
/// and a cluster client's memory mapping of all of it, on `a`.
struct MemoryOnA {
    members: Vec<Member>,
    name: String,
    /// Every member's address, `a` first.
    all: String,
    v1: Vec<u8>,
    client: ClusterClient,
    mm: MemoryMapping,
    on_a: Client,
}

/// [`MemoryOnA`] with its file named after `stem`; `None` (with a
/// message) where this machine has no userfaultfd.
async fn memory_on_a(
    etcd: &Etcd,
    scene: &Scene,
    stem: &str,
    pages: usize,
    seed: u8,
) -> Option<MemoryOnA> {
    let ids = ["a", "b", "c"];
    let members = cluster(etcd, scene, &ids, &[]).await;
    let name = file_of("a", &ids, stem);
    let all = listed(&[&members[0], &members[1], &members[2]]);
    let v1 = pattern(pages * 4096, seed);
    assert!(put_at(scene, &all, &name, 0, &v1).is_ok());
    let addrs: Vec<&str> = all.split(',').collect();
    let client = ClusterClient::connect(&addrs, ClientConfig::default())
        .await
        .unwrap();
    let mm = memory_map(&client, &name, v1.len() as u64).await?;
    let on_a = client.connection(&members[0].addr).unwrap();
    assert!(mm.client().same_connection(&on_a), "mapped on a");
    Some(MemoryOnA {
        members,
        name,
        all,
        v1,
        client,
        mm,
        on_a,
    })
}

#[test]
fn a_sigkilled_owners_memory_mapping_moves_and_names_its_lost_stores() {
    serially(async {
        let Some(etcd) = Etcd::start("a memory mapping after SIGKILL") else {
            return;
        };
        let scene = Scene::new();
        let Some(MemoryOnA {
            mut members,
            name,
            all,
            v1,
            client,
            mm,
            on_a,
        }) = memory_on_a(&etcd, &scene, "memory-killed", 3, 7).await
        else {
            return;
        };
        // Stored and synced on page 0; stored and never synced on page 2.
        mm.store(8, &0x5157_u64.to_le()).unwrap();
        mm.sync().await.unwrap();
        mm.store(2 * 4096 + 16, &0xdead_u64.to_le()).unwrap();

        let killed = Instant::now();
        members[0].kill();
        // Loads go on from memory while the client's lease lasts, then
        // fault; the fault gives up on a after the member patience, the
        // cluster client finds the new owner once a's etcd lease is gone,
        // and the mapping moves there with its memory: one access reports
        // the store a may have lost, and the next read the new owner's.
        let bound = 2 * TTL + takeover_grace();
        let mut reports = Vec::new();
        let mut others = Vec::new();
        let moved_after = loop {
            match mm.load::<u64>(8) {
                Ok(v) if !mm.client().same_connection(&on_a) => {
                    assert_eq!(u64::from_le(v), 0x5157, "the synced store");
                    break killed.elapsed();
                }
                Ok(v) => assert_eq!(u64::from_le(v), 0x5157),
                Err(OpError::SessionLost(l)) => reports.push(l),
                Err(e) => others.push(e.kind()),
            }
            assert!(
                killed.elapsed() < bound,
                "the memory mapping did not move within {bound:?}: {reports:?}, {others:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(reports.len(), 1, "told once: {reports:?}, {others:?}");
        let lost = &reports[0];
        assert_eq!(
            lost.cause,
            LossCause::Session(SessionLossReason::MemberLost),
            "{lost}"
        );
        assert_eq!(&*lost.unsynced_pages, &[2], "{lost}");
        assert_eq!(lost.pages, vec![2], "never written back: {lost}");
        assert!(others.is_empty(), "errors besides the report: {others:?}");
        assert_eq!(mm.failure(), None);
        // The page a lost reads as the file has it; stores go on through
        // the new owner and reach the file.
        let page2 = u64::from_le(mm.load::<u64>(2 * 4096 + 16).unwrap());
        assert_eq!(page2, word(&v1, 2 * 4096 + 16), "the lost store read back");
        mm.store(4096, &0x0b0e_u64.to_le()).unwrap();
        mm.sync().await.unwrap();
        let write_after = killed.elapsed();
        let got = cat(&all, &name).unwrap();
        assert_eq!(
            (word(&got, 8), word(&got, 4096)),
            (0x5157, 0x0b0e),
            "the file after the move"
        );
        drop((mm, on_a, client));
        eprintln!(
            "FIGURES memory sigkill: kill -> the memory mapping read at the new owner \
             {moved_after:?} (bound {bound:?}), -> first synced store through it {write_after:?}"
        );
    });
}

#[test]
fn a_planned_leave_moves_a_memory_mapping_without_a_loss() {
    serially(async {
        let Some(etcd) = Etcd::start("a memory mapping in a planned leave") else {
            return;
        };
        let scene = Scene::new();
        let Some(MemoryOnA {
            mut members,
            name,
            client,
            mm,
            on_a,
            ..
        }) = memory_on_a(&etcd, &scene, "memory-leaving", 4, 8).await
        else {
            return;
        };
        let survivors = listed(&[&members[1], &members[2]]);
        // Stored, never synced: the drain recalls it.
        mm.store(24, &0x1eaf_u64.to_le()).unwrap();

        let left = Instant::now();
        members[0].signal_term();
        let mut errors = Vec::new();
        let mut n = 0u64;
        let moved_after = loop {
            n += 1;
            match mm.store(2 * 4096, &n.to_le()) {
                Ok(()) => match mm.sync().await {
                    Ok(()) if !mm.client().same_connection(&on_a) => break left.elapsed(),
                    Ok(()) => tokio::time::sleep(Duration::from_millis(5)).await,
                    Err(e) => errors.push(e),
                },
                Err(e) => errors.push(e),
            }
            assert!(
                left.elapsed() < 2 * TTL,
                "no store through the new owner after SIGTERM: {errors:?}"
            );
        };
        assert!(errors.is_empty(), "a planned leave showed: {errors:?}");
        assert_eq!(u64::from_le(mm.load::<u64>(24).unwrap()), 0x1eaf);
        let exit = members[0].terminate(Duration::from_secs(10)).await;
        assert!(exit.success(), "{exit}: {}", members[0].log());
        drop((mm, on_a, client));
        let got = cat(&survivors, &name).unwrap();
        assert_eq!(
            (word(&got, 24), word(&got, 2 * 4096)),
            (0x1eaf, n),
            "the file after the leave"
        );
        eprintln!(
            "FIGURES memory leave: SIGTERM -> first synced store through the new owner \
             {moved_after:?} after {n} stores"
        );
    });
}
