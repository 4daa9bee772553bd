//! Encoding and decoding: small frames, and page-data frames of 1 and 256
//! pages (the largest fetch reply by default).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rmmap_core::protocol::{
    ChunkQueue, Fetch, FileHandle, Message, PageGrant, Pages, ReqId, WireMappingId, decode_frame,
    fetch_flags,
};

fn small() -> Message {
    Message::Fetch(Fetch {
        req: ReqId(42),
        mapping: WireMappingId(3),
        first_page: 1000,
        count: 16,
        flags: fetch_flags::WANT_DATA,
    })
}

fn pages(n: usize) -> Message {
    let data = Bytes::from(vec![7u8; 4096 * n]);
    Message::Pages(Pages {
        req: ReqId(42),
        file: FileHandle(1),
        first_page: 0,
        exclusive: false,
        pages: (0..n)
            .map(|i| PageGrant {
                version: i as u64,
                data: Some(data.slice(i * 4096..(i + 1) * 4096)),
            })
            .collect(),
    })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    let m = small();
    let wire = m.to_bytes();
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode small frame", |b| {
        let mut buf = BytesMut::with_capacity(64);
        b.iter(|| {
            buf.clear();
            black_box(&m).encode(&mut buf);
        })
    });
    g.bench_function("decode small frame", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            black_box(decode_frame(&mut buf, 1 << 20).unwrap());
        })
    });
    for n in [1usize, 256] {
        let m = pages(n);
        let wire = m.to_bytes();
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(format!("encode {n}-page frame (zero-copy chunks)"), |b| {
            let mut q = ChunkQueue::new();
            b.iter(|| {
                q.push_message(black_box(&m));
                while let Some(c) = q.pop() {
                    black_box(c);
                }
            })
        });
        g.bench_function(format!("encode {n}-page frame (contiguous copy)"), |b| {
            let mut buf = BytesMut::with_capacity(wire.len());
            b.iter(|| {
                buf.clear();
                black_box(&m).encode(&mut buf);
            })
        });
        g.bench_function(format!("decode {n}-page frame"), |b| {
            b.iter(|| {
                let mut buf = BytesMut::from(&wire[..]);
                black_box(decode_frame(&mut buf, 64 << 20).unwrap());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
