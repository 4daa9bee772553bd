//! The client side of workloads 1 to 7, written once for both transports.
//! Each runs in its own client process (so every run starts with an empty
//! client cache) and returns its metrics; the orchestrator prints nothing
//! of it but the result line.

use std::io::BufRead;
use std::time::{Duration, Instant};

use crate::remote::{Tokio, Transport};
use crate::stats::{Metrics, Rng, mib_s, pattern, quantile, us};

/// Reads and writes move this much per call in the sequential workloads.
pub(crate) const CHUNK: usize = 1 << 20;
/// The page size of every server the harness starts.
pub(crate) const PAGE: u64 = 4096;

/// What a client role was asked to do.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct Params {
    /// Server address.
    #[arg(long)]
    pub(crate) addr: String,
    /// File, relative to the export root.
    #[arg(long, default_value = "")]
    pub(crate) path: String,
    /// Bytes to read or write (or the size of the file read from).
    #[arg(long, default_value_t = 0)]
    pub(crate) bytes: u64,
    /// Operations (or turns, or clients, depending on the workload).
    #[arg(long, default_value_t = 0)]
    pub(crate) count: usize,
    /// Operations in flight, or clients at once.
    #[arg(long, default_value_t = 1)]
    pub(crate) parallel: usize,
    /// Seconds to run for (workloads that run for a time).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) secs: f64,
    /// Seed of the random page choices.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
}

type R<T> = Result<T, String>;

/// Workload 1: one client reads the whole mapping once, front to back.
pub(crate) async fn seq_read<T: Transport>(p: Params) -> R<Metrics> {
    let c = T::connect(&p.addr).await?;
    let m = T::map(&c, &p.path, p.bytes, false, false).await?;
    let mut buf = vec![0u8; CHUNK];
    let start = Instant::now();
    let mut off = 0;
    while off < p.bytes {
        let n = (p.bytes - off).min(CHUNK as u64) as usize;
        T::read(&m, off, &mut buf[..n]).await?;
        for i in [0, n / 2, n - 1] {
            if buf[i] != pattern(off + i as u64) {
                return Err(format!("wrong byte at offset {}", off + i as u64));
            }
        }
        off += n as u64;
    }
    let took = start.elapsed();
    T::close(c).await?;
    Ok(Metrics::from([("mib_s".into(), mib_s(p.bytes, took))]))
}

/// Workload 2: one client writes a fresh file front to back, then syncs.
pub(crate) async fn seq_write<T: Transport>(p: Params) -> R<Metrics> {
    let c = T::connect(&p.addr).await?;
    let m = T::map(&c, &p.path, p.bytes, true, true).await?;
    let chunk: Vec<u8> = (0..CHUNK as u64).map(pattern).collect();
    let start = Instant::now();
    let mut off = 0;
    while off < p.bytes {
        let n = (p.bytes - off).min(CHUNK as u64) as usize;
        T::write(&m, off, &chunk[..n]).await?;
        off += n as u64;
    }
    let written = start.elapsed();
    T::sync(&m).await?;
    let took = start.elapsed();
    T::close(c).await?;
    Ok(Metrics::from([
        ("mib_s".into(), mib_s(p.bytes, took)),
        ("unsynced_mib_s".into(), mib_s(p.bytes, written)),
    ]))
}

/// Workload 3: `count` reads of distinct random pages, none cached, with
/// `parallel` in flight (one at a time: each read's latency).
pub(crate) async fn rand_read<T: Transport>(p: Params) -> R<Metrics> {
    let c = T::connect(&p.addr).await?;
    let m = T::map(&c, &p.path, p.bytes, false, false).await?;
    let pages = Rng::new(p.seed).distinct(p.bytes / PAGE, p.count);
    let n = pages.len();
    let mut out = Metrics::new();
    if p.parallel <= 1 {
        let mut buf = vec![0u8; PAGE as usize];
        let mut lat = Vec::with_capacity(n);
        let start = Instant::now();
        for &pg in &pages {
            let t = Instant::now();
            T::read(&m, pg * PAGE, &mut buf).await?;
            lat.push(us(t.elapsed()));
            check_page(pg, &buf)?;
        }
        out.insert("ops_s".into(), n as f64 / start.elapsed().as_secs_f64());
        out.insert("p50_us".into(), quantile(&mut lat, 0.5));
        out.insert("p99_us".into(), quantile(&mut lat, 0.99));
    } else {
        let lanes: Vec<Vec<u64>> = (0..p.parallel)
            .map(|l| pages.iter().copied().skip(l).step_by(p.parallel).collect())
            .collect();
        let start = Instant::now();
        let tasks: Vec<_> = lanes
            .into_iter()
            .map(|lane| {
                let m = m.clone();
                async move {
                    let mut buf = vec![0u8; PAGE as usize];
                    for pg in lane {
                        T::read(&m, pg * PAGE, &mut buf).await?;
                        check_page(pg, &buf)?;
                    }
                    Ok::<(), String>(())
                }
            })
            .collect();
        for r in T::join_all(tasks).await {
            r?;
        }
        out.insert("ops_s".into(), n as f64 / start.elapsed().as_secs_f64());
    }
    T::close(c).await?;
    Ok(out)
}

fn check_page(pg: u64, buf: &[u8]) -> R<()> {
    let off = pg * PAGE;
    if buf[0] != pattern(off) || buf[buf.len() - 1] != pattern(off + PAGE - 1) {
        return Err(format!("wrong data in page {pg}"));
    }
    Ok(())
}

/// Workload 4: 4 KiB reads of random pages of a 4 MiB range that is in the
/// client's cache, through the public `read`.
pub(crate) async fn cache_hit<T: Transport>(p: Params) -> R<Metrics> {
    const RANGE: u64 = 4 << 20;
    let c = T::connect(&p.addr).await?;
    let m = T::map(&c, &p.path, RANGE, false, false).await?;
    let mut buf = vec![0u8; CHUNK];
    for off in (0..RANGE).step_by(CHUNK) {
        T::read(&m, off, &mut buf).await?;
    }
    let mut rng = Rng::new(p.seed);
    let offsets: Vec<u64> = (0..p.count)
        .map(|_| rng.next() % (RANGE / PAGE) * PAGE)
        .collect();
    let page = &mut buf[..PAGE as usize];
    // Latency: each read timed on its own (the two clock reads, ~40 ns,
    // are included).
    let mut lat = Vec::with_capacity(offsets.len());
    for &off in &offsets {
        let t = Instant::now();
        T::read(&m, off, page).await?;
        lat.push(t.elapsed().as_nanos() as f64);
    }
    // Throughput: the same reads back to back, one clock read around all.
    let start = Instant::now();
    for &off in &offsets {
        T::read(&m, off, page).await?;
    }
    let took = start.elapsed();
    check_page(offsets[offsets.len() - 1] / PAGE, page)?;
    T::close(c).await?;
    Ok(Metrics::from([
        ("p50_ns".into(), quantile(&mut lat, 0.5)),
        ("p99_ns".into(), quantile(&mut lat, 0.99)),
        (
            "gb_s".into(),
            (offsets.len() as u64 * PAGE) as f64 / took.as_secs_f64() / 1e9,
        ),
    ]))
}

/// Workload 5: two clients (two connections) take turns writing the first
/// 8 bytes of one page; a baton passed between their tasks says whose turn
/// it is. The baton's own cost is measured first, without writes, and
/// subtracted: what is left is the time the ownership takes to move.
pub(crate) async fn handover<T: Transport>(p: Params) -> R<Metrics> {
    let a = T::connect(&p.addr).await?;
    let b = T::connect(&p.addr).await?;
    let ma = T::map(&a, &p.path, PAGE, true, true).await?;
    let mb = T::map(&b, &p.path, PAGE, true, true).await?;
    let warm = (p.count / 10).max(10);
    let baton = turns::<T>(ma.clone(), mb.clone(), p.count, warm, false).await?;
    let turn = turns::<T>(ma.clone(), mb.clone(), p.count, warm, true).await?;
    let mut last = [0u8; 8];
    T::read(&ma, 0, &mut last).await?;
    let expected = (2 * (p.count + warm)) as u64;
    if u64::from_le_bytes(last) != expected {
        return Err(format!(
            "the page holds {} after the turns, not {expected}",
            u64::from_le_bytes(last)
        ));
    }
    T::close(a).await?;
    T::close(b).await?;
    Ok(Metrics::from([
        ("turn_us".into(), turn),
        ("baton_us".into(), baton),
        ("handover_us".into(), turn - baton),
    ]))
}

/// `count` turns each way after `warm` untimed ones; returns the mean
/// time per turn in µs. With `write`, each turn writes its number.
async fn turns<T: Transport>(
    ma: T::Map,
    mb: T::Map,
    count: usize,
    warm: usize,
    write: bool,
) -> R<f64> {
    use tokio::sync::mpsc::unbounded_channel;
    let (to_b, at_b) = unbounded_channel::<u64>();
    let (to_a, at_a) = unbounded_channel::<u64>();
    let total = (count + warm) as u64;
    // Each side waits for the baton, writes the number it was handed plus
    // one and hands that on; the page ends at 2 * total.
    let side = move |m: T::Map,
                     mut inbox: tokio::sync::mpsc::UnboundedReceiver<u64>,
                     next: tokio::sync::mpsc::UnboundedSender<u64>| async move {
        let mut started = None;
        while let Some(n) = inbox.recv().await {
            if n == 2 * warm as u64 {
                started = Some(Instant::now());
            }
            if n >= 2 * total {
                break;
            }
            if write {
                T::write(&m, 0, &(n + 1).to_le_bytes()).await?;
            }
            if next.send(n + 1).is_err() || n + 1 >= 2 * total {
                break;
            }
        }
        Ok::<_, String>(started.map(|s| s.elapsed()))
    };
    to_a.send(0).map_err(|e| e.to_string())?;
    let ta = side(ma, at_a, to_b);
    let tb = side(mb, at_b, to_a);
    let r = T::join_all(vec![ta, tb]).await;
    let mut took = Duration::ZERO;
    for x in r {
        if let Some(d) = x? {
            took = took.max(d);
        }
    }
    Ok(us(took) / (2 * count) as f64)
}

/// Workload 6: `parallel` clients, each with its own connection and its own
/// slice of the file, read distinct uncached pages one at a time for
/// `secs`; total operations per second.
pub(crate) async fn disjoint<T: Transport>(p: Params) -> R<Metrics> {
    let n = p.parallel.max(1);
    let slice = p.bytes / n as u64 / PAGE;
    if !slice.is_power_of_two() {
        return Err(format!("{slice} pages per client: not a power of two"));
    }
    let setup: Vec<_> = (0..n)
        .map(|_| {
            let (addr, path, bytes) = (p.addr.clone(), p.path.clone(), p.bytes);
            async move {
                let c = T::connect(&addr).await?;
                let m = T::map(&c, &path, bytes, false, false).await?;
                Ok::<_, String>((c, m))
            }
        })
        .collect();
    let mut clients = Vec::with_capacity(n);
    for r in T::join_all(setup).await {
        clients.push(r?);
    }
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(p.secs);
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, (_, m))| {
            let m = m.clone();
            let first = i as u64 * slice;
            async move {
                let mut buf = vec![0u8; PAGE as usize];
                let mut done = 0u64;
                // An odd multiplier permutes 0..slice (a power of two), so
                // pages are distinct and never look sequential.
                while done < slice && Instant::now() < until {
                    let pg = first + (done.wrapping_mul(0x9E37_79B1) & (slice - 1));
                    T::read(&m, pg * PAGE, &mut buf).await?;
                    done += 1;
                }
                Ok::<u64, String>(done)
            }
        })
        .collect();
    let mut ops = 0;
    for r in T::join_all(tasks).await {
        ops += r?;
    }
    let took = start.elapsed();
    for (c, _) in clients {
        T::close(c).await?;
    }
    Ok(Metrics::from([(
        "ops_s".into(),
        ops as f64 / took.as_secs_f64(),
    )]))
}

/// Workload 7a: `count` connected idle clients (Tokio clients whichever
/// server is measured: only the server's memory counts). Prints `ready`
/// once all are connected, then holds them until stdin closes.
pub(crate) fn idle(p: Params) -> R<Metrics> {
    Tokio::block_on(async move {
        let mut clients = Vec::with_capacity(p.count);
        for _ in 0..p.count {
            clients.push(Tokio::connect(&p.addr).await?);
        }
        println!("ready");
        tokio::task::spawn_blocking(|| for _ in std::io::stdin().lock().lines() {})
            .await
            .map_err(|e| e.to_string())?;
        for c in clients {
            Tokio::close(c).await?;
        }
        Ok(Metrics::new())
    })
}

/// Workload 7b: one client reads a large file front to back, printing
/// `progress BYTES` every 1/16 of it so the orchestrator can sample the
/// server's memory along the way.
pub(crate) async fn big_read<T: Transport>(p: Params) -> R<Metrics> {
    let c = T::connect(&p.addr).await?;
    let m = T::map(&c, &p.path, p.bytes, false, false).await?;
    let mut buf = vec![0u8; CHUNK];
    let step = (p.bytes / 16).max(CHUNK as u64);
    let start = Instant::now();
    let mut off = 0;
    while off < p.bytes {
        let n = (p.bytes - off).min(CHUNK as u64) as usize;
        T::read(&m, off, &mut buf[..n]).await?;
        off += n as u64;
        if off % step == 0 || off == p.bytes {
            println!("progress {off}");
        }
    }
    let took = start.elapsed();
    T::close(c).await?;
    Ok(Metrics::from([("mib_s".into(), mib_s(p.bytes, took))]))
}
