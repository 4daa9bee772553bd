//! Basic operations over real loopback TCP: map, read, write, sync, unmap,
//! create and set_len, atomics, close.

mod common;

use std::time::Duration;

use common::{TestServer, within};
use rmmap_tokio::{Access, AtomicOp, ErrorCode, MapOptions, OpError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_see_each_others_writes_and_sync_reaches_the_disk() {
    within(20, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("f", &vec![0u8; 3 * 4096]);
        let a = ts.client().await;
        let b = ts.client().await;
        let ma = a.map("f", 0..3 * 4096, Access::ReadWrite).await.unwrap();
        let mb = b.map("f", 0..3 * 4096, Access::ReadWrite).await.unwrap();
        assert_eq!(ma.len(), 3 * 4096);
        assert_eq!(&mb.read_bytes(4090, 10).await.unwrap()[..], &[0u8; 10]);
        ma.write(4090, b"helloworld").await.unwrap();
        assert_eq!(&mb.read_bytes(4090, 10).await.unwrap()[..], b"helloworld");
        mb.write(4095, b"X").await.unwrap();
        let mut buf = [0u8; 10];
        ma.read(4090, &mut buf).await.unwrap();
        assert_eq!(&buf, b"helloXorld");
        ma.sync().await.unwrap();
        assert_eq!(&ts.get("f")[4090..4100], b"helloXorld");
        ma.unmap().await.unwrap();
        mb.unmap().await.unwrap();
        a.close().await.unwrap();
        b.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_set_len_and_atomics() {
    within(20, async {
        let ts = TestServer::start(|c| c).await;
        let c = ts.client().await;
        assert_eq!(c.set_len("new/dir/file", 100, true).await.unwrap(), 100);
        assert_eq!(ts.get("new/dir/file").len(), 100);
        let m = c
            .map_with(
                "made",
                0..16,
                MapOptions {
                    access: Access::ReadWrite,
                    create: true,
                },
            )
            .await
            .unwrap();
        assert_eq!(m.atomic(8, AtomicOp::FetchAdd(5)).await.unwrap(), (0, true));
        assert_eq!(m.atomic(8, AtomicOp::FetchAdd(5)).await.unwrap(), (5, true));
        assert_eq!(
            m.atomic(
                8,
                AtomicOp::CompareExchange {
                    expected: 1,
                    new: 2
                }
            )
            .await
            .unwrap(),
            (10, false)
        );
        m.sync().await.unwrap();
        assert_eq!(ts.get("made")[8..16], 10u64.to_le_bytes());
        drop(m);
        c.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_mapping_has_the_atomic_helpers_and_server_codes_match_without_rmmap_core() {
    within(20, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("f", &[0u8; 16]);
        let c = ts.client().await;
        let m = c.map("f", 0..16, Access::ReadWrite).await.unwrap();
        assert_eq!(m.fetch_add(8, 5).await.unwrap(), 0);
        assert_eq!(m.swap(8, 7).await.unwrap(), 5);
        assert_eq!(m.compare_exchange(8, 7, 9).await.unwrap(), Ok(7));
        assert_eq!(m.compare_exchange(8, 7, 1).await.unwrap(), Err(9));
        assert!(matches!(m.swap(3, 1).await, Err(OpError::Misaligned(_))));
        assert_eq!(m.read_bytes(8, 8).await.unwrap()[..], 9u64.to_le_bytes());
        // `ErrorCode` comes from this crate.
        let e = c.map("missing", 0..1, Access::ReadOnly).await.unwrap_err();
        assert!(
            matches!(
                e,
                OpError::Server {
                    code: ErrorCode::NotFound,
                    ..
                }
            ),
            "{e}"
        );
        drop(m);
        c.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn everything_can_run_on_one_current_thread_runtime_as_a_simulation_would() {
    use rmmap_tokio::{Client, ServeOptions, Server, TcpConnector};
    within(20, async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), [0u8; 4096]).unwrap();
        let config = rmmap_tokio::ServerConfig::new(dir.path())
            .restart_grace(Some(std::time::Duration::ZERO));
        let store = config.open_store().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let options = ServeOptions {
            dedicated_thread: false,
            seed: Some([7; 32]),
            ..ServeOptions::default()
        };
        let server = Server::serve(listener, config.core, store, options).unwrap();
        let addr = server.local_addr().to_string();
        let a = Client::connect_seeded(TcpConnector, &addr, common::client_config(), [1; 32])
            .await
            .unwrap();
        let b = Client::connect_seeded(TcpConnector, &addr, common::client_config(), [2; 32])
            .await
            .unwrap();
        let ma = a.map("f", 0..4096, Access::ReadWrite).await.unwrap();
        let mb = b.map("f", 0..4096, Access::ReadOnly).await.unwrap();
        ma.write(10, b"sim").await.unwrap();
        assert_eq!(&mb.read_bytes(10, 3).await.unwrap()[..], b"sim");
        drop((ma, mb));
        a.close().await.unwrap();
        b.close().await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(
            &std::fs::read(dir.path().join("f")).unwrap()[10..13],
            b"sim"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_read_through_a_tiny_output_limit_pauses_and_resumes() {
    within(60, async {
        // With 64 KiB of output allowed, the server pauses this connection's
        // input again and again while read-ahead replies drain.
        let ts = TestServer::start(|mut c| {
            c.core.output_soft_limit = 64 * 1024;
            c
        })
        .await;
        let len = 16usize << 20;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        ts.put("big", &data);
        let c = ts.client().await;
        let other = ts.client().await;
        let m = c.map("big", 0..len as u64, Access::ReadOnly).await.unwrap();
        let o = other.map("big", 0..4096, Access::ReadOnly).await.unwrap();
        let mut pos = 0u64;
        while pos < len as u64 {
            let b = m.read_bytes(pos, 1 << 20).await.unwrap();
            assert_eq!(
                &b[..],
                &data[pos as usize..pos as usize + (1 << 20)],
                "at {pos}"
            );
            // Another client is served meanwhile.
            assert_eq!(o.read_bytes(0, 4).await.unwrap()[..], data[..4]);
            pos += 1 << 20;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_mapping_waits_for_another_clients_write_without_polling() {
    within(30, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("flag", &[0u8; 64]);
        let waiter = ts.client().await;
        let writer = ts.client().await;
        let w = waiter.map("flag", 0..64, Access::ReadOnly).await.unwrap();
        let m = writer.map("flag", 0..64, Access::ReadWrite).await.unwrap();
        // Nothing changes: the timeout ends the wait.
        let t = std::time::Instant::now();
        assert_eq!(
            w.wait_while(8, 0, Duration::from_millis(100))
                .await
                .unwrap(),
            None
        );
        assert!(t.elapsed() >= Duration::from_millis(100));
        // Ten hand-overs: each write wakes the waiter with its value.
        for round in 1..=10u64 {
            let wait = {
                let w = w.clone();
                tokio::spawn(
                    async move { w.wait_while(8, round - 1, Duration::from_secs(10)).await },
                )
            };
            tokio::time::sleep(Duration::from_millis(5)).await;
            m.write(8, &round.to_le_bytes()).await.unwrap();
            assert_eq!(wait.await.unwrap().unwrap(), Some(round));
        }
        // A value that already differs returns at once.
        assert_eq!(
            w.wait_while(8, 0, Duration::from_secs(10)).await.unwrap(),
            Some(10)
        );
        assert!(matches!(
            w.wait_while(4, 0, Duration::ZERO).await,
            Err(OpError::Misaligned(4))
        ));
        drop((w, m));
        waiter.close().await.unwrap();
        writer.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}
