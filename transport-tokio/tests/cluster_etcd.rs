//! The cluster's ownership machines against a real etcd on loopback
//! (docs/CLUSTER.md): three members split the shards; a killed member's
//! shards move within the lease; a member cut off from etcd stops serving
//! before anyone else takes its shards; a planned leave hands shards over
//! without a grace. Throughout, no shard is ever `Local` at two members at
//! once — including a killed member, whose frozen machine still answers as
//! it would have until its serving window closes.
//!
//! Needs the `etcd` binary (Debian: `etcd-server`); skipped with a message
//! without it. `cargo test -p rmmap-tokio --features cluster --test cluster_etcd`.
#![cfg(feature = "cluster")]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rmmap_tokio::cluster::{
    ClusterConfig, ClusterMember, EtcdCoordinator, MemberReport, OwnershipEvent, Placement, ShardId,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const SHARDS: u32 = 8;
const TTL: Duration = Duration::from_secs(3);

/// The tests share the machine's two cores with etcd: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A single-node etcd on loopback with a temporary data dir, killed on drop.
struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    async fn start() -> Option<Etcd> {
        if Command::new("etcd").arg("--version").output().is_err() {
            eprintln!(
                "SKIPPED: no `etcd` binary on PATH (Debian: apt-get install etcd-server); \
                 the cluster's etcd tests did not run"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path())
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd did not start");
        let etcd = Etcd {
            child,
            url,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            if let Ok(c) =
                EtcdCoordinator::connect(std::slice::from_ref(&etcd.url), Duration::from_secs(1))
                    .await
                && c.range("/").await.is_ok()
            {
                return Some(etcd);
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "etcd never answered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP forwarder to etcd that can stop forwarding: open connections go
/// silent and new ones are held, as in a partition.
struct Gate {
    addr: String,
    open: Arc<AtomicBool>,
}

impl Gate {
    async fn start(upstream: &str) -> Gate {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicBool::new(true));
        let gate = open.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let gate = gate.clone();
                tokio::spawn(async move {
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::join!(pump(ri, wo, gate.clone()), pump(ro, wi, gate));
                });
            }
        });
        Gate { addr, open }
    }

    fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
    }
}

/// Copies while the gate is open; once closed, swallows everything.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    open: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if open.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn config(id: &str, prefix: &str) -> ClusterConfig {
    ClusterConfig {
        prefix: prefix.into(),
        shards: SHARDS,
        lease_ttl: TTL,
        safety_margin: Duration::from_millis(500),
        client_lease: Duration::from_secs(2),
        retry_interval: Duration::from_millis(200),
        ..ClusterConfig::new(id, format!("{id}.test:7878"))
    }
}

/// A member and the "server" that answers its drains at once.
async fn member(url: &str, id: &str, prefix: &str) -> (Arc<ClusterMember>, Reports) {
    let coord = EtcdCoordinator::connect(&[url.to_owned()], Duration::from_secs(1))
        .await
        .unwrap();
    let (m, mut rx) = ClusterMember::spawn(coord, config(id, prefix)).unwrap();
    let m = Arc::new(m);
    let (tx, seen) = mpsc::unbounded_channel();
    let server = m.clone();
    tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            if let OwnershipEvent::DrainShard { shard, epoch } = r.event {
                server.drained(shard, epoch);
            }
            if tx.send(r).is_err() {
                return;
            }
        }
    });
    (m, Reports(seen, Vec::new()))
}

struct Reports(mpsc::UnboundedReceiver<MemberReport>, Vec<MemberReport>);

impl Reports {
    fn all(&mut self) -> &[MemberReport] {
        while let Ok(r) = self.0.try_recv() {
            self.1.push(r);
        }
        &self.1
    }
}

/// Who serves each shard now; panics if two members do.
fn owners(members: &[Arc<ClusterMember>]) -> Vec<Option<usize>> {
    (0..SHARDS)
        .map(|s| {
            let local: Vec<usize> = (0..members.len())
                .filter(|&i| matches!(members[i].shard_placement(ShardId(s)), Placement::Local(_)))
                .collect();
            assert!(
                local.len() <= 1,
                "shard {s} is Local at members {local:?} at once"
            );
            local.first().copied()
        })
        .collect()
}

/// Polls ownership every 5 ms (checking it never overlaps) until `done`.
async fn until(
    members: &[Arc<ClusterMember>],
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&[Option<usize>]) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        if done(&owners(members)) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?}: {:?}",
            owners(members)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The serving member's answer for `s`, and its clock.
fn local_at(
    members: &[Arc<ClusterMember>],
    among: &[usize],
    s: ShardId,
) -> (rmmap_tokio::cluster::LocalShard, rmmap_core::Instant) {
    among
        .iter()
        .find_map(|&i| match members[i].shard_placement(s) {
            Placement::Local(l) => Some((l, members[i].now())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("shard {s} is served by none of {among:?}"))
}

fn spread(o: &[Option<usize>], among: &[usize]) -> bool {
    o.iter().all(|x| x.is_some_and(|i| among.contains(&i)))
        && among.iter().all(|i| o.contains(&Some(*i)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_members_shards_move_within_the_lease_and_never_overlap() {
    let _one = SERIAL.lock().await;
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let mut members = Vec::new();
    let mut reports = Vec::new();
    for id in ["a", "b", "c"] {
        let (m, r) = member(&etcd.url, id, "/kill/").await;
        members.push(m);
        reports.push(r);
    }
    until(
        &members,
        Duration::from_secs(30),
        "three members share the shards",
        |o| spread(o, &[0, 1, 2]),
    )
    .await;
    let theirs: Vec<ShardId> = members[0]
        .held_shards()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    members[0].abort(); // SIGKILL: no keep-alive from now on
    let took = until(
        &members,
        TTL + Duration::from_secs(3),
        "the survivors take over",
        |o| spread(o, &[1, 2]),
    )
    .await;
    eprintln!(
        "failover: shards of a killed member served again {took:?} after the kill (TTL {TTL:?})"
    );
    // Taken without a handover: write ownership waits the grace.
    for s in theirs {
        let (l, now) = local_at(&members, &[1, 2], s);
        assert!(l.writes_from > now, "shard {s} taken without a grace");
    }
    drop(reports);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_from_etcd_stops_serving_before_its_shards_are_taken() {
    let _one = SERIAL.lock().await;
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let gate = Gate::start(&etcd.url).await;
    let (a, mut ra) = member(&gate.addr, "a", "/cut/").await;
    let (b, _rb) = member(&etcd.url, "b", "/cut/").await;
    let members = vec![a, b];
    until(
        &members,
        Duration::from_secs(30),
        "two members share the shards",
        |o| spread(o, &[0, 1]),
    )
    .await;
    gate.close();
    let cut = Instant::now();
    let stopped = until(&members, TTL, "the cut member stops serving", |o| {
        !o.contains(&Some(0))
    })
    .await;
    // The window closes at most TTL·(1−ρ) − margin after the last keep-alive
    // sent, which was at most one keep-alive interval before the cut.
    assert!(stopped <= TTL, "stopped serving {stopped:?} after the cut");
    // The report follows within a turn of the member's loop.
    let told = Instant::now();
    while !ra
        .all()
        .iter()
        .any(|r| matches!(r.event, OwnershipEvent::ShardLost { .. }))
    {
        assert!(
            told.elapsed() < Duration::from_millis(500),
            "the server was not told to stop"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let taken = until(
        &members,
        TTL + Duration::from_secs(3),
        "the other member takes over",
        |o| spread(o, &[1]),
    )
    .await;
    eprintln!(
        "cut off from etcd: stopped serving {stopped:?} after the cut, shards taken {:?} after it",
        cut.elapsed().min(stopped + taken)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_leave_hands_shards_over_without_a_grace() {
    let _one = SERIAL.lock().await;
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let mut members = Vec::new();
    let mut reports = Vec::new();
    for id in ["a", "b", "c"] {
        let (m, r) = member(&etcd.url, id, "/leave/").await;
        members.push(m);
        reports.push(r);
    }
    until(
        &members,
        Duration::from_secs(30),
        "three members share the shards",
        |o| spread(o, &[0, 1, 2]),
    )
    .await;
    let theirs: Vec<ShardId> = members[2]
        .held_shards()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    members[2].leave();
    let took = until(
        &members,
        Duration::from_secs(3),
        "the others take the shards",
        |o| spread(o, &[0, 1]),
    )
    .await;
    eprintln!("planned leave: shards served by the others {took:?} after the leave");
    for s in theirs {
        let (l, now) = local_at(&members, &[0, 1], s);
        assert!(
            l.writes_from <= now,
            "shard {s} came with a grace after a clean handover"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        reports[2]
            .all()
            .iter()
            .any(|r| r.event == OwnershipEvent::Left),
        "the leaving member never finished"
    );
}
