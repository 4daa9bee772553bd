//! `rmmap demo`: the main job in one command, with no setup.
//!
//! An embedded server on loopback exports a temporary directory holding one
//! file; several clients, each with its own connection, map the same range
//! and write and read words on the same pages at once. Every operation is
//! stamped from one global counter just before it starts and just after it
//! completes, and every read is checked afterwards: it must see a value that
//! was written (or the initial zero) no earlier than the last write to that
//! word that completed before the read began, and not a write that started
//! after the read ended.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use rmmap_tokio::{Access, Client, ClientConfig, Mapping, Server, ServerConfig};

use crate::{CliError, Context};

const PAGE: u64 = 4096;
const PAGES: u64 = 4;
const WORDS: u64 = 8;

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// How many clients.
    #[arg(long, default_value_t = 4)]
    clients: u64,
    /// Operations per client.
    #[arg(long, default_value_t = 50)]
    ops: u64,
}

/// Word `k` lives on page `k % PAGES`: two words per page, every page shared.
fn word_offset(k: u64) -> u64 {
    (k % PAGES) * PAGE + 1000 + (k / PAGES) * 8
}

/// Who wrote a value: client `c` (1-based), its `n`-th write.
fn show(v: u64) -> String {
    if v == 0 {
        "0".into()
    } else {
        format!("c{}#{}", v >> 32, v & 0xffff_ffff)
    }
}

#[derive(Clone, Debug)]
struct Record {
    client: u64,
    word: u64,
    write: bool,
    value: u64,
    start: u64,
    end: u64,
}

/// Reads that saw something other than the latest completed write.
fn stale_reads(records: &[Record]) -> Vec<String> {
    let writes: BTreeMap<(u64, u64), &Record> = records
        .iter()
        .filter(|r| r.write)
        .map(|r| ((r.word, r.value), r))
        .collect();
    let mut bad = Vec::new();
    for r in records.iter().filter(|r| !r.write) {
        let last = writes
            .values()
            .filter(|w| w.word == r.word && w.end < r.start)
            .max_by_key(|w| w.end);
        let ok = if r.value == 0 {
            last.is_none()
        } else {
            match writes.get(&(r.word, r.value)) {
                None => false,
                Some(w) => w.start < r.end && last.is_none_or(|l| w.end >= l.start),
            }
        };
        if !ok {
            let latest = last.map_or("0".into(), |l| show(l.value));
            bad.push(format!(
                "client {} read word {} = {} but {} had completed before the read began",
                r.client,
                r.word,
                show(r.value),
                latest
            ));
        }
    }
    bad
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn run_client(
    id: u64,
    m: Mapping,
    ops: u64,
    clock: Arc<AtomicU64>,
    log: Arc<Mutex<Vec<Record>>>,
) -> Result<(), CliError> {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(id);
    let mut writes = 0;
    for _ in 0..ops {
        let word = next(&mut rng) % WORDS;
        let write = next(&mut rng) % 2 == 0;
        let at = word_offset(word);
        let start = clock.fetch_add(1, Ordering::SeqCst);
        let value = if write {
            writes += 1;
            let v = (id << 32) | writes;
            m.write(at, &v.to_le_bytes())
                .await
                .context(|| format!("client {id} writing"))?;
            v
        } else {
            let b = m
                .read_bytes(at, 8)
                .await
                .context(|| format!("client {id} reading"))?;
            u64::from_le_bytes(b[..].try_into().unwrap_or([0; 8]))
        };
        let end = clock.fetch_add(1, Ordering::SeqCst);
        log.lock().unwrap_or_else(|e| e.into_inner()).push(Record {
            client: id,
            word,
            write,
            value,
            start,
            end,
        });
    }
    Ok(())
}

pub(crate) async fn run(a: DemoArgs) -> Result<ExitCode, CliError> {
    let dir = tempfile::tempdir().context(|| "creating a temporary directory".into())?;
    let len = PAGES * PAGE;
    std::fs::write(dir.path().join("demo.bin"), vec![0u8; len as usize])
        .context(|| "creating the demo file".into())?;
    // A fresh directory: no earlier server to wait for (its run state says so).
    let config = ServerConfig::new(dir.path()).lease(Duration::from_secs(2));
    let server = Server::bind("127.0.0.1:0", config).await?;
    let addr = server.local_addr().to_string();
    println!(
        "rmmap demo: a server on {addr} exports a temporary directory; {} clients, each with its own \
         connection, map bytes 0..{len} of demo.bin read-write and each run {} reads and writes of \
         {WORDS} words on {PAGES} shared pages at once.",
        a.clients, a.ops
    );

    let clock = Arc::new(AtomicU64::new(0));
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    let mut tasks = Vec::new();
    for id in 1..=a.clients {
        let client = Client::connect(&addr, ClientConfig::default()).await?;
        let m = client
            .map("demo.bin", 0..len, Access::ReadWrite)
            .await
            .context(|| "mapping demo.bin".into())?;
        tasks.push(tokio::spawn(run_client(
            id,
            m.clone(),
            a.ops,
            clock.clone(),
            log.clone(),
        )));
        clients.push((client, m));
    }
    for t in tasks {
        match t.await {
            Ok(r) => r?,
            Err(e) => {
                return Err(CliError::Io {
                    context: "a client task".into(),
                    source: std::io::Error::other(e),
                });
            }
        }
    }
    let records = log.lock().unwrap_or_else(|e| e.into_inner()).clone();

    for id in 1..=a.clients {
        let mine: Vec<&Record> = records.iter().filter(|r| r.client == id).collect();
        let wrote: Vec<String> = mine
            .iter()
            .filter(|r| r.write)
            .take(8)
            .map(|r| format!("w{}={}", r.word, show(r.value)))
            .collect();
        let read: Vec<String> = mine
            .iter()
            .filter(|r| !r.write)
            .take(8)
            .map(|r| format!("w{}={}", r.word, show(r.value)))
            .collect();
        let (nw, nr) = (
            mine.iter().filter(|r| r.write).count(),
            mine.iter().filter(|r| !r.write).count(),
        );
        println!(
            "client {id}: {nw} writes ({} ...), {nr} reads saw ({} ...)",
            wrote.join(" "),
            read.join(" ")
        );
    }

    // Afterwards, every client sees the same final words, and so does the
    // disk once synced.
    let mut finals = Vec::new();
    for (client, m) in &clients {
        let mut words = Vec::new();
        for k in 0..WORDS {
            let b = m
                .read_bytes(word_offset(k), 8)
                .await
                .context(|| "reading the final words".into())?;
            words.push(u64::from_le_bytes(b[..].try_into().unwrap_or([0; 8])));
        }
        finals.push(words);
        m.sync().await.context(|| "syncing".into())?;
        let _ = client;
    }
    let disk =
        std::fs::read(dir.path().join("demo.bin")).context(|| "reading the demo file".into())?;
    let on_disk: Vec<u64> = (0..WORDS)
        .map(|k| {
            let at = word_offset(k) as usize;
            u64::from_le_bytes(disk[at..at + 8].try_into().unwrap_or([0; 8]))
        })
        .collect();
    let shown: Vec<String> = finals[0]
        .iter()
        .enumerate()
        .map(|(k, v)| format!("w{k}={}", show(*v)))
        .collect();
    println!("final words: {}", shown.join(" "));
    for (client, m) in clients {
        let _ = m.unmap().await;
        let _ = client.close().await;
    }
    let _ = server.shutdown().await;

    let stale = stale_reads(&records);
    for s in stale.iter().take(5) {
        println!("stale: {s}");
    }
    let agree = finals.iter().all(|f| *f == on_disk);
    let reads = records.iter().filter(|r| !r.write).count();
    let writes = records.len() - reads;
    if stale.is_empty() && agree {
        println!(
            "PASS: every read saw the latest completed write ({reads} reads, {writes} writes, {} clients; final contents agree everywhere)",
            a.clients
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "FAIL: {} of {reads} reads did not see the latest completed write{}",
            stale.len(),
            if agree {
                ""
            } else {
                "; the clients and the disk disagree on the final contents"
            }
        );
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(client: u64, write: bool, value: u64, start: u64, end: u64) -> Record {
        Record {
            client,
            word: 0,
            write,
            value,
            start,
            end,
        }
    }

    #[test]
    fn the_check_flags_stale_reads_and_only_those() {
        let v1 = (1 << 32) | 1;
        let v2 = (2 << 32) | 1;
        let good = vec![
            rec(1, true, v1, 0, 1),
            rec(2, true, v2, 2, 3),
            rec(3, false, v2, 4, 5),
            rec(3, false, 0, 0, 1),
        ];
        assert!(stale_reads(&good).is_empty());
        // Concurrent with the second write: either value is fine.
        let concurrent = vec![
            rec(1, true, v1, 0, 1),
            rec(2, true, v2, 2, 6),
            rec(3, false, v1, 4, 5),
        ];
        assert!(stale_reads(&concurrent).is_empty());
        let stale = vec![
            rec(1, true, v1, 0, 1),
            rec(2, true, v2, 2, 3),
            rec(3, false, v1, 4, 5),
            rec(3, false, 0, 4, 5),
        ];
        assert_eq!(stale_reads(&stale).len(), 2);
    }
}
