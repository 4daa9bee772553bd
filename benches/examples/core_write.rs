//! How the state machines alone move a sequential write + sync: the
//! in-memory cluster with zero latency, 64 MiB written in 1 MiB writes,
//! counting the frames each way.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rmmap_core::client::MapOptions;
use rmmap_core::harness::{Cluster, Direction, Verdict};
use rmmap_core::protocol::Message;
use rmmap_core::server::ServerConfig;
use rmmap_core::store::MemStore;

fn main() {
    let size: u64 = 64 << 20;
    let store = MemStore::new();
    store.insert("f", vec![0u8; size as usize]);
    let mut c = Cluster::new(ServerConfig::default(), store, 1, 1);
    c.nodes[0].latency = Duration::ZERO;
    c.check_invariants = false;
    c.settle();
    let fetches = Rc::new(Cell::new(0));
    let f2 = fetches.clone();
    c.set_hook(Box::new(move |_, d, m| {
        if d == Direction::ToServer && matches!(m, Message::Fetch(_)) {
            f2.set(f2.get() + 1);
        }
        Verdict::Deliver
    }));
    let m = c.map(0, "f", 0, size, MapOptions::read_write()).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let t = Instant::now();
    let mut off = 0;
    while off < size {
        c.write(0, m, off, &chunk).unwrap();
        off += 1 << 20;
    }
    let w = t.elapsed();
    c.sync(0, m).unwrap();
    let all = t.elapsed();
    println!(
        "writes {:.0} MiB/s, with sync {:.0} MiB/s ({all:?}); {} fetches",
        64.0 / w.as_secs_f64(),
        64.0 / all.as_secs_f64(),
        fetches.get()
    );
}
