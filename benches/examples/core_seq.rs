//! How fast the state machines alone move a sequential read: the in-memory
//! cluster with zero latency, 64 MiB read in 1 MiB reads (no sockets).

use std::time::{Duration, Instant};

use rmmap_core::client::MapOptions;
use rmmap_core::harness::Cluster;
use rmmap_core::server::ServerConfig;
use rmmap_core::store::MemStore;

fn main() {
    let size: u64 = 64 << 20;
    let store = MemStore::new();
    store.insert("f", vec![1u8; size as usize]);
    let mut c = Cluster::new(ServerConfig::default(), store, 1, 1);
    c.nodes[0].latency = Duration::ZERO;
    c.check_invariants = false;
    c.settle();
    for round in 0..3 {
        let m = c.map(0, "f", 0, size, MapOptions::read_only()).unwrap();
        let t = Instant::now();
        let mut off = 0;
        while off < size {
            let b = c.read(0, m, off, 1 << 20).unwrap();
            assert_eq!(b.len(), 1 << 20);
            off += 1 << 20;
        }
        let e = t.elapsed();
        c.unmap(0, m).unwrap();
        println!(
            "round {round}: {:.0} MiB/s ({e:?} for 64 MiB)",
            64.0 / e.as_secs_f64()
        );
    }
}
