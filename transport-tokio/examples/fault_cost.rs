//! Measures what a memory mapping's page faults cost, against the raw TCP
//! round trip on loopback measured in the same run:
//!
//! * a missing-page fault that fetches the page (first touch; pages are
//!   touched in descending order, so every fault is one one-page fetch round
//!   trip plus `UFFDIO_COPY`), and one served from the client's cache
//!   (ascending order: read faults fetch 16 pages ahead);
//! * a write to a page held shared: the write-protect fault waits for
//!   exclusive ownership (one round trip; two when the server must first
//!   invalidate another client's copy);
//! * a write to a page held exclusively but write-protected after a sync:
//!   the fault is resolved locally.
//!
//! Run with `cargo run --release -p rmmap-tokio --example fault_cost`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rmmap_tokio::{Access, Client, ClientConfig, MemoryMapping, Server, ServerConfig};

const PAGE: usize = 4096;
/// Samples per kind of fault.
const N: usize = 4096;
const RTT_SAMPLES: usize = 20_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(what: &str, mut samples: Vec<Duration>, rtt: Option<Duration>) -> Duration {
    samples.sort();
    let p50 = percentile(&samples, 0.5);
    let ratio = rtt.map_or(String::new(), |r| {
        format!(
            "  ({:.1}x the raw RTT p50)",
            p50.as_secs_f64() / r.as_secs_f64()
        )
    });
    println!(
        "{what:<58} p50 {:>8.1} µs  p99 {:>8.1} µs  ({} samples){ratio}",
        p50.as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
        samples.len(),
    );
    p50
}

/// Raw TCP ping-pong of 64 bytes on loopback, `TCP_NODELAY`, blocking IO.
fn tcp_rtt() -> std::io::Result<Vec<Duration>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut buf = [7u8; 64];
    let mut samples = Vec::with_capacity(RTT_SAMPLES);
    for i in 0..RTT_SAMPLES + 1000 {
        let t = Instant::now();
        s.write_all(&buf)?;
        s.read_exact(&mut buf)?;
        if i >= 1000 {
            samples.push(t.elapsed());
        }
    }
    drop(s);
    let _ = echo.join();
    Ok(samples)
}

/// Times one access per page of `pages` (a byte load or store).
fn time_pages(m: &MemoryMapping, pages: impl Iterator<Item = usize>, store: bool) -> Vec<Duration> {
    let bytes = m.atomic_bytes();
    pages
        .map(|p| {
            let b = &bytes[p * PAGE + 8];
            let t = Instant::now();
            if store {
                b.store(1, Ordering::Relaxed);
            } else {
                std::hint::black_box(b.load(Ordering::Relaxed));
            }
            t.elapsed()
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    rmmap_tokio::memory_support()?;
    let rtt = tcp_rtt()?;

    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("f"), vec![0u8; 2 * N * PAGE])?;
    let config = ServerConfig::new(dir.path()).restart_grace(Some(Duration::ZERO));
    let server = Server::bind("127.0.0.1:0", config).await?;
    let addr = server.local_addr().to_string();
    let a = Client::connect(&addr, ClientConfig::default()).await?;
    let b = Client::connect(&addr, ClientConfig::default()).await?;
    let m = a
        .map_memory("f", 0..(2 * N * PAGE) as u64, Access::ReadWrite)
        .await?;
    // Client B holds the upper half shared, through the byte API.
    let mb = b
        .map(
            "f",
            (N * PAGE) as u64..(2 * N * PAGE) as u64,
            Access::ReadOnly,
        )
        .await?;

    // Faults block the faulting thread: measure on one that is not a worker.
    let rt = tokio::runtime::Handle::current();
    let (m, results) = tokio::task::spawn_blocking(move || {
        let mut r = vec![
            // Lower half, descending: one one-page fetch per fault.
            (
                "missing page, fetched (1-page round trip + UFFDIO_COPY)",
                time_pages(&m, (0..N).rev(), false),
            ),
            // Upper half, ascending: 1 fetch of 16 pages, then 15 cache hits.
            (
                "missing page, ascending (16-page readahead per 16 faults)",
                time_pages(&m, N..2 * N, false),
            ),
            (
                "load from a present page (no fault: timing floor)",
                time_pages(&m, 0..N, false),
            ),
            // Lower half: held shared by A alone.
            (
                "WP upgrade shared -> exclusive (no other sharer)",
                time_pages(&m, 0..N, true),
            ),
        ];
        // Upper half: B holds it too; the server invalidates B's copy first.
        rt.block_on(async {
            let mut buf = vec![0u8; PAGE];
            for p in 0..N {
                mb.read((p * PAGE) as u64, &mut buf).await.expect("read");
            }
        });
        r.push((
            "WP upgrade shared -> exclusive (server invalidates B)",
            time_pages(&m, N..2 * N, true),
        ));
        r.push((
            "store to a writable page (no fault: timing floor)",
            time_pages(&m, (0..N).step_by(7), true),
        ));
        // After a sync every page is clean, exclusive and write-protected.
        rt.block_on(m.sync()).expect("sync");
        r.push((
            "WP on an exclusive clean page (local unprotect)",
            time_pages(&m, 0..2 * N, true),
        ));
        (m, r)
    })
    .await?;

    println!(
        "fault cost on loopback, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let rtt_p50 = report(
        "raw TCP round trip (64-byte ping-pong, blocking)",
        rtt,
        None,
    );
    for (what, samples) in results {
        report(what, samples, Some(rtt_p50));
    }
    m.unmap().await?;
    a.close().await?;
    b.close().await?;
    server.shutdown().await?;
    Ok(())
}
