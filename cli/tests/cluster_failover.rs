//! Failover of `rmmap serve --cluster` members against a real etcd
//! (docs/CLUSTER.md sections 3, 4, 7), with the timings of cluster_serve.rs:
//! a 2 s etcd lease (TTL), a 0.3 s margin, a 1 s client lease.
//!
//! - a SIGKILLed owner's file is read again, exactly as it was synced, within
//!   two leases and the takeover grace, and written again within one lease,
//!   the grace and a few seconds;
//! - a member cut off from etcd stops serving its files within its serving
//!   window, before any other member owns its shards, and owns shards again
//!   once it reaches etcd;
//! - a planned leave (SIGTERM) lets the next owner take writes without the
//!   grace, and loses nothing written before it.
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
use rmmap_tokio::{Access, Client, ClientConfig, ErrorCode, OpError};

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

/// Retries `op` every 20 ms until it succeeds or `limit` has passed since
/// `from`; returns its value and when it succeeded, or panics with its last
/// error.
async fn until_ok<T>(
    from: Instant,
    limit: Duration,
    what: &str,
    mut op: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let mut tries = 0;
    loop {
        tries += 1;
        match op() {
            Ok(v) => return (v, from.elapsed()),
            Err(e) => assert!(
                from.elapsed() < limit,
                "{what} still failing {limit:?} later ({tries} tries): {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn a_sigkilled_owners_files_are_read_then_written_again_within_the_bounds() {
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
        let client = Client::connect(&members[0].addr, ClientConfig::default())
            .await
            .unwrap();
        let m = client
            .map(&name, 0..v1.len() as u64, Access::ReadWrite)
            .await
            .unwrap();
        let v2 = pattern(6000, 2);
        m.write(3000, &v2).await.unwrap();
        m.sync().await.unwrap();
        let mut synced = v1.clone();
        synced[3000..9000].copy_from_slice(&v2);

        // Its owner, as etcd and `rmmap cluster status` record it.
        assert_eq!(owner_of(&coordinator, shard).await.as_deref(), Some("a"));
        let text = status(&etcd.url);
        let line = text.lines().find(|l| l.starts_with("member a ")).unwrap();
        assert!(line.contains(&format!(" {shard}@")), "{text}");

        // `all` lists the dead member first: the CLI must get past it.
        let killed = Instant::now();
        members[0].kill();
        // Shared copies are served as soon as a member owns the shard:
        // kill → etcd expires the lease (TTL after the last keep-alive it
        // got, checked about every 0.5 s) → the desired owner acquires →
        // reads at once. Asserted: within 2·TTL + grace (5.3 s).
        let read_bound = 2 * TTL + takeover_grace();
        let (got, read_after) =
            until_ok(killed, read_bound, "cat after SIGKILL", || cat(&all, &name)).await;
        assert!(
            got == synced,
            "cat through {all} after SIGKILL: not the synced bytes"
        );
        // Writes wait the takeover grace, client_lease·(1 + ρ) + m, from
        // the acquire. Asserted: kill → first synced write within TTL +
        // grace + 3 s of slack (6.3 s).
        let write_bound = TTL + takeover_grace() + Duration::from_secs(3);
        let v3 = pattern(100, 3);
        let (_, write_after) = until_ok(killed, write_bound, "put after SIGKILL", || {
            put_at(&scene, &all, &name, 8000, &v3)
        })
        .await;
        synced[8000..8100].copy_from_slice(&v3);
        let new_owner = owner_of(&coordinator, shard).await;
        assert_eq!(new_owner.as_deref(), desired_owner(["b", "c"], shard));
        let got = cat(&all, &name).unwrap();
        assert!(got == synced, "cat after the write: not the synced bytes");
        drop(client);
        eprintln!(
            "FIGURES sigkill: kill -> first read {read_after:?} (bound {read_bound:?}), \
             kill -> first synced write {write_after:?} (bound {write_bound:?}); \
             TTL {TTL:?}, grace {:?}",
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
        let writer = Client::connect(&members[0].addr, ClientConfig::default())
            .await
            .unwrap();
        let m = writer
            .map(&name, 0..v1.len() as u64, Access::ReadWrite)
            .await
            .unwrap();
        m.write(100, b"written, never synced").await.unwrap();
        let mut expect = v1.clone();
        expect[100..121].copy_from_slice(b"written, never synced");

        let left = Instant::now();
        members[0].signal_term();
        let v2 = pattern(200, 6);
        let (_, write_after) = until_ok(left, 2 * TTL, "put after SIGTERM", || {
            put_at(&scene, &survivors, &name, 8192, &v2)
        })
        .await;
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
            "first write {write_after:?} after SIGTERM; the grace is {grace:?}"
        );
        drop(writer);
        let got = cat(&survivors, &name).unwrap();
        assert!(got == expect, "cat after the leave: not what was written");
        eprintln!(
            "FIGURES leave: SIGTERM -> first synced write on the new owner {write_after:?} \
             (grace {grace:?})"
        );
    });
}
