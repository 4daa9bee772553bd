//! Memory mappings through graceful server restarts (issue 19): a thread
//! keeps storing into and loading from a memory mapping while the server
//! is shut down gracefully and started again on the same address and
//! directory, several times. No access raises SIGBUS or fails, the thread
//! keeps going after every restart, the mapping is never remapped, and
//! every byte — the ones stored and the ones nobody touched — is on the
//! disk at the end.

mod memory_common;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use memory_common::{TestServer, supported, within};
use rmmap_tokio::{Access, Server, ServerConfig};

const PAGE: usize = 4096;
const PAGES: usize = 8;
const RESTARTS: usize = 20;

/// The bytes the file starts with: a pattern the thread never overwrites
/// outside its own word of each page.
fn pattern() -> Vec<u8> {
    (0..PAGES * PAGE).map(|i| (i * 13 % 251) as u8).collect()
}

/// The word of page `p` the thread stores its round into.
fn slot(p: usize) -> usize {
    p * PAGE / 8 + p % (PAGE / 8)
}

/// A graceful restart: the run state says every client confirmed its
/// `Goodbye`, so the next run owes no grace (`restart_grace(None)`).
async fn start_again(addr: &str, root: &std::path::Path) -> Server {
    let config = || {
        ServerConfig::new(root)
            .lease(Duration::from_secs(2))
            .restart_grace(None)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Server::bind(addr, config()).await {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("bind {addr} again: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot start the server again on {addr}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restarts_under_a_storing_thread_lose_no_byte_and_raise_no_sigbus() {
    if !supported() {
        return;
    }
    within(120, async {
        let ts = TestServer::start(|c| c).await;
        let original = pattern();
        ts.put("f", &original);
        let (addr, root) = (ts.addr.clone(), ts.root());
        let client = ts.client().await;
        let m = Arc::new(
            client
                .map_memory("f", 0..(PAGES * PAGE) as u64, Access::ReadWrite)
                .await
                .unwrap(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        // The thread: round i stores i into its word of every page and loads
        // it back (its own store, never an older value), and checks the
        // neighbouring untouched byte still holds the file's pattern.
        let writer = {
            let (m, stop, rounds) = (m.clone(), stop.clone(), rounds.clone());
            let original = original.clone();
            tokio::task::spawn_blocking(move || {
                let words = m.atomic_words();
                let bytes = m.atomic_bytes();
                let mut i = 0u64;
                while !stop.load(Relaxed) {
                    i += 1;
                    for p in 0..PAGES {
                        let w = &words[slot(p)];
                        w.store(i, Relaxed);
                        assert_eq!(w.load(Relaxed), i, "round {i} page {p}: own store lost");
                        let near = 8 * slot(p) + 8;
                        assert_eq!(
                            bytes[near].load(Relaxed),
                            original[near],
                            "round {i} page {p}: an untouched byte changed"
                        );
                    }
                    rounds.store(i, Relaxed);
                }
                i
            })
        };
        let TestServer {
            server, dir: _dir, ..
        } = ts;
        let mut server = server;
        let mut at_restart = Vec::new();
        for k in 0..RESTARTS {
            // Let the thread work with the run, then restart it.
            let before = rounds.load(Relaxed);
            let deadline = Instant::now() + Duration::from_secs(20);
            while rounds.load(Relaxed) < before + 20 {
                assert!(
                    Instant::now() < deadline,
                    "restart {k}: the thread made no progress (round {before})"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let sampled = rounds.load(Relaxed);
            at_restart.push(sampled);
            server.shutdown().await.unwrap();
            // The shutdown recalled the pages out of the thread's memory and
            // synced them: the disk holds a round at least as late as the
            // one sampled, and the pattern everywhere else.
            let disk = std::fs::read(root.join("f")).unwrap();
            for p in 0..PAGES {
                let at = 8 * slot(p);
                let v = u64::from_le_bytes(disk[at..at + 8].try_into().unwrap());
                assert!(
                    v >= sampled,
                    "restart {k} page {p}: disk has round {v} < {sampled}"
                );
                assert!(disk[at + 8..(p + 1) * PAGE] == original[at + 8..(p + 1) * PAGE]);
                assert!(disk[p * PAGE..at] == original[p * PAGE..at]);
            }
            server = start_again(&addr, &root).await;
        }
        // The thread goes on after the last restart too.
        let last = *at_restart.last().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while rounds.load(Relaxed) < last + 20 {
            assert!(
                Instant::now() < deadline,
                "the thread made no progress after the last restart"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.store(true, Relaxed);
        let done = writer.await.expect("the storing thread failed");
        eprintln!("{RESTARTS} restarts at rounds {at_restart:?}, {done} rounds in all");
        assert!(
            m.failure().is_none(),
            "the mapping failed: {:?}",
            m.failure()
        );
        assert!(
            m.last_fault_error().is_none(),
            "a fault failed: {:?}",
            m.last_fault_error()
        );
        m.sync().await.unwrap();
        let mut expected = original;
        for p in 0..PAGES {
            let at = 8 * slot(p);
            expected[at..at + 8].copy_from_slice(&done.to_le_bytes());
        }
        let disk = std::fs::read(root.join("f")).unwrap();
        assert!(disk == expected, "the disk lost bytes");
        Arc::try_unwrap(m)
            .expect("the thread is done")
            .unmap()
            .await
            .unwrap();
        client.close().await.unwrap();
        server.shutdown().await.unwrap();
    })
    .await;
}

/// Eight clients, each with a memory mapping of the same file and a thread
/// that stores its round into its own page's word and loads everyone
/// else's, while the server restarts gracefully 20 times. No value anyone
/// loads ever goes back (a lost or stale store would), no access faults for
/// good, no mapping is remapped, and after a sync each word on the disk is
/// its writer's last round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_memory_mapping_clients_through_graceful_restarts_see_no_value_go_back() {
    if !supported() {
        return;
    }
    const CLIENTS: usize = 8;
    within(240, async {
        let ts = TestServer::start(|c| c).await;
        let original = pattern();
        ts.put("f", &original);
        let (addr, root) = (ts.addr.clone(), ts.root());
        let mut clients = Vec::new();
        let mut maps = Vec::new();
        for _ in 0..CLIENTS {
            let c = ts.client().await;
            let m = c
                .map_memory("f", 0..(PAGES * PAGE) as u64, Access::ReadWrite)
                .await
                .unwrap();
            clients.push(c);
            maps.push(Arc::new(m));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let rounds: Arc<Vec<AtomicU64>> =
            Arc::new((0..CLIENTS).map(|_| AtomicU64::new(0)).collect());
        let threads: Vec<_> = (0..CLIENTS)
            .map(|k| {
                let (m, stop, rounds) = (maps[k].clone(), stop.clone(), rounds.clone());
                let original = original.clone();
                tokio::task::spawn_blocking(move || {
                    let words = m.atomic_words();
                    let mut seen = [0u64; CLIENTS];
                    let mut i = 0u64;
                    while !stop.load(Relaxed) {
                        i += 1;
                        let own = &words[slot(k)];
                        own.store(i, Relaxed);
                        assert_eq!(own.load(Relaxed), i, "client {k} round {i}: own store lost");
                        for (p, s) in seen.iter_mut().enumerate() {
                            let v = words[slot(p)].load(Relaxed);
                            // Before its writer's first store a word holds
                            // the file's pattern.
                            let initial = u64::from_le_bytes(
                                original[8 * slot(p)..8 * slot(p) + 8].try_into().unwrap(),
                            );
                            if v != initial {
                                assert!(v >= *s, "client {k}: page {p} went back from {s} to {v}");
                                *s = v;
                            }
                        }
                        rounds[k].store(i, Relaxed);
                    }
                    i
                })
            })
            .collect();
        let TestServer {
            server, dir: _dir, ..
        } = ts;
        let mut server = server;
        let all_past = |rounds: &[AtomicU64], at: &[u64], more: u64| {
            rounds
                .iter()
                .zip(at)
                .all(|(r, a)| r.load(Relaxed) >= a + more)
        };
        for k in 0..RESTARTS {
            let before: Vec<u64> = rounds.iter().map(|r| r.load(Relaxed)).collect();
            let deadline = Instant::now() + Duration::from_secs(30);
            while !all_past(&rounds, &before, 3) {
                assert!(
                    Instant::now() < deadline,
                    "restart {k}: a client made no progress ({before:?})"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            server.shutdown().await.unwrap();
            server = start_again(&addr, &root).await;
        }
        let before: Vec<u64> = rounds.iter().map(|r| r.load(Relaxed)).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !all_past(&rounds, &before, 3) {
            assert!(
                Instant::now() < deadline,
                "a client made no progress after the last restart"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.store(true, Relaxed);
        let mut done = Vec::new();
        for t in threads {
            done.push(t.await.expect("a storing thread failed"));
        }
        eprintln!("{RESTARTS} restarts; rounds per client {done:?}");
        let mut expected = original;
        for (k, m) in maps.iter().enumerate() {
            assert!(m.failure().is_none(), "client {k}: {:?}", m.failure());
            assert!(
                m.last_fault_error().is_none(),
                "client {k}: {:?}",
                m.last_fault_error()
            );
            m.sync().await.unwrap();
            let at = 8 * slot(k);
            expected[at..at + 8].copy_from_slice(&done[k].to_le_bytes());
        }
        let disk = std::fs::read(root.join("f")).unwrap();
        assert!(disk == expected, "the disk lost bytes");
        for (m, c) in maps.into_iter().zip(clients) {
            Arc::try_unwrap(m)
                .expect("its thread is done")
                .unmap()
                .await
                .unwrap();
            c.close().await.unwrap();
        }
        server.shutdown().await.unwrap();
    })
    .await;
}
