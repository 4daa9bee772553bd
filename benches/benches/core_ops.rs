//! The core's cost per operation, on the in-memory cluster with zero
//! latency: everything measured here is CPU spent in the state machines
//! (both sides), not waiting. Cache hit, cold page fetch, an invalidation
//! (a write to a page another client shares) and a recall (a read of a page
//! another client holds dirty).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rmmap_core::client::{MapOptions, MappingId};
use rmmap_core::harness::Cluster;
use rmmap_core::server::ServerConfig;
use rmmap_core::store::MemStore;

const PAGE: u64 = 4096;
const PAGES: u64 = 4096;

fn cluster(clients: usize) -> (Cluster, Vec<MappingId>) {
    let store = MemStore::new();
    store.insert("f", vec![0u8; (PAGE * PAGES) as usize]);
    let mut c = Cluster::new(ServerConfig::default(), store, clients, 1);
    for n in &mut c.nodes {
        n.latency = Duration::ZERO;
    }
    c.check_invariants = false;
    c.settle();
    let maps = (0..clients)
        .map(|i| {
            c.map(i, "f", 0, PAGE * PAGES, MapOptions::read_write())
                .unwrap()
        })
        .collect();
    (c, maps)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("core");
    g.bench_function("cache hit: try_read of 64 bytes", |b| {
        let (mut cl, m) = cluster(1);
        cl.read(0, m[0], 0, 64).unwrap();
        let mut buf = [0u8; 64];
        b.iter(|| {
            let now = cl.now;
            assert!(
                cl.nodes[0]
                    .client
                    .try_read(now, m[0], black_box(8), &mut buf)
                    .unwrap()
            );
        })
    });
    g.bench_function("page fetch: cold read of one page (both sides)", |b| {
        let (mut cl, m) = cluster(1);
        let mut mapping = m[0];
        let mut p = 0u64;
        b.iter(|| {
            // Every read touches a page not yet cached; after a full pass the
            // mapping is dropped (its pages released) and made again.
            // A stride, not sequential: no read-ahead helps.
            cl.read(0, mapping, ((p * 997) % PAGES) * PAGE, 8).unwrap();
            p += 1;
            if p % PAGES == 0 {
                cl.unmap(0, mapping).unwrap();
                mapping = cl
                    .map(0, "f", 0, PAGE * PAGES, MapOptions::read_write())
                    .unwrap();
            }
        })
    });
    g.bench_function(
        "invalidation: write to a page the other client shares",
        |b| {
            let (mut cl, m) = cluster(2);
            b.iter(|| {
                cl.read(1, m[1], 0, 8).unwrap();
                cl.write(0, m[0], 0, b"12345678").unwrap();
            })
        },
    );
    g.bench_function("recall: read a page the other client holds dirty", |b| {
        let (mut cl, m) = cluster(2);
        b.iter(|| {
            cl.write(0, m[0], 0, b"12345678").unwrap();
            cl.read(1, m[1], 0, 8).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
