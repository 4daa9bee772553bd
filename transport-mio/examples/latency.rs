//! Measures the blocking mio client against the mio server over loopback:
//! reads and writes served from the cache (no IO thread involved), and
//! round trips where two clients take a page from each other on every
//! operation (a recall, a fetch). Run with
//! `cargo run --release -p rmmap-mio --example latency`.

use std::time::{Duration, Instant};

use rmmap_mio::{Access, Client, ClientConfig, Server, ServerConfig};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what}: p50 {:?}  p99 {:?}  max {:?}  ({} samples)",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
        samples.len()
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("f"), vec![0u8; 1 << 20])?;
    let config = ServerConfig::new(dir.path()).restart_grace(Some(Duration::ZERO));
    let server = Server::bind("127.0.0.1:0", config)?;
    let addr = server.local_addr().to_string();
    let a = Client::connect(&addr, ClientConfig::default())?;
    let b = Client::connect(&addr, ClientConfig::default())?;
    let ma = a.map("f", 0..(1 << 20), Access::ReadWrite)?;
    let mb = b.map("f", 0..4096, Access::ReadWrite)?;

    // Take every page exclusively once, so later reads and writes are hits.
    for page in 0..256u64 {
        ma.write(page * 4096, &[1])?;
    }
    let n = 200_000;
    let mut buf = [0u8; 64];
    let (mut reads, mut writes) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n as u64 {
        let at = (i * 4096 + (i % 64) * 64) % (1 << 20);
        let t = Instant::now();
        ma.read(at, &mut buf)?;
        reads.push(t.elapsed());
        let t = Instant::now();
        ma.write(at, &buf)?;
        writes.push(t.elapsed());
    }
    report("cache-hit read of 64 bytes", reads);
    report("cache-hit write of 64 bytes", writes);

    // Page 0 goes back and forth: each write recalls it from the other
    // client, each read after the other's write fetches it again.
    let rounds = 5_000;
    let (mut recalls, mut fetches) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for i in 0..rounds as u64 {
        let (writer, reader) = if i % 2 == 0 { (&ma, &mb) } else { (&mb, &ma) };
        let t = Instant::now();
        writer.write(8, &i.to_le_bytes())?;
        recalls.push(t.elapsed());
        let t = Instant::now();
        reader.read(8, &mut buf[..8])?;
        fetches.push(t.elapsed());
        assert_eq!(buf[..8], i.to_le_bytes());
    }
    report("write that recalls the page from the other client", recalls);
    report("read of a page the other client just wrote", fetches);

    drop((ma, mb));
    a.close()?;
    b.close()?;
    server.shutdown()?;
    Ok(())
}
