//! Scaffolding of the cluster tests (`cluster_serve`, `cluster_failover`): a
//! real etcd on loopback ([`Etcd`]), `rmmap serve --cluster` members as
//! processes ([`Member`]), a forwarder to etcd that can be muted
//! ([`proxy::Proxy`], shared with `common`),
//! and waits on what etcd records ([`settled`]).
//!
//! Its own module, not `common`: it needs the `cluster` feature, which the
//! tests that use `common` are built without.

#![allow(dead_code, unreachable_pub)]

#[path = "../common/proxy.rs"]
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rmmap_core::cluster::{ClusterView, ShardId, ShardKey, desired_owner};
use rmmap_tokio::cluster::EtcdCoordinator;
use rmmap_tokio::{Access, Client, ClientConfig, OpError};

pub const SHARDS: u32 = 16;
pub const PREFIX: &str = "/rmmap/";

/// The member's etcd lease (`--cluster-lease-ms`): etcd's shortest is about
/// 2 s, and it counts whole seconds.
pub const TTL: Duration = Duration::from_millis(2000);
/// The serving window's safety margin (`--cluster-margin-ms`).
pub const MARGIN: Duration = Duration::from_millis(300);
/// The clients' lease (`--lease-ms`): the takeover grace of a shard nobody
/// handed over.
pub const CLIENT_LEASE: Duration = Duration::from_millis(1000);
/// The clock-drift bound the members assume (`ClusterConfig`'s default).
pub const RHO: f64 = 0.01;

/// How long after its last successful keep-alive was sent a member cut off
/// from etcd still serves: `TTL·(1 − ρ) − m` (docs/CLUSTER.md section 3).
pub fn serving_window() -> Duration {
    TTL.mul_f64(1.0 - RHO) - MARGIN
}

/// How long a member that took a shard nobody handed over waits before it
/// grants write ownership: `client_lease·(1 + ρ) + m`.
pub fn takeover_grace() -> Duration {
    CLIENT_LEASE.mul_f64(1.0 + RHO) + MARGIN
}

/// etcd and its data dir, both gone on drop.
pub struct Etcd {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    /// Starts etcd on loopback; `None`, with a message naming what was
    /// not tested, when there is no `etcd` binary.
    pub fn start(untested: &str) -> Option<Etcd> {
        if Command::new("etcd").arg("--version").output().is_err() {
            eprintln!(
                "SKIPPED: no `etcd` binary on PATH (Debian: apt-get install etcd-server); \
                 {untested} was not tested"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (c, p) = (port(), port());
        let (url, peer) = (
            format!("http://127.0.0.1:{c}"),
            format!("http://127.0.0.1:{p}"),
        );
        let child = Command::new("etcd")
            .args(["--name", "s", "--data-dir"])
            .arg(dir.path())
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("s={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Some(Etcd {
            child,
            url,
            _dir: dir,
        })
    }

    /// A coordinator client of this etcd, once etcd answers.
    pub async fn coordinator(&self) -> EtcdCoordinator {
        let t = Instant::now();
        loop {
            if let Ok(e) =
                EtcdCoordinator::connect(std::slice::from_ref(&self.url), Duration::from_secs(1))
                    .await
                && e.range("/").await.is_ok()
            {
                return e;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "etcd never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A temporary directory with the shared `root` and the members' `logs`.
pub struct Scene {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub logs: PathBuf,
}

impl Scene {
    pub fn new() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&logs).unwrap();
        Scene { dir, root, logs }
    }
}

/// An `rmmap serve --cluster` member; its log goes to a file, shown when a
/// check fails. Killed on drop.
pub struct Member {
    pub id: &'static str,
    pub child: Child,
    pub addr: String,
    log: PathBuf,
}

impl Member {
    /// Starts member `id` of the cluster whose etcd is at `etcd` (etcd
    /// itself, or a [`Proxy`](proxy::Proxy) to it), with the short timings
    /// above.
    pub fn start(id: &'static str, root: &Path, etcd: &str, logs: &Path) -> Member {
        let log = logs.join(format!("{id}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_rmmap"))
            .arg("serve")
            .arg(root)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--cluster",
                etcd,
                "--node-id",
                id,
            ])
            .args(["--shards", &SHARDS.to_string()])
            .args([
                "--cluster-lease-ms",
                &TTL.as_millis().to_string(),
                "--cluster-margin-ms",
                &MARGIN.as_millis().to_string(),
            ])
            .args(["--lease-ms", &CLIENT_LEASE.as_millis().to_string()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("rmmap: serving"),
            "member {id} said {line:?}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
        Member {
            id,
            child,
            addr,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: the process ends without a word to etcd or its clients.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM (a planned leave) and returns at once.
    pub fn signal_term(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGTERM, then waits (at most `limit`) for the process to end.
    pub async fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.signal_term();
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                t.elapsed() < limit,
                "member {} still running {limit:?} after SIGTERM: {}",
                self.id,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The members' addresses, comma-separated, in the order given.
pub fn listed(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| m.addr.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// What etcd records now (`None` if it did not answer).
pub async fn view(etcd: &EtcdCoordinator) -> Option<ClusterView> {
    let (revision, kvs) = etcd.range(PREFIX).await.ok()?;
    Some(ClusterView::from_range(PREFIX, revision, &kvs))
}

/// The owner of `shard` as etcd records it now.
pub async fn owner_of(etcd: &EtcdCoordinator, shard: ShardId) -> Option<String> {
    match view(etcd).await?.shard(shard) {
        ShardKey::Owned { owner, .. } => Some(owner.clone()),
        _ => None,
    }
}

/// Waits until every shard is owned by the member rendezvous placement
/// gives it among `ids` (the cluster has settled); returns the view.
pub async fn settled(etcd: &EtcdCoordinator, ids: &[&str], limit: Duration) -> ClusterView {
    let t = Instant::now();
    loop {
        if let Some(view) = view(etcd).await {
            let placed = (0..SHARDS).all(|s| {
                let want = desired_owner(ids.iter().copied(), ShardId(s));
                matches!(view.shard(ShardId(s)), ShardKey::Owned { owner, .. } if Some(owner.as_str()) == want)
            });
            if placed && view.members().len() == ids.len() {
                return view;
            }
        }
        assert!(
            t.elapsed() < limit,
            "the cluster of {ids:?} did not settle within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the `rmmap` command with `args`.
pub fn rmmap(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rmmap"))
        .args(args)
        .output()
        .unwrap()
}

/// `rmmap cluster status --cluster URL`'s report.
pub fn status(url: &str) -> String {
    let out = rmmap(&["cluster", "status", "--cluster", url]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Maps `path` read-only at one member, with a client that follows nothing.
pub async fn map_at(
    addr: &str,
    path: &str,
    len: u64,
) -> Result<(Client, rmmap_tokio::Mapping), OpError> {
    let client = Client::connect(addr, ClientConfig::default())
        .await
        .unwrap();
    let m = client.map(path, 0..len, Access::ReadOnly).await?;
    Ok((client, m))
}
