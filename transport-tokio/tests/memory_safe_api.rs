//! The safe API of a memory mapping: typed copies in and out, range checks,
//! loads and stores from a Tokio worker, and the rules it enforces
//! (no overlapping mappings of one file by one client).

mod memory_common;

use std::time::{Duration, Instant};

use memory_common::{TestServer, supported, within};
use rmmap_tokio::{Access, MemoryError, OpError};

const PAGE: usize = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_values_round_trip_across_pages_and_clients() {
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
        // A value straddling the page boundary, at an odd offset.
        let across = PAGE as u64 - 5;
        let record: [u32; 4] = [1, 0xdead_beef, 3, u32::MAX];
        ma.write_value(across, &record).await.unwrap();
        assert_eq!(mb.read_value::<[u32; 4]>(across).await.unwrap(), record);
        assert_eq!(mb.load::<[u32; 4]>(across).unwrap(), record);
        // Aligned words go through 8-byte atomics, and agree with the
        // server-side atomics on the same word.
        mb.store(16, &[7u64, 9u64]).unwrap();
        assert_eq!(ma.fetch_add(16, 1).await.unwrap(), 7);
        assert_eq!(ma.load::<[u64; 2]>(16).unwrap(), [8, 9]);
        assert_eq!(mb.read_value::<u64>(24).await.unwrap(), 9);
        ma.sync().await.unwrap();
        let disk = ts.get("f");
        assert_eq!(&disk[16..24], &8u64.to_ne_bytes());
        assert_eq!(&disk[PAGE - 1..PAGE + 3], &0xdead_beefu32.to_ne_bytes());
        drop((ma, mb));
        a.close().await.unwrap();
        b.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_typed_accessor_checks_its_range_first() {
    if !supported() {
        return;
    }
    within(30, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("f", &vec![0u8; PAGE]);
        let a = ts.client().await;
        let m = a
            .map_memory("f", 0..PAGE as u64 - 3, Access::ReadWrite)
            .await
            .unwrap();
        let end = m.len() as u64;
        for offset in [end - 7, end, u64::MAX - 3, u64::MAX] {
            let out = |r: Option<OpError>| matches!(r, Some(OpError::OutOfRange { .. }));
            assert!(out(m.load::<u64>(offset).err()), "load at {offset}");
            assert!(out(m.store(offset, &1u64).err()), "store at {offset}");
            assert!(
                out(m.read_value::<u64>(offset).await.err()),
                "read at {offset}"
            );
            assert!(
                out(m.write_value(offset, &1u64).await.err()),
                "write at {offset}"
            );
        }
        // The last whole value fits.
        m.store(end - 8, &u64::MAX).unwrap();
        assert_eq!(m.load::<u64>(end - 8).unwrap(), u64::MAX);
        let e = m.load::<u64>(end - 7).unwrap_err();
        assert!(e.to_string().contains(&end.to_string()), "{e}");
        drop(m);
        a.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

/// One worker: a fault blocking it would leave nobody to run the driver
/// that brings the page, unless `load`/`store` move its tasks away first.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn loads_and_stores_on_the_only_worker_do_not_stall_the_runtime() {
    if !supported() {
        return;
    }
    within(30, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("f", &vec![5u8; 4 * PAGE]);
        let (a, b) = (ts.client().await, ts.client().await);
        let ma = a
            .map_memory("f", 0..4 * PAGE as u64, Access::ReadWrite)
            .await
            .unwrap();
        let mb = b
            .map("f", 0..4 * PAGE as u64, Access::ReadWrite)
            .await
            .unwrap();
        let on_worker = tokio::spawn(async move {
            for p in 0..4u64 {
                let at = p * PAGE as u64 + 1;
                assert_eq!(ma.load::<u8>(at).unwrap(), 5);
                ma.store(at, &(p as u8)).unwrap();
            }
            ma
        });
        let ma = on_worker.await.unwrap();
        for p in 0..4u64 {
            let got = mb.read_bytes(p * PAGE as u64 + 1, 1).await.unwrap();
            assert_eq!(got[0], p as u8);
        }
        drop((ma, mb));
        a.close().await.unwrap();
        b.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_mappings_of_one_file_by_one_client_are_refused() {
    if !supported() {
        return;
    }
    within(30, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("f", &vec![0u8; 4 * PAGE]);
        ts.put("g", &vec![0u8; 4 * PAGE]);
        let a = ts.client().await;
        let first = a
            .map_memory("f", PAGE as u64..3 * PAGE as u64, Access::ReadWrite)
            .await
            .unwrap();
        first.store(PAGE as u64, &42u64).unwrap();
        // Another memory mapping over part of it.
        let e = a
            .map_memory("f", 2 * PAGE as u64..4 * PAGE as u64, Access::ReadOnly)
            .await
            .unwrap_err();
        match &e {
            MemoryError::Overlap { other, start, .. } => {
                assert_eq!((*other, *start), (first.id(), 2 * PAGE as u64));
            }
            e => panic!("expected Overlap, got {e}"),
        }
        assert!(e.to_string().contains("overlap"), "{e}");
        // A plain mapping already over the range counts too.
        let plain = a
            .map("g", 0..PAGE as u64 + 1, Access::ReadOnly)
            .await
            .unwrap();
        let e = a
            .map_memory("g", PAGE as u64..2 * PAGE as u64, Access::ReadOnly)
            .await
            .unwrap_err();
        assert!(matches!(e, MemoryError::Overlap { .. }), "{e}");
        // And a plain mapping over a memory mapping's range, through any
        // spelling of the path, is refused before anything is sent.
        for path in ["f", "./f", "d/../f"] {
            let e = a
                .map(path, 2 * PAGE as u64..2 * PAGE as u64 + 8, Access::ReadOnly)
                .await
                .unwrap_err();
            match &e {
                OpError::Overlap { other, .. } => assert_eq!(*other, first.id()),
                e => panic!("expected Overlap, got {e}"),
            }
            assert_eq!(e.kind(), "unsupported");
        }
        // Touching ranges, other files and other clients are fine.
        let next = a
            .map_memory("f", 3 * PAGE as u64..4 * PAGE as u64, Access::ReadOnly)
            .await
            .unwrap();
        let other_client = ts.client().await;
        let shared = other_client
            .map_memory("f", 0..4 * PAGE as u64, Access::ReadOnly)
            .await
            .unwrap();
        // The refused mapping took nothing from the first one.
        assert_eq!(first.load::<u64>(PAGE as u64).unwrap(), 42);
        first.sync().await.unwrap();
        assert_eq!(shared.load::<u64>(2 * PAGE as u64).unwrap(), 42);
        assert_eq!(&ts.get("f")[2 * PAGE..2 * PAGE + 8], &42u64.to_ne_bytes());
        drop((first, next, shared, plain));
        a.close().await.unwrap();
        other_client.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_while_wakes_on_another_clients_change_and_times_out_otherwise() {
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
        let word = PAGE as u64 + 8;
        // Nothing changes: a timeout, not an error.
        let t = Instant::now();
        assert_eq!(
            ma.wait_while(word, 0, Duration::from_millis(50)).unwrap(),
            None
        );
        assert!(t.elapsed() >= Duration::from_millis(50));
        // A's thread waits; B changes the word, by a store, then by a
        // server-side atomic. Each wakes it with the new value.
        let rt = tokio::runtime::Handle::current();
        for (round, by_atomic) in [(1u64, false), (2, true)] {
            let (got, waited) = tokio::task::block_in_place(|| {
                std::thread::scope(|s| {
                    let waiter = s.spawn(|| {
                        let t = Instant::now();
                        let got = ma.wait_while(word, round - 1, Duration::from_secs(10));
                        (got, t.elapsed())
                    });
                    std::thread::sleep(Duration::from_millis(100));
                    if by_atomic {
                        rt.block_on(mb.fetch_add(word, 1)).unwrap();
                    } else {
                        mb.store(word, &round.to_le()).unwrap();
                    }
                    waiter.join().unwrap()
                })
            });
            eprintln!("round {round}: woken after {waited:?} (100 ms of it before the change)");
            assert_eq!(got.unwrap(), Some(round), "round {round}");
            assert!(waited < Duration::from_secs(5), "woken late: {waited:?}");
        }
        assert!(matches!(
            ma.wait_while(PAGE as u64 + 4, 0, Duration::ZERO),
            Err(OpError::Misaligned(_))
        ));
        assert!(matches!(
            ma.wait_while(2 * PAGE as u64, 0, Duration::ZERO),
            Err(OpError::OutOfRange { .. })
        ));
        drop((ma, mb));
        a.close().await.unwrap();
        b.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}
