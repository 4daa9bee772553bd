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
