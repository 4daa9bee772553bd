//! The default fault mode (`FaultMode::Report`): an access whose page cannot
//! be served raises no signal; `MemoryMapping::checked` (and `load` /
//! `store`, which are checked) returns the failure as an error, and the
//! mapping works again once the client is back (issue 15).

mod memory_common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use memory_common::{Gate, TestServer, client_config, supported, touch, within};
use rmmap_tokio::{Access, Client, FaultMode, MemoryMapping};

const PAGE: usize = 4096;

fn pattern() -> Vec<u8> {
    (0..4 * PAGE).map(|i| (i % 251) as u8 | 1).collect()
}

/// A client through `gate` that gives up after a second without the
/// server, with a memory mapping of all of "f".
async fn mapped(gate: &Gate) -> (Client, MemoryMapping) {
    let mut config = client_config();
    config.give_up_after = Some(Duration::from_secs(1));
    let client = Client::connect(&gate.addr, config).await.unwrap();
    let m = client
        .map_memory("f", 0..4 * PAGE as u64, Access::ReadWrite)
        .await
        .unwrap();
    (client, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_that_cannot_be_served_is_an_error_from_checked_and_the_mapping_recovers() {
    if !supported() {
        return;
    }
    within(60, async {
        let ts = TestServer::start(|c| c).await;
        let original = pattern();
        ts.put("f", &original);
        let gate = Gate::start(ts.addr.clone()).await;
        let (client, m) = mapped(&gate).await;
        assert_eq!(m.fault_mode(), FaultMode::Report, "the default");
        // Out of reach (before any page is in memory) for longer than give_up_after: the load of a page not
        // in memory waits, then gets zeros that are not the file's, and
        // `checked` says so. No signal: this test process lives on.
        gate.close();
        let at = 2 * PAGE + 1;
        let r = touch(|| m.checked(|m| m.atomic_bytes()[at].load(Relaxed)));
        assert!(r.is_err(), "a failed fault must be an error, got {r:?}");
        assert!(m.last_fault_error().is_some());
        assert!(
            m.failure().is_none(),
            "one failed fault does not fail the mapping"
        );
        // A typed store into another absent page fails the same way.
        let r = touch(|| m.store(3 * PAGE as u64 + 5, &0xEEu8));
        assert!(r.is_err(), "{r:?}");
        // Back in reach: the zeros leave, the page is fetched, and the same
        // closure succeeds with the file's byte.
        gate.open();
        let deadline = Instant::now() + Duration::from_secs(20);
        let v = loop {
            match touch(|| m.checked(|m| m.atomic_bytes()[at].load(Relaxed))) {
                Ok(v) => break v,
                Err(e) => {
                    assert!(Instant::now() < deadline, "never recovered: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        assert_eq!(v, original[at], "the file's byte, not the filler's");
        assert_eq!(
            m.load::<u8>(3 * PAGE as u64 + 5).unwrap(),
            original[3 * PAGE + 5]
        );
        // The store that was reported failed went nowhere; a new one counts.
        m.store(3 * PAGE as u64 + 6, &0x42u8).unwrap();
        m.sync().await.unwrap();
        let disk = ts.get("f");
        assert_eq!(disk[3 * PAGE + 5], original[3 * PAGE + 5]);
        assert_eq!(disk[3 * PAGE + 6], 0x42);
        m.unmap().await.unwrap();
        client.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

/// A store to a page the client holds read-only cannot be taken anywhere
/// while the server is out of reach: the mapping fails for good, its memory
/// reads zeros (no SIGBUS), and `checked` fails at once from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_taken_fails_the_mapping_without_a_signal() {
    if !supported() {
        return;
    }
    within(60, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("f", &pattern());
        let gate = Gate::start(ts.addr.clone()).await;
        let (client, m) = mapped(&gate).await;
        assert_ne!(
            m.load::<u8>(9).unwrap(),
            0,
            "page 0 is in memory, read-only"
        );
        gate.close();
        let r = touch(|| m.store(9, &7u8));
        assert!(r.is_err(), "{r:?}");
        assert!(m.failure().is_some(), "the mapping failed for good");
        // Its memory is not the file's any more: zeros, and the retried
        // store landed there, where nobody else sees it.
        let after = touch(|| m.atomic_bytes()[100].load(Relaxed));
        assert_eq!(after, 0, "a failed mapping reads zeros");
        assert!(m.checked(|_| ()).is_err(), "and checked fails at once");
        assert_eq!(ts.get("f")[9], pattern()[9], "the store went nowhere");
        gate.open();
        drop(m);
        drop(client);
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

/// A session lost with an unsynced store (the server ends it while the
/// client is cut off): the loss is the error of the check that runs into it,
/// once, naming the page; the access goes on with the server's bytes and
/// later checks succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_store_is_reported_once_by_checked_and_the_mapping_goes_on() {
    if !supported() {
        return;
    }
    within(60, async {
        let ts = TestServer::start(|c| c.lease(Duration::from_millis(1000))).await;
        ts.put("f", &vec![0u8; 4 * PAGE]);
        let gate = Gate::start(ts.addr.clone()).await;
        let client = Client::connect(&gate.addr, client_config()).await.unwrap();
        let m = client
            .map_memory("f", 0..4 * PAGE as u64, Access::ReadWrite)
            .await
            .unwrap();
        touch(|| m.store(7, &9u8)).unwrap();
        gate.close();
        // The server ends the session once its lease has run out.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        gate.open();
        let r = touch(|| m.checked(|m| m.atomic_bytes()[7].load(Relaxed)));
        match r {
            Err(rmmap_core::client::OpError::SessionLost(l)) => {
                assert_eq!(l.pages, vec![0], "{l:?}")
            }
            other => panic!("the loss must be reported: {other:?}"),
        }
        assert_eq!(touch(|| m.load::<u8>(7)).unwrap(), 0, "the server's byte");
        touch(|| m.store(8, &5u8)).unwrap();
        m.sync().await.unwrap();
        assert_eq!(&ts.get("f")[7..9], &[0, 5]);
        m.unmap().await.unwrap();
        client.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

/// Async tasks that touch mapped memory directly (not through `load` /
/// `store`, which step off the worker) can block every worker of the
/// runtime in faults, and then the client's driver, which would serve them,
/// cannot run. The fault thread notices that the driver, once woken, does
/// not turn, and fails those faults after a few seconds instead of leaving
/// the runtime hung; the mapping works again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_that_block_every_worker_fail_instead_of_hanging_the_runtime() {
    if !supported() {
        return;
    }
    within(60, async {
        let ts = TestServer::start(|c| c).await;
        let original = pattern();
        ts.put("f", &original);
        let client = ts.client().await;
        let m = std::sync::Arc::new(
            client
                .map_memory("f", 0..4 * PAGE as u64, Access::ReadOnly)
                .await
                .unwrap(),
        );
        // Both workers wait at the barrier, then fault at once.
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let tasks: Vec<_> = [1usize, 2]
            .into_iter()
            .map(|p| {
                let (m, barrier) = (m.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait();
                    m.atomic_bytes()[p * PAGE + 1].load(Relaxed)
                })
            })
            .collect();
        let started = Instant::now();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 0, "a failed fault reads the filler");
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(4),
            "failed only once stalled: {waited:?}"
        );
        let e = m.last_fault_error().expect("the faults failed");
        assert_eq!(e.kind(), "unsupported", "{e}");
        assert!(e.to_string().contains("driver"), "{e}");
        // The runtime runs again, and so does the mapping.
        for p in [1usize, 2] {
            let v = touch(|| m.checked(|m| m.atomic_bytes()[p * PAGE + 1].load(Relaxed)));
            assert_eq!(v.unwrap(), original[p * PAGE + 1]);
        }
        drop(m);
        client.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}
