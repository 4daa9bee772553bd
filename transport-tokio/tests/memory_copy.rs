//! Copying reads and writes of a memory mapping (`MemoryMapping::read` and
//! `write`): the same coherent bytes as loads and stores, and a failure is
//! an error where a load would raise SIGBUS.

mod memory_common;

use std::time::Duration;

use memory_common::{TestServer, client_config, supported, within};
use rmmap_tokio::{Access, Client, OpError};

const PAGE: usize = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_see_other_clients_writes_and_other_clients_see_copies() {
    if !supported() {
        return;
    }
    within(30, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("f", &vec![7u8; 4 * PAGE]);
        let (a, b) = (ts.client().await, ts.client().await);
        let ma = a
            .map_memory("f", 0..4 * PAGE as u64, Access::ReadWrite)
            .await
            .unwrap();
        let mb = b
            .map("f", 0..4 * PAGE as u64, Access::ReadWrite)
            .await
            .unwrap();
        for round in 0..20u8 {
            // Across a page boundary, both ways.
            let at = (PAGE - 2 + round as usize * 997) % (3 * PAGE);
            ma.write(at as u64, &[round; 5]).await.unwrap();
            assert_eq!(mb.read_bytes(at as u64, 5).await.unwrap(), vec![round; 5]);
            mb.write(at as u64 + 1, &[round + 100; 3]).await.unwrap();
            let mut got = [0u8; 5];
            ma.read(at as u64, &mut got).await.unwrap();
            assert_eq!(got, [round, round + 100, round + 100, round + 100, round]);
            // A load agrees with the copy.
            assert_eq!(ma.load::<u8>(at as u64 + 1).unwrap(), round + 100);
        }
        let mut whole = vec![0u8; 4 * PAGE];
        ma.read(0, &mut whole).await.unwrap();
        assert_eq!(whole[4 * PAGE - 1], 7);
        assert!(matches!(
            ma.read(4 * PAGE as u64 - 1, &mut [0u8; 2]).await,
            Err(OpError::OutOfRange { .. })
        ));
        ma.unmap().await.unwrap();
        drop(mb);
        a.close().await.unwrap();
        b.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_fails_with_an_error_where_a_load_would_raise_sigbus() {
    if !supported() {
        return;
    }
    within(30, async {
        let ts = TestServer::start(|c| c).await;
        // Beyond what read-ahead after the first read could have fetched.
        const PAGES: usize = 4096;
        ts.put("f", &vec![1u8; PAGES * PAGE]);
        let config = rmmap_tokio::ClientConfig {
            give_up_after: Some(Duration::from_millis(500)),
            ..client_config()
        };
        let a = Client::connect(&ts.addr, config).await.unwrap();
        let ma = a
            .map_memory("f", 0..(PAGES * PAGE) as u64, Access::ReadWrite)
            .await
            .unwrap();
        let mut first = [0u8; 4];
        ma.read(0, &mut first).await.unwrap();
        assert_eq!(first, [1; 4]);
        // The server goes away: pages not in memory cannot be had.
        ts.server.shutdown().await.unwrap();
        let e = ma
            .read(((PAGES - 1) * PAGE) as u64, &mut [0u8; 4])
            .await
            .unwrap_err();
        assert!(
            matches!(e, OpError::Disconnected(_) | OpError::Closed(_)),
            "{e:?}"
        );
        let e = ma
            .write(((PAGES - 2) * PAGE) as u64, b"x")
            .await
            .unwrap_err();
        assert!(
            matches!(e, OpError::Disconnected(_) | OpError::Closed(_)),
            "{e:?}"
        );
        assert!(ma.last_fault_error().is_none(), "no fault raised SIGBUS");
        drop(ma);
    })
    .await;
}
