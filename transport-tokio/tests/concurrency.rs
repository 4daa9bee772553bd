//! Several clients in one process write and read the same pages at once over
//! loopback TCP: every read sees the latest completed write.

mod common;

use std::sync::Arc;

use common::history::{History, Record};
use common::{TestServer, within};
use rmmap_tokio::Access;

const CLIENTS: u64 = 4;
const TASKS_PER_CLIENT: u64 = 2;
const OPS: u64 = 150;
/// Eight words on each of three pages: tasks collide on pages and on words.
const SLOTS: u64 = 24;
const PAGE: u64 = 4096;

fn slot_offset(slot: u64) -> u64 {
    (slot % 3) * PAGE + (slot / 3) * 8 + 4000 - 64
}

/// A small deterministic generator: the schedule differs per task, the
/// assertions do not depend on it.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_read_sees_the_latest_completed_write() {
    common::init_tracing();
    within(60, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("shared", &vec![0u8; 4 * PAGE as usize]);
        let history = Arc::new(History::default());
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let client = ts.client().await;
            let m = client
                .map("shared", 0..4 * PAGE, Access::ReadWrite)
                .await
                .unwrap();
            for t in 0..TASKS_PER_CLIENT {
                let (m, h) = (m.clone(), history.clone());
                let id = c * TASKS_PER_CLIENT + t;
                tasks.push(tokio::spawn(async move {
                    let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (id + 1);
                    for i in 0..OPS {
                        let slot = next(&mut rng) % SLOTS;
                        let at = slot_offset(slot);
                        let write = next(&mut rng) % 3 == 0;
                        let start = h.tick();
                        let value = if write {
                            let v = ((id + 1) << 32) | (i + 1);
                            m.write(at, &v.to_le_bytes()).await.unwrap();
                            v
                        } else {
                            let b = m.read_bytes(at, 8).await.unwrap();
                            u64::from_le_bytes(b[..].try_into().unwrap())
                        };
                        let end = h.tick();
                        h.record(Record {
                            slot,
                            write,
                            value,
                            start,
                            end,
                        });
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(history.len() as u64, CLIENTS * TASKS_PER_CLIENT * OPS);
        let bad = history.violations(0);
        assert!(
            bad.is_empty(),
            "{} stale reads, first: {}",
            bad.len(),
            bad[0]
        );
    })
    .await;
}

#[test]
fn the_checker_catches_stale_and_invented_reads() {
    let h = History::default();
    let rec = |write, value, start, end| Record {
        slot: 0,
        write,
        value,
        start,
        end,
    };
    h.record(rec(true, 1, 0, 1));
    h.record(rec(true, 2, 2, 3));
    h.record(rec(false, 2, 4, 5)); // fine
    h.record(rec(false, 1, 4, 5)); // stale: 2 overwrote 1 before the read began
    h.record(rec(false, 0, 4, 5)); // stale: the initial value
    h.record(rec(false, 9, 4, 5)); // nobody wrote 9
    h.record(rec(true, 3, 6, 7));
    h.record(rec(false, 3, 4, 5)); // from the future
    let bad = h.violations(0);
    assert_eq!(bad.len(), 4, "{bad:#?}");
}
