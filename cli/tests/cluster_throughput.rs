//! Aggregate throughput of clients on disjoint files through a cluster of 1,
//! 2 and 3 `rmmap serve --cluster` members (issue 17; docs/BENCHMARKS.md).
//!
//! For each cluster size N: one etcd, N members on loopback sharing one
//! temporary root, 16 shards, the timings of cluster_common. K = 6 files of
//! 64 MiB, named so that placement gives each member 6/N of them, are
//! written straight into the root (and synced) before the members start, so
//! their creation is not measured. Then K concurrent `rmmap get ADDRS FILE
//! OUT` processes, ADDRS listing every member (the clients follow `moved` to
//! each file's owner): the wall time until all K have ended gives the
//! aggregate MiB/s read. Then K concurrent `rmmap put LOCAL ADDRS FILE`
//! (written and synced) give the MiB/s written. Each three times; the
//! medians are printed as a table (`eprintln`, see `--nocapture`), with how
//! many files each member owned as `rmmap cluster status` reports it.
//!
//! Everything shares the machine it runs on: more members add no CPU or
//! disk there, so the figures show the cost of the cluster path, not
//! scaling.
//!
//! Ignored (it moves several GiB and takes minutes); run by hand:
//! `cargo test --release -p rmmap-cli --features cluster --test
//! cluster_throughput -- --ignored --nocapture`. Needs the `etcd` binary
//! (Debian: `etcd-server`); skipped with a message without it.

mod cluster_common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster_common::{Etcd, Member, SHARDS, Scene, listed, settled, status};
use rmmap_core::cluster::{desired_owner, shard_of};

/// Concurrent clients, one file each.
const K: usize = 6;
/// Each file's size.
const FILE: usize = 64 << 20;
/// Runs of each measurement; the median is reported.
const RUNS: usize = 3;
/// A run that takes longer has hung: its clients are killed.
const RUN_LIMIT: Duration = Duration::from_secs(180);

const IDS: [&str; 3] = ["a", "b", "c"];

/// A file name that placement among `ids` gives to `owner`.
fn file_of(owner: &str, ids: &[&str], stem: &str) -> String {
    (0..)
        .map(|i| format!("{stem}-{i}.bin"))
        .find(|n| desired_owner(ids.iter().copied(), shard_of(n, SHARDS)) == Some(owner))
        .unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 12) as u8))
        .collect()
}

fn write_synced(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
    std::fs::File::open(path).unwrap().sync_all().unwrap();
}

/// Spawns every command at once and waits until all have ended; returns the
/// wall time. Any failure (or a run past [`RUN_LIMIT`]) fails the test.
fn all_at_once(what: &str, commands: Vec<Command>, members: &[Member]) -> Duration {
    let start = Instant::now();
    let mut children: Vec<(usize, Child)> = commands
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let child = c
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (i, child)
        })
        .collect();
    let mut failed = Vec::new();
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            if let Some(s) = children[i].1.try_wait().unwrap() {
                let (n, child) = children.swap_remove(i);
                if !s.success() {
                    let err = child.wait_with_output().unwrap().stderr;
                    failed.push(format!(
                        "client {n}: {s}: {}",
                        String::from_utf8_lossy(&err)
                    ));
                }
            } else {
                i += 1;
            }
        }
        if start.elapsed() > RUN_LIMIT {
            for (_, c) in &mut children {
                let _ = c.kill();
                let _ = c.wait();
            }
            let logs: Vec<String> = members.iter().map(|m| m.log()).collect();
            panic!("{what}: clients still running after {RUN_LIMIT:?}: {logs:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = start.elapsed();
    assert!(failed.is_empty(), "{what}: {failed:#?}");
    took
}

fn mib_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / took.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Row {
    members: usize,
    /// Files owned by each member, in `IDS` order.
    spread: Vec<usize>,
    reads: Vec<f64>,
    writes: Vec<f64>,
}

async fn measure(n: usize) -> Option<Row> {
    let etcd = Etcd::start("cluster throughput")?;
    let scene = Scene::new();
    let ids = &IDS[..n];
    // File i is given to member i mod N.
    let names: Vec<String> = (0..K)
        .map(|i| file_of(ids[i % n], ids, &format!("tp{i}")))
        .collect();
    let data: Vec<Vec<u8>> = (0..K).map(|i| pattern(FILE, i as u8)).collect();
    for (name, d) in names.iter().zip(&data) {
        write_synced(&scene.root.join(name), d);
    }
    // The sources of the puts: the same bytes, other seeds.
    let locals: Vec<_> = (0..K)
        .map(|i| {
            let p = scene.dir.path().join(format!("local-{i}.bin"));
            write_synced(&p, &pattern(FILE, 100 + i as u8));
            p
        })
        .collect();
    let outs: Vec<_> = (0..K)
        .map(|i| scene.dir.path().join(format!("out-{i}.bin")))
        .collect();

    let coordinator = etcd.coordinator().await;
    let members: Vec<Member> = ids
        .iter()
        .map(|&id| Member::start(id, &scene.root, &etcd.url, &scene.logs))
        .collect();
    settled(&coordinator, ids, Duration::from_secs(15)).await;
    let all = listed(&members.iter().collect::<Vec<_>>());

    // Who owns each file, as `rmmap cluster status` reports it.
    let text = status(&etcd.url);
    let spread: Vec<usize> = ids
        .iter()
        .map(|id| {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("member {id} ")))
                .unwrap_or_else(|| panic!("no member {id} in {text}"));
            names
                .iter()
                .filter(|f| line.contains(&format!(" {}@", shard_of(f, SHARDS))))
                .count()
        })
        .collect();
    assert_eq!(spread.iter().sum::<usize>(), K, "{text}");

    let bin = env!("CARGO_BIN_EXE_rmmap");
    let mut reads = Vec::new();
    for run in 0..RUNS {
        let gets = (0..K)
            .map(|i| {
                let mut c = Command::new(bin);
                c.arg("get").arg(&all).arg(&names[i]).arg(&outs[i]);
                c
            })
            .collect();
        let took = all_at_once(&format!("{n} member(s), get run {run}"), gets, &members);
        reads.push(mib_per_s(K * FILE, took));
        for i in 0..K {
            let got = std::fs::read(&outs[i]).unwrap();
            assert!(got == data[i], "get of {}: not the file's bytes", names[i]);
            std::fs::remove_file(&outs[i]).unwrap();
        }
        eprintln!("{n} member(s), get run {run}: {took:?}");
    }
    let mut writes = Vec::new();
    for run in 0..RUNS {
        let puts = (0..K)
            .map(|i| {
                let mut c = Command::new(bin);
                c.arg("put").arg(&locals[i]).arg(&all).arg(&names[i]);
                c
            })
            .collect();
        let took = all_at_once(&format!("{n} member(s), put run {run}"), puts, &members);
        writes.push(mib_per_s(K * FILE, took));
        for name in &names {
            let len = std::fs::metadata(scene.root.join(name)).unwrap().len();
            assert_eq!(len, FILE as u64, "{name} after the put");
        }
        eprintln!("{n} member(s), put run {run}: {took:?}");
    }
    // The last put's bytes are the local files'.
    for i in 0..K {
        let got = std::fs::read(scene.root.join(&names[i])).unwrap();
        assert!(
            got == std::fs::read(&locals[i]).unwrap(),
            "{}: not the put's bytes",
            names[i]
        );
    }
    // Still placed as at the start: no member lost its shards under load.
    settled(&coordinator, ids, Duration::from_secs(1)).await;
    drop(members);
    Some(Row {
        members: n,
        spread,
        reads,
        writes,
    })
}

#[test]
#[ignore = "a benchmark: minutes, several GiB of I/O; run by hand with --ignored"]
fn aggregate_throughput_on_disjoint_files_with_1_2_3_members() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for n in 1..=3 {
        let Some(row) = rt.block_on(measure(n)) else {
            return;
        };
        rows.push(row);
    }
    eprintln!(
        "FIGURES cluster throughput: {K} clients, one {} MiB file each, {RUNS} runs, medians",
        FILE >> 20
    );
    eprintln!("| members | files per member | read MiB/s | write MiB/s | read runs | write runs |");
    eprintln!("|---|---|---|---|---|---|");
    for r in &rows {
        let spread = r
            .spread
            .iter()
            .zip(IDS)
            .map(|(k, id)| format!("{id}:{k}"))
            .collect::<Vec<_>>()
            .join(" ");
        let runs = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        eprintln!(
            "| {} | {spread} | {:.0} | {:.0} | {} | {} |",
            r.members,
            median(r.reads.clone()),
            median(r.writes.clone()),
            runs(&r.reads),
            runs(&r.writes)
        );
    }
}
