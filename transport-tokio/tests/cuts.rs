//! A proxy between the clients and the server cuts every connection at
//! random moments while the clients write: they reconnect, resume their
//! sessions and carry on, and no write is lost or applied twice.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::proxy::Proxy;
use common::{TestServer, client_config, within};
use rmmap_tokio::{Access, AtomicOp, Client, ClientEvent};

const CLIENTS: u64 = 3;
const SLOTS: u64 = 200;
const PAGE: u64 = 4096;
const LEN: u64 = 3 * PAGE;

/// Client `c`'s slot `j`: the clients' slots interleave on the first two
/// pages, so nearly every write recalls a page from someone.
fn slot(c: u64, j: u64) -> u64 {
    (j * CLIENTS + c) * 8
}

/// Client `c`'s counter, on the third page.
fn counter(c: u64) -> u64 {
    2 * PAGE + c * 8
}

fn value(c: u64, j: u64) -> u64 {
    ((c + 1) << 32) | (j + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_connections_lose_no_write_and_apply_none_twice() {
    within(120, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("log", &vec![0u8; LEN as usize]);
        let proxy = Proxy::start(ts.addr.clone()).await;
        let done = Arc::new(AtomicBool::new(false));

        // Connect first: a cut during the very first handshake is an error
        // by design (Client::connect reports it).
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(Client::connect(&proxy.addr, client_config()).await.unwrap());
        }
        let cutter = {
            let done = done.clone();
            let proxy_cut = Arc::new(proxy);
            let p = proxy_cut.clone();
            let task = tokio::spawn(async move {
                let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
                let mut cuts = 0;
                while !done.load(Ordering::Acquire) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    tokio::time::sleep(Duration::from_millis(5 + rng % 35)).await;
                    if p.cut() > 0 {
                        cuts += 1;
                    }
                }
                cuts
            });
            (task, proxy_cut)
        };

        let mut writers = Vec::new();
        for (c, client) in (0..CLIENTS).zip(clients) {
            let mut events = client.events();
            writers.push(tokio::spawn(async move {
                let m = client.map("log", 0..LEN, Access::ReadWrite).await.unwrap();
                for j in 0..SLOTS {
                    m.write(slot(c, j), &value(c, j).to_le_bytes())
                        .await
                        .unwrap();
                    // Each add is applied exactly once: the previous values
                    // count up without a gap or a repeat.
                    let (previous, applied) =
                        m.atomic(counter(c), AtomicOp::FetchAdd(1)).await.unwrap();
                    assert!(applied);
                    assert_eq!(previous, j, "client {c}: add {j} saw {previous}");
                }
                m.sync().await.unwrap();
                let mut seen = Vec::new();
                loop {
                    match events.try_recv() {
                        Ok(ev) => seen.push(ev),
                        // A slow watcher misses the oldest events, not the newest.
                        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
                        Err(_) => break,
                    }
                }
                client.close().await.unwrap();
                seen
            }));
        }
        let mut all_events = Vec::new();
        for w in writers {
            all_events.extend(w.await.unwrap());
        }
        done.store(true, Ordering::Release);
        let cuts = cutter.0.await.unwrap();
        assert!(
            cuts >= 5,
            "the proxy cut only {cuts} times; the test proves nothing"
        );
        assert!(
            !all_events
                .iter()
                .any(|e| matches!(e, ClientEvent::SessionLost { .. })),
            "a session was lost: {all_events:?}"
        );
        assert!(
            all_events
                .iter()
                .any(|e| matches!(e, ClientEvent::Connected { resumed: true }))
        );

        // A fresh client, straight to the server, and the file itself agree.
        let check = ts.client().await;
        let m = check.map("log", 0..LEN, Access::ReadOnly).await.unwrap();
        let data = m.read_bytes(0, LEN).await.unwrap();
        let disk = ts.get("log");
        for bytes in [&data[..], &disk[..]] {
            for c in 0..CLIENTS {
                for j in 0..SLOTS {
                    let at = slot(c, j) as usize;
                    let got = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
                    assert_eq!(got, value(c, j), "client {c} slot {j}");
                }
                let at = counter(c) as usize;
                assert_eq!(
                    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()),
                    SLOTS,
                    "client {c} counter"
                );
            }
        }
        eprintln!("{cuts} cuts");
    })
    .await;
}
