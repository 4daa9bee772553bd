//! Memory mappings over real loopback TCP and real userfaultfd: loads see
//! other clients' stores after the invalidation, stores reach the disk
//! after sync, atomics and plain stores agree, and the runtime checks
//! refuse what cannot work.

mod memory_common;

use std::sync::atomic::Ordering::Relaxed;

use memory_common::{TestServer, supported, touch, within};
use rmmap_tokio::{Access, MemoryError, OpError};

const PAGE: usize = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_mapping_sees_another_clients_store_after_the_invalidation() {
    if !supported() {
        return;
    }
    within(30, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("f", &vec![0u8; 4 * PAGE]);
        let (a, b, c) = (ts.client().await, ts.client().await, ts.client().await);
        let ma = a
            .map_memory("f", 0..4 * PAGE as u64, Access::ReadWrite)
            .await
            .unwrap();
        let mb = b
            .map_memory("f", 0..4 * PAGE as u64, Access::ReadWrite)
            .await
            .unwrap();
        assert_eq!(ma.len(), 4 * PAGE);
        assert_eq!(ma.as_ptr() as usize % PAGE, 0, "page-aligned");
        for round in 0..40u8 {
            let at = (round as usize * 1237) % (4 * PAGE);
            // A loads (the page is shared, in A's memory), B stores (A's
            // copy is invalidated and leaves A's memory), A loads again.
            let before = ma.load::<u8>(at as u64).unwrap();
            mb.store(at as u64, &(round + 1)).unwrap();
            assert_eq!(
                ma.load::<u8>(at as u64).unwrap(),
                round + 1,
                "round {round}: A missed B's store (was {before})"
            );
            // And the other way round, on a neighbouring byte.
            let at2 = (at + 1) % (4 * PAGE);
            ma.store(at2 as u64, &(round + 100)).unwrap();
            assert_eq!(
                mb.load::<u8>(at2 as u64).unwrap(),
                round + 100,
                "round {round}: B missed A's store"
            );
        }
        // A client of the byte API sees the stores too, and the other way.
        let mc = c
            .map("f", 0..4 * PAGE as u64, Access::ReadWrite)
            .await
            .unwrap();
        let at = 39 * 1237 % (4 * PAGE);
        assert_eq!(mc.read_bytes(at as u64, 1).await.unwrap()[0], 40);
        mc.write(3 * PAGE as u64 + 9, b"xyz").await.unwrap();
        let at = 3 * PAGE as u64 + 9;
        assert_eq!(&ma.load::<[u8; 3]>(at).unwrap(), b"xyz");
        assert_eq!(&mb.read_value::<[u8; 3]>(at).await.unwrap(), b"xyz");
        assert!(ma.failure().is_none() && ma.last_fault_error().is_none());
        ma.unmap().await.unwrap();
        mb.unmap().await.unwrap();
        drop(mc);
        for cl in [a, b, c] {
            cl.close().await.unwrap();
        }
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_of_two_clients_storing_into_the_same_pages_lose_nothing() {
    if !supported() {
        return;
    }
    within(120, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("f", &vec![0u8; 4 * PAGE]);
        let (a, b) = (ts.client().await, ts.client().await);
        let ma = a
            .map_memory("f", 0..4 * PAGE as u64, Access::ReadWrite)
            .await
            .unwrap();
        let mb = b
            .map_memory("f", 0..4 * PAGE as u64, Access::ReadWrite)
            .await
            .unwrap();
        const THREADS: usize = 2;
        const ROUNDS: u64 = 300;
        // Thread t of client c owns word (c * THREADS + t) of every page,
        // and keeps in step with thread t of the other client: the pages
        // bounce between the clients while both threads of each client
        // store and load them.
        let slot = |c: usize, t: usize, page: usize| page * PAGE / 8 + c * THREADS + t;
        touch(|| {
            std::thread::scope(|s| {
                for (c, m) in [&ma, &mb].into_iter().enumerate() {
                    for t in 0..THREADS {
                        s.spawn(move || {
                            let words = m.atomic_words();
                            let deadline =
                                std::time::Instant::now() + std::time::Duration::from_secs(60);
                            for i in 1..=ROUNDS {
                                for page in 0..4 {
                                    let w = &words[slot(c, t, page)];
                                    w.store(i, Relaxed);
                                    assert_eq!(
                                        w.load(Relaxed),
                                        i,
                                        "client {c} thread {t} lost its own store"
                                    );
                                }
                                let peer = &words[slot(1 - c, t, 0)];
                                while peer.load(Relaxed) + 1 < i {
                                    assert!(
                                        std::time::Instant::now() < deadline,
                                        "client {c} thread {t} stuck in round {i}"
                                    );
                                    std::thread::yield_now();
                                }
                            }
                        });
                    }
                }
            })
        });
        for m in [&ma, &mb] {
            for c in 0..2 {
                for t in 0..THREADS {
                    for page in 0..4 {
                        let v = touch(|| {
                            m.atomic_words()[slot(c, t, page)]
                                .load(std::sync::atomic::Ordering::Relaxed)
                        });
                        assert_eq!(v, ROUNDS, "client {c} thread {t} page {page}");
                    }
                }
            }
        }
        ma.sync().await.unwrap();
        mb.sync().await.unwrap();
        let disk = ts.get("f");
        for c in 0..2 {
            for t in 0..THREADS {
                let at = 8 * slot(c, t, 3);
                assert_eq!(
                    u64::from_le_bytes(disk[at..at + 8].try_into().unwrap()),
                    ROUNDS
                );
            }
        }
        drop((ma, mb));
        a.close().await.unwrap();
        b.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_reach_the_disk_after_sync_and_later_stores_after_the_next() {
    if !supported() {
        return;
    }
    within(30, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("f", &vec![1u8; 3 * PAGE]);
        let a = ts.client().await;
        let m = a
            .map_memory("f", 0..3 * PAGE as u64, Access::ReadWrite)
            .await
            .unwrap();
        m.store(10, b"hello").unwrap();
        m.write_value(2 * PAGE as u64 + 100, &42u8).await.unwrap();
        m.sync().await.unwrap();
        let disk = ts.get("f");
        assert_eq!(&disk[10..15], b"hello");
        assert_eq!(disk[2 * PAGE + 100], 42);
        assert_eq!(disk[PAGE], 1, "untouched bytes stay");
        // After the write-back the pages are write-protected again: the next
        // store faults (locally) and is caught by the next sync.
        m.store(11, &b'E').unwrap();
        m.sync().await.unwrap();
        assert_eq!(&ts.get("f")[10..15], b"hEllo");
        // Unmapping writes back what was not synced.
        m.store(PAGE as u64 + 1, &9u8).unwrap();
        m.unmap().await.unwrap();
        assert_eq!(ts.get("f")[PAGE + 1], 9);
        a.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomics_and_plain_stores_on_one_word_agree_across_clients() {
    if !supported() {
        return;
    }
    within(30, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("f", &vec![0u8; 2 * PAGE]);
        let (a, b) = (ts.client().await, ts.client().await);
        let ma = a
            .map_memory("f", 0..2 * PAGE as u64, Access::ReadWrite)
            .await
            .unwrap();
        let mb = b
            .map_memory("f", 0..2 * PAGE as u64, Access::ReadWrite)
            .await
            .unwrap();
        // A plain store in A's memory is recalled before B's atomic runs.
        ma.store(PAGE as u64 + 8, &5u64.to_le_bytes()).unwrap();
        assert_eq!(mb.fetch_add(PAGE as u64 + 8, 10).await.unwrap(), 5);
        let word = |m: &rmmap_tokio::MemoryMapping| {
            u64::from_le_bytes(m.load::<[u8; 8]>(PAGE as u64 + 8).unwrap())
        };
        assert_eq!(word(&ma), 15);
        assert_eq!(word(&mb), 15);
        assert_eq!(
            ma.compare_exchange(PAGE as u64 + 8, 15, 20).await.unwrap(),
            Ok(15)
        );
        assert_eq!(
            mb.compare_exchange(PAGE as u64 + 8, 15, 30).await.unwrap(),
            Err(20)
        );
        assert_eq!(mb.swap(PAGE as u64 + 8, 7).await.unwrap(), 20);
        assert_eq!(word(&ma), 7);
        assert_eq!(touch(|| ma.atomic_words()[PAGE / 8 + 1].load(Relaxed)), 7);
        assert!(matches!(
            ma.fetch_add(PAGE as u64 + 4, 1).await,
            Err(OpError::Misaligned(_))
        ));
        drop((ma, mb));
        a.close().await.unwrap();
        b.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(unsafe_code)] // the unsafe slice views, under their contract
async fn a_read_only_memory_mapping_reads_and_refuses_mutable_access() {
    if !supported() {
        return;
    }
    within(30, async {
        let ts = TestServer::start(|c| c).await;
        let content: Vec<u8> = (0..3 * PAGE).map(|i| (i % 251) as u8).collect();
        ts.put("f", &content);
        let a = ts.client().await;
        // Not page-aligned at the end: the slice is exactly the range.
        let mut m = a
            .map_memory("f", PAGE as u64..3 * PAGE as u64 - 5, Access::ReadOnly)
            .await
            .unwrap();
        assert_eq!(m.len(), 2 * PAGE - 5);
        let mut all = vec![0u8; m.len()];
        m.read(0, &mut all).await.unwrap();
        assert_eq!(all, content[PAGE..3 * PAGE - 5]);
        // SAFETY: nobody writes the file while the slice lives.
        assert_eq!(touch(|| unsafe { m.as_slice() }.to_vec()), all);
        // SAFETY: refused before any slice is made.
        assert!(matches!(
            unsafe { m.as_mut_slice() },
            Err(OpError::ReadOnly)
        ));
        assert!(matches!(m.store(0, &1u8), Err(OpError::ReadOnly)));
        assert!(matches!(
            m.write_value(0, &1u8).await,
            Err(OpError::ReadOnly)
        ));
        assert!(m.as_mut_ptr().is_err());
        assert!(matches!(m.fetch_add(0, 1).await, Err(OpError::ReadOnly)));
        // A range that does not start on a page boundary is refused.
        let e = a
            .map_memory("f", 100..PAGE as u64, Access::ReadOnly)
            .await
            .unwrap_err();
        assert!(
            matches!(e, MemoryError::Map(OpError::Unsupported(_))),
            "{e}"
        );
        drop(m);
        a.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pages_larger_than_the_os_page_move_whole() {
    if !supported() {
        return;
    }
    within(30, async {
        let big = 4 * PAGE;
        let ts = TestServer::start(|c| c.page_size(big as u32)).await;
        ts.put("f", &vec![0u8; 2 * big]);
        let (a, b) = (ts.client().await, ts.client().await);
        let ma = a
            .map_memory("f", 0..2 * big as u64, Access::ReadWrite)
            .await
            .unwrap();
        let mb = b
            .map_memory("f", 0..2 * big as u64, Access::ReadWrite)
            .await
            .unwrap();
        assert_eq!(ma.page_size(), big);
        // Stores in different OS pages of one server page, from both sides.
        for round in 1..=20u8 {
            let at = (round as usize % 4) * PAGE + round as usize;
            let (at, big) = (at as u64, big as u64);
            ma.store(at, &round).unwrap();
            mb.store(big + at, &round).unwrap();
            assert_eq!(mb.load::<u8>(at).unwrap(), round);
            assert_eq!(ma.load::<u8>(big + at).unwrap(), round);
        }
        ma.sync().await.unwrap();
        mb.sync().await.unwrap();
        let disk = ts.get("f");
        assert_eq!((disk[3 * PAGE + 19], disk[big + 3 * PAGE + 19]), (19, 19));
        drop((ma, mb));
        a.close().await.unwrap();
        b.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_page_size_below_the_os_page_size_is_refused_clearly() {
    if !supported() {
        return;
    }
    within(30, async {
        let ts = TestServer::start(|c| c.page_size(512)).await;
        ts.put("f", &vec![0u8; PAGE]);
        let a = ts.client().await;
        let e = a
            .map_memory("f", 0..PAGE as u64, Access::ReadOnly)
            .await
            .unwrap_err();
        assert!(
            matches!(e, MemoryError::PageSize { server: 512, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("--page-size"), "{e}");
        a.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_current_thread_runtime_is_refused_rather_than_left_to_hang() {
    if !supported() {
        return;
    }
    let ts = TestServer::start(|c| c).await;
    ts.put("f", &vec![0u8; PAGE]);
    let a = ts.client().await;
    let e = a
        .map_memory("f", 0..PAGE as u64, Access::ReadOnly)
        .await
        .unwrap_err();
    assert!(matches!(e, MemoryError::Runtime), "{e}");
    a.close().await.unwrap();
    ts.server.shutdown().await.unwrap();
}
