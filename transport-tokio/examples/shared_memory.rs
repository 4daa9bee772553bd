//! Two processes, each with its own `Client`, map the same range of a file
//! into memory and update one structure in it with typed loads and stores
//! (`MemoryMapping::load` / `store`: copies, sound however the bytes change
//! underneath) and the server-side atomic operations; the parent then
//! checks it.
//!
//! The structure (in a 4-page file):
//!
//! | bytes    | what                                                    |
//! |----------|---------------------------------------------------------|
//! | 0..8     | a counter, incremented with `fetch_add`                 |
//! | 8..16    | a spin lock: 0 free, else the holder's id (`compare_exchange`, released with `swap`) |
//! | 16..24   | how many records follow (loads and stores, under the lock) |
//! | 24..32   | a start barrier: each process adds 1 and waits for 2    |
//! | 64..     | records of 16 bytes: writer id, sequence number (stores)   |
//!
//! Run with `cargo run --release -p rmmap-tokio --example shared_memory`:
//! the parent starts an embedded server on 127.0.0.1 over a fresh
//! temporary directory and runs this binary again as its second process.
//! It exits non-zero if anything is off.

use std::process::Command;
use std::time::{Duration, Instant};

use rmmap_tokio::{Access, Client, ClientConfig, Server, ServerConfig};

const PAGE: u64 = 4096;
const LEN: u64 = 4 * PAGE;
const COUNTER: u64 = 0;
const LOCK: u64 = 8;
const COUNT: u64 = 16;
const BARRIER: u64 = 24;
const RECORDS: u64 = 64;
const INCREMENTS: u64 = 500;
const APPENDS: u64 = 100;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let t = Instant::now();
        work(&args[2], 2).await?;
        println!("child: done in {:?}", t.elapsed());
        return Ok(());
    }
    if let Err(e) = rmmap_tokio::memory_support() {
        eprintln!("memory mappings are not available here: {e}");
        std::process::exit(2);
    }

    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("shared"), vec![0u8; LEN as usize])?;
    let config = ServerConfig::new(dir.path()).restart_grace(Some(Duration::ZERO));
    let server = Server::bind("127.0.0.1:0", config).await?;
    let addr = server.local_addr().to_string();
    println!("server on {addr}; starting the second process");

    let t = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["child", &addr])
        .spawn()?;
    work(&addr, 1).await?;
    println!("parent: done in {:?}", t.elapsed());
    // Wait for the child off the runtime's workers.
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    if !status.success() {
        eprintln!("the second process failed: {status}");
        std::process::exit(1);
    }

    // Check through memory, then on disk.
    let client = Client::connect(&addr, ClientConfig::default()).await?;
    let m = client
        .map_memory("shared", 0..LEN, Access::ReadOnly)
        .await?;
    let mut bytes = vec![0u8; m.len()];
    m.read(0, &mut bytes).await?;
    let in_memory = check(&bytes);
    drop(m);
    client.close().await?;
    server.shutdown().await?;
    let on_disk = std::fs::read(dir.path().join("shared"))?;
    let durable = check(&on_disk);
    match (in_memory, durable) {
        (Ok(summary), Ok(_)) => {
            println!("{summary}");
            println!("the same on disk: OK");
            Ok(())
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("MISMATCH: {e}");
            std::process::exit(1);
        }
    }
}

/// One process's share: `INCREMENTS` increments and `APPENDS` records,
/// interleaved.
async fn work(addr: &str, id: u64) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect(addr, ClientConfig::default()).await?;
    let m = client
        .map_memory("shared", 0..LEN, Access::ReadWrite)
        .await?;
    // Start together, so that the two really interleave.
    m.fetch_add(BARRIER, 1).await?;
    while m.fetch_add(BARRIER, 0).await? < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut spins = 0u64;
    for i in 0..INCREMENTS.max(APPENDS) {
        if i < INCREMENTS {
            m.fetch_add(COUNTER, 1).await?;
        }
        if i < APPENDS {
            // Take the lock.
            while m.compare_exchange(LOCK, 0, id).await?.is_err() {
                spins += 1;
                tokio::time::sleep(Duration::from_micros(50)).await;
            }
            // Append with loads and stores, which may block this thread in
            // a fault (on a worker they would first move its other tasks
            // away). The file's words are little-endian.
            let n = u64::from_le(m.load::<u64>(COUNT)?);
            m.store(RECORDS + 16 * n, &[id.to_le(), i.to_le()])?;
            m.store(COUNT, &(n + 1).to_le())?;
            // Release it: the server recalls the page holding the count
            // first, so the next holder sees every store made above.
            m.swap(LOCK, 0).await?;
        }
    }
    m.sync().await?;
    println!("process {id}: {INCREMENTS} increments, {APPENDS} appends, {spins} lock retries");
    m.unmap().await?;
    client.close().await?;
    Ok(())
}

fn read_u64(s: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks the structure; a one-line summary.
fn check(s: &[u8]) -> Result<String, String> {
    let counter = read_u64(s, COUNTER as usize);
    if counter != 2 * INCREMENTS {
        return Err(format!("counter {counter}, expected {}", 2 * INCREMENTS));
    }
    if read_u64(s, LOCK as usize) != 0 {
        return Err("the lock is still held".into());
    }
    let n = read_u64(s, COUNT as usize) as usize;
    if n as u64 != 2 * APPENDS {
        return Err(format!("{n} records, expected {}", 2 * APPENDS));
    }
    let mut next = [0u64; 2];
    for r in 0..n {
        let at = RECORDS as usize + 16 * r;
        let (id, seq) = (read_u64(s, at), read_u64(s, at + 8));
        let slot = next
            .get_mut((id as usize).wrapping_sub(1))
            .ok_or(format!("record {r} has writer {id}"))?;
        if seq != *slot {
            return Err(format!(
                "record {r}: writer {id} sequence {seq}, expected {slot}"
            ));
        }
        *slot += 1;
    }
    let switches = (1..n)
        .filter(|r| {
            let at = RECORDS as usize + 16 * r;
            read_u64(s, at) != read_u64(s, at - 16)
        })
        .count();
    Ok(format!(
        "OK: counter {counter}, {n} records in order from both writers, the lock changed hands {switches} times"
    ))
}
