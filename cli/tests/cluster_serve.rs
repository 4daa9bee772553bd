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

mod cluster_common;

use std::time::{Duration, Instant};

use cluster_common::{Etcd, Member, SHARDS, map_at, rmmap, settled, status};
use rmmap_core::cluster::{desired_owner, shard_of};
use rmmap_tokio::{Access, Client, ClientConfig, ErrorCode, OpError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_split_the_shards_answer_moved_and_hand_over_on_sigterm() {
    let Some(etcd) = Etcd::start("rmmap serve --cluster") else {
        return;
    };
    let t0 = Instant::now();
    let coordinator = etcd.coordinator().await;
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
