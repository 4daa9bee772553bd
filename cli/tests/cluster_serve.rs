//! Three `rmmap serve --cluster` members on loopback sharing one ROOT,
//! coordinated by a real etcd (docs/CLUSTER.md): every shard gets an owner;
//! a member that does not own a file answers its `Map` with `moved` and the
//! owner's address, the owner serves it, and the CLI given the members'
//! addresses reads and writes through whichever owns it; a SIGTERM hands the
//! member's shards over to the others, and what was written and synced
//! through the old owner reads back the same through the new one.
//!
//! Needs the `etcd` binary (Debian: `etcd-server`); skipped with a message
//! without it. `cargo test -p rmmap-cli --features cluster --test cluster_serve`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rmmap_core::cluster::{ClusterView, ShardId, ShardKey, desired_owner, shard_of};
use rmmap_tokio::cluster::EtcdCoordinator;
use rmmap_tokio::{Access, Client, ClientConfig, ErrorCode, OpError};

const SHARDS: u32 = 16;
const PREFIX: &str = "/rmmap/";

/// etcd and its data dir, both gone on drop.
struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    fn start() -> Option<Etcd> {
        if Command::new("etcd").arg("--version").output().is_err() {
            eprintln!(
                "SKIPPED: no `etcd` binary on PATH (Debian: apt-get install etcd-server); \
                 rmmap serve --cluster was not tested"
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
}

/// An `rmmap serve --cluster` member; its log goes to a file, shown when a
/// check fails. Killed on drop.
struct Member {
    id: &'static str,
    child: Child,
    addr: String,
    log: std::path::PathBuf,
}

impl Member {
    fn start(id: &'static str, root: &Path, etcd: &str, logs: &Path) -> Member {
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
            // Short leases, for a quick test: the member's etcd lease
            // (etcd's shortest is about 2 s), and the clients' lease, which
            // is the takeover grace of a shard nobody handed over.
            .args(["--cluster-lease-ms", "2000", "--cluster-margin-ms", "300"])
            .args(["--lease-ms", "1000"])
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

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (at most `limit`) for the process to end.
    async fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
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

/// Waits until every shard is owned by the member rendezvous placement
/// gives it among `ids` (the cluster has settled); returns the view.
async fn settled(etcd: &EtcdCoordinator, ids: &[&str], limit: Duration) -> ClusterView {
    let t = Instant::now();
    loop {
        if let Ok((revision, kvs)) = etcd.range(PREFIX).await {
            let view = ClusterView::from_range(PREFIX, revision, &kvs);
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

fn rmmap(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rmmap"))
        .args(args)
        .output()
        .unwrap()
}

fn status(url: &str) -> String {
    let out = rmmap(&["cluster", "status", "--cluster", url]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Maps `path` read-only at one member, with a client that follows nothing.
async fn map_at(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_split_the_shards_answer_moved_and_hand_over_on_sigterm() {
    let Some(etcd) = Etcd::start() else { return };
    let t0 = Instant::now();
    let coordinator = loop {
        if let Ok(e) =
            EtcdCoordinator::connect(std::slice::from_ref(&etcd.url), Duration::from_secs(1)).await
            && e.range("/").await.is_ok()
        {
            break e;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "etcd never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&logs).unwrap();

    let ids = ["a", "b", "c"];
    let mut members: Vec<Member> = ids
        .iter()
        .map(|id| Member::start(id, &root, &etcd.url, &logs))
        .collect();
    settled(&coordinator, &ids, Duration::from_secs(15)).await;
    eprintln!("{:?}: every shard owned as placed", t0.elapsed());
    let text = status(&etcd.url);
    assert!(text.contains(": 16 shards, 3 member(s)"), "{text}");
    assert!(text.contains("every shard has an owner"), "{text}");
    for m in &members {
        assert!(
            text.contains(&format!("member {} at {} ", m.id, m.addr)),
            "{text}"
        );
    }

    // A file of a shard of member `a`, so that the SIGTERM below moves it.
    let name = (0..)
        .map(|i| format!("moving-{i}.bin"))
        .find(|n| desired_owner(ids, shard_of(n, SHARDS)) == Some("a"))
        .unwrap();
    let shard = shard_of(&name, SHARDS);
    let all = members
        .iter()
        .map(|m| m.addr.as_str())
        .collect::<Vec<_>>()
        .join(",");
    // Listed from the non-owners on: the CLI follows `moved` to the owner.
    let listed = format!(
        "{},{},{}",
        members[1].addr, members[2].addr, members[0].addr
    );
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let local = dir.path().join("local.bin");
    std::fs::write(&local, &data).unwrap();
    let put = rmmap(&["put", local.to_str().unwrap(), &listed, &name]);
    assert!(
        put.status.success(),
        "put through {listed}: {}",
        String::from_utf8_lossy(&put.stderr)
    );
    let cat = rmmap(&["cat", &all, &name]);
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert_eq!(cat.stdout, data, "cat through {all}");

    // Each non-owner answers `moved` with the owner's address; the owner serves.
    for m in &members[1..] {
        match map_at(&m.addr, &name, 4096).await {
            Err(OpError::Server { code, message }) => {
                assert_eq!(code, ErrorCode::Moved, "{message}");
                assert_eq!(message, members[0].addr, "member {} sent {name} on", m.id);
            }
            Err(e) => panic!("member {} answered {e}", m.id),
            Ok(_) => panic!("member {} mapped {name} of shard {shard}, owned by a", m.id),
        }
    }
    let (client, _) = map_at(&members[0].addr, &name, 4096).await.unwrap();
    client.close().await.unwrap();

    // Written and synced through the owner, with the mapping kept open
    // across the handover (the drain recalls its pages).
    let owner = Client::connect(&members[0].addr, ClientConfig::default())
        .await
        .unwrap();
    let m = owner
        .map(&name, 0..data.len() as u64, Access::ReadWrite)
        .await
        .unwrap();
    m.write(5000, b"written through the old owner")
        .await
        .unwrap();
    m.sync().await.unwrap();
    let mut expect = data.clone();
    expect[5000..5029].copy_from_slice(b"written through the old owner");

    let t = Instant::now();
    let exit = members[0].terminate(Duration::from_secs(10)).await;
    let stopped = t.elapsed();
    let log = members[0].log();
    assert!(exit.success(), "{exit}: {log}");
    assert!(log.contains("left the cluster"), "{log}");
    assert!(
        log.contains(&format!("shard released shard={shard}")),
        "{log}"
    );
    let rest = ["b", "c"];
    settled(&coordinator, &rest, Duration::from_secs(10)).await;
    let moved = t.elapsed();
    eprintln!("SIGTERM: member a stopped after {stopped:?}, its shards placed after {moved:?}");
    drop(owner);
    let gone = members.remove(0);
    let new_owner = desired_owner(rest, shard).unwrap();
    let new = members.iter().find(|m| m.id == new_owner).unwrap();
    let text = status(&etcd.url);
    assert!(text.contains(": 16 shards, 2 member(s)"), "{text}");
    assert!(!text.contains("member a "), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("member {new_owner} ")))
        .unwrap();
    assert!(line.contains(&format!(" {shard}@")), "{line}");

    // The new owner serves the file as the old one left it; the other
    // member now sends it there.
    let (client, m) = map_at(&new.addr, &name, data.len() as u64).await.unwrap();
    assert_eq!(m.read_bytes(0, data.len() as u64).await.unwrap(), expect);
    client.close().await.unwrap();
    let other = members.iter().find(|m| m.id != new_owner).unwrap();
    match map_at(&other.addr, &name, 4096).await {
        Err(OpError::Server { code, message }) => {
            assert_eq!(
                (code, message.as_str()),
                (ErrorCode::Moved, new.addr.as_str())
            );
        }
        Err(e) => panic!("member {} answered {e}", other.id),
        Ok(_) => panic!("member {} mapped a file it does not own", other.id),
    }
    let listed = format!("{},{},{}", gone.addr, other.addr, new.addr);
    let cat = rmmap(&["cat", &listed, &name]);
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert_eq!(cat.stdout, expect, "cat through {listed}");

    // The mio server cannot be a member: refused before it serves anything.
    let mio = rmmap(&[
        "serve",
        root.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--transport",
        "mio",
        "--cluster",
        &etcd.url,
    ]);
    let said = String::from_utf8_lossy(&mio.stderr);
    assert!(
        !mio.status.success() && said.contains("drop --transport mio"),
        "{said}"
    );
    eprintln!("{:?} in all", t0.elapsed());
}
