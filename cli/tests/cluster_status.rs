//! `rmmap cluster status` against a real etcd on loopback, with two members
//! (the ownership machines of rmmap-tokio) registered: it lists both, every
//! shard under exactly one of them with its epoch. Skipped with a message
//! without the `etcd` binary (Debian: `etcd-server`).

mod cluster_common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_common::Etcd;
use rmmap_tokio::cluster::{ClusterConfig, ClusterMember, OwnershipEvent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_the_members_and_every_shard_with_its_epoch() {
    let Some(etcd_process) = Etcd::start("rmmap cluster status") else {
        return;
    };
    let url = etcd_process.url.clone();
    let etcd = etcd_process.coordinator().await;
    let started = Instant::now();
    let mut members = Vec::new();
    for id in ["a", "b"] {
        let config = ClusterConfig {
            shards: 6,
            lease_ttl: Duration::from_secs(3),
            safety_margin: Duration::from_millis(500),
            ..ClusterConfig::new(id, format!("{id}.test:7878"))
        };
        let (m, mut reports) = ClusterMember::spawn(etcd.clone(), config).unwrap();
        let m = Arc::new(m);
        // The member's "server": hands a shard over at once when asked.
        let server = m.clone();
        tokio::spawn(async move {
            while let Some(r) = reports.recv().await {
                if let OwnershipEvent::DrainShard { shard, epoch } = r.event {
                    server.drained(shard, epoch);
                }
            }
        });
        members.push(m);
    }
    // Both registered and all 6 shards owned (the first owner waits for no one).
    while members.iter().map(|m| m.held_shards().len()).sum::<usize>() < 6
        || members.iter().any(|m| m.held_shards().is_empty())
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the members never settled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_rmmap"))
        .args(["cluster", "status", "--cluster", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("rmmap cluster status:\n{text}");
    assert!(text.contains(": 6 shards, 2 member(s)"), "{text}");
    for (id, m) in ["a", "b"].iter().zip(&members) {
        let held = m.held_shards();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("member {id} at {id}.test:7878")))
            .unwrap_or_else(|| panic!("no line for member {id}: {text}"));
        assert!(
            line.contains(&format!(": {} shard(s)", held.len())),
            "{line}"
        );
        for (s, epoch) in held {
            assert!(
                line.contains(&format!(" {s}@{epoch}")),
                "{line} lacks {s}@{epoch}"
            );
        }
    }
    assert!(text.contains("every shard has an owner"), "{text}");
    // A prefix with nothing under it.
    let out = Command::new(env!("CARGO_BIN_EXE_rmmap"))
        .args([
            "cluster",
            "status",
            "--cluster",
            &url,
            "--prefix",
            "/nothing/",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("no rmmap cluster under /nothing/"));
}
