//! What a run does, in what order, and what it collects: the sizes (full or
//! quick), the files, the servers, and every measurement of every run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::cli::CliBench;
use crate::nbd;
use crate::proc::{Child, CpuMeter, have, rss_kib};
use crate::roles::Kind;
use crate::stats::{Metrics, median, pattern};
use crate::workloads::CHUNK;

/// What `--only` can name.
pub(crate) const PARTS: [&str; 11] = [
    "raw", "nbd", "w1", "w2", "w3", "w4", "w5", "w6", "w7", "cli", "relay",
];

/// Sizes and choices of one benchmark run.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) quick: bool,
    pub(crate) runs: usize,
    only: Vec<String>,
    pub(crate) transports: Vec<Kind>,
    /// Workloads 1 and 2, and the raw stream: bytes moved.
    pub(crate) seq_bytes: u64,
    /// Workload 3: reads per run (one at a time, and again with 16 in flight).
    pub(crate) rand_count: usize,
    pub(crate) inflight: usize,
    /// Workload 4: cache hits timed.
    pub(crate) hits: usize,
    /// Workload 5: turns each way.
    pub(crate) turns: usize,
    /// Workload 6: client counts and seconds per point.
    pub(crate) clients: Vec<usize>,
    pub(crate) disjoint_secs: f64,
    /// Workload 7: idle clients, and the large (sparse) file read.
    pub(crate) idle: usize,
    pub(crate) big_bytes: u64,
    /// Raw ping-pong round trips.
    pub(crate) pings: usize,
    /// The relay part: round-trip times in ms (0: the relay alone), and
    /// ping-pong round trips through the relay at each.
    pub(crate) rtts_ms: Vec<u32>,
    pub(crate) relay_pings: usize,
}

impl Settings {
    pub(crate) fn new(
        quick: bool,
        runs: Option<usize>,
        only: Vec<String>,
        transports: Vec<String>,
    ) -> Self {
        let transports = transports
            .iter()
            .filter_map(|t| match t.as_str() {
                "tokio" => Some(Kind::Tokio),
                "mio" => Some(Kind::Mio),
                _ => None,
            })
            .collect();
        let mib = 1u64 << 20;
        if quick {
            Settings {
                quick,
                runs: runs.unwrap_or(1),
                only,
                transports,
                seq_bytes: 16 * mib,
                rand_count: 1000,
                inflight: 16,
                hits: 20_000,
                turns: 100,
                clients: vec![1, 4, 16, 64],
                disjoint_secs: 0.2,
                idle: 100,
                big_bytes: 64 * mib,
                pings: 2000,
                rtts_ms: vec![0, 1, 4, 20],
                relay_pings: 10,
            }
        } else {
            Settings {
                quick,
                runs: runs.unwrap_or(3),
                only,
                transports,
                seq_bytes: 256 * mib,
                rand_count: 20_000,
                inflight: 16,
                hits: 1_000_000,
                turns: 2000,
                clients: vec![1, 4, 16, 64],
                disjoint_secs: 2.0,
                idle: 1000,
                big_bytes: 4 << 30,
                pings: 20_000,
                rtts_ms: vec![0, 1, 4, 20],
                relay_pings: 50,
            }
        }
    }

    /// A part named in `--only` that does not exist.
    pub(crate) fn unknown_part(&self) -> Option<&str> {
        self.only
            .iter()
            .map(String::as_str)
            .find(|o| !PARTS.contains(o))
    }

    /// Whether a part (raw, nbd, w1 ... w7, cli, relay) is to run.
    pub(crate) fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == part)
    }

    /// The NBD peer runs for `nbd` and for each of workloads 1 to 3.
    fn wants_nbd(&self) -> bool {
        ["nbd", "w1", "w2", "w3"].iter().any(|p| self.wants(p))
    }

    /// `--only nbd` alone runs all three of its workloads.
    fn wants_nbd_part(&self, w: &str) -> bool {
        let any_w = ["w1", "w2", "w3"]
            .iter()
            .any(|p| self.only.iter().any(|o| o == p));
        self.wants(w) || (self.wants("nbd") && !any_w)
    }
}

/// Everything measured: per system (tokio, mio, nbd, raw), per metric, one
/// value per run.
#[derive(Debug, Default)]
pub(crate) struct Results {
    pub(crate) values: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    /// Plot series (workload 7: server memory against bytes read).
    pub(crate) series: BTreeMap<String, Vec<(f64, f64)>>,
    /// What was skipped, and why.
    pub(crate) notes: Vec<String>,
    /// What failed (the exit status is then non-zero).
    pub(crate) failures: Vec<String>,
    /// Load average (1 min) at the start and the end.
    pub(crate) load: (f64, f64),
}

impl Results {
    fn add(&mut self, system: &str, prefix: &str, m: &Metrics) {
        let sys = self.values.entry(system.to_owned()).or_default();
        for (k, v) in m {
            sys.entry(format!("{prefix}.{k}")).or_default().push(*v);
        }
    }

    /// Records a measurement, or the failure that took its place.
    pub(crate) fn record(&mut self, system: &str, prefix: &str, r: Result<Metrics, String>) {
        match r {
            Ok(m) => self.add(system, prefix, &m),
            Err(e) => {
                eprintln!("e2e: {system} {prefix} failed: {e}");
                self.failures.push(format!("{system} {prefix}: {e}"));
            }
        }
    }

    /// The median over runs of a metric.
    pub(crate) fn get(&self, system: &str, metric: &str) -> Option<f64> {
        let v = self.values.get(system)?.get(metric)?;
        let m = median(v.clone());
        m.is_finite().then_some(m)
    }
}

/// The 1-minute load average.
pub(crate) fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Writes `bytes` of the data pattern to `path`.
fn make_data_file(path: &Path, bytes: u64) -> Result<(), String> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| e.to_string())?);
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0;
    while off < bytes {
        let n = (bytes - off).min(CHUNK as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(off + i as u64);
        }
        f.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        off += n as u64;
    }
    f.flush().map_err(|e| e.to_string())
}

fn make_sparse_file(path: &Path, bytes: u64) -> Result<(), String> {
    let f = std::fs::File::create(path).map_err(|e| e.to_string())?;
    f.set_len(bytes).map_err(|e| e.to_string())
}

fn s(x: impl ToString) -> String {
    x.to_string()
}

/// A workload's client process against `addr`; its metrics.
fn client(
    kind: Kind,
    addr: &str,
    workload: &str,
    args: &[(&str, String)],
) -> Result<Metrics, String> {
    let mut a = vec![
        s("client"),
        s("--transport"),
        s(kind.name()),
        s("--workload"),
        s(workload),
        s("--addr"),
        s(addr),
    ];
    for (k, v) in args {
        a.push(format!("--{k}"));
        a.push(v.clone());
    }
    Child::role(&a)?.result()
}

/// An rmmap server process over `root`.
fn server(kind: Kind, root: &Path) -> Result<(Child, String), String> {
    let mut c = Child::role(&[
        s("serve"),
        s("--transport"),
        s(kind.name()),
        s("--root"),
        root.display().to_string(),
    ])?;
    let addr = c.ready()?;
    Ok((c, addr))
}

/// Runs every part the settings ask for.
pub(crate) fn run(st: &Settings, dir: Option<PathBuf>) -> Result<Results, String> {
    let tmp;
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
            d
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("rmmap-e2e-")
                .tempdir()
                .map_err(|e| e.to_string())?;
            tmp.path().to_owned()
        }
    };
    let mut res = Results {
        load: (load_average(), f64::NAN),
        ..Results::default()
    };
    eprintln!("e2e: preparing files in {}", dir.display());
    make_data_file(&dir.join("seq.bin"), st.seq_bytes)?;
    make_sparse_file(&dir.join("big.bin"), st.big_bytes)?;
    let nbd_missing = nbd::missing();
    let wants_cli = st.wants("cli") || st.wants("relay");
    if let Some(why) = &nbd_missing
        && (st.wants_nbd() || wants_cli)
    {
        eprintln!("e2e: {why}");
        res.notes.push(why.clone());
    }
    let mut servers = Vec::new();
    for &k in &st.transports {
        servers.push((k, server(k, &dir)?));
    }
    let cli = if wants_cli {
        Some(CliBench::start(&dir, st.seq_bytes, nbd_missing.is_none())?)
    } else {
        None
    };
    for run in 0..st.runs {
        eprintln!("e2e: run {}/{}", run + 1, st.runs);
        if st.wants("raw") {
            raw(st, &mut res);
        }
        if nbd_missing.is_none() && st.wants_nbd() {
            nbd_run(st, &dir, run, &mut res);
        }
        for (k, (child, addr)) in &servers {
            rmmap_run(st, *k, (addr, child.pid()), &dir, run, &mut res);
        }
        if let Some(cli) = &cli {
            if st.wants("cli") {
                cli.direct(run, &mut res);
            }
            if st.wants("relay") {
                cli.relayed(st, run, &mut res);
            }
        }
    }
    for (_, (child, _)) in servers {
        child.finish()?;
    }
    if let Some(cli) = cli {
        cli.finish()?;
    }
    if st.wants("w7") {
        for &k in &st.transports {
            memory(st, k, &dir, &mut res)?;
        }
    }
    res.load.1 = load_average();
    Ok(res)
}

fn raw(st: &Settings, res: &mut Results) {
    eprintln!("e2e:   raw TCP ping-pong and stream");
    let ping = (|| {
        let mut echo = Child::role(&[s("raw-echo")])?;
        let addr = echo.ready()?;
        let r =
            Child::role(&[s("raw-ping"), s("--addr"), addr, s("--count"), s(st.pings)])?.result();
        echo.finish()?;
        r
    })();
    res.record("raw", "ping", ping);
    // The same ping-pong with the two processes pinned to different CPUs:
    // what a wake-up across CPUs costs here (the scheduler otherwise tends to
    // run a ping-pong pair on one CPU).
    if have("taskset") && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2) {
        let split = (|| {
            let mut echo = Child::role_on_cpu(1, &[s("raw-echo")])?;
            let addr = echo.ready()?;
            let ping = [
                s("raw-ping"),
                s("--addr"),
                addr,
                s("--count"),
                s(st.pings / 4),
            ];
            let r = Child::role_on_cpu(0, &ping)?.result();
            echo.finish()?;
            r
        })();
        res.record("raw", "ping_split", split);
    }
    let stream = (|| {
        let mut src = Child::role(&[s("raw-source"), s("--bytes"), s(st.seq_bytes)])?;
        let addr = src.ready()?;
        let r = Child::role(&[s("raw-sink"), s("--addr"), addr])?.result();
        src.finish()?;
        r
    })();
    res.record("raw", "stream", stream);
}

fn nbd_run(st: &Settings, dir: &Path, run: usize, res: &mut Results) {
    eprintln!("e2e:   NBD peer (qemu-nbd, nbdcopy, nbdsh)");
    let seq = dir.join("seq.bin");
    if st.wants_nbd_part("w1") {
        res.record("nbd", "w1", nbd::seq_read(&seq, st.seq_bytes));
    }
    if st.wants_nbd_part("w2") {
        let target = dir.join(format!("nbd-write-{run}.bin"));
        res.record("nbd", "w2", nbd::seq_write(&seq, &target, st.seq_bytes));
    }
    if st.wants_nbd_part("w3") {
        let seed = 100 + run as u64;
        res.record(
            "nbd",
            "w3",
            nbd::rand_read(&seq, st.seq_bytes, st.rand_count, 1, seed),
        );
        let m =
            nbd::rand_read(&seq, st.seq_bytes, st.rand_count, st.inflight, seed + 50).map(|m| {
                m.into_iter()
                    .map(|(k, v)| (format!("{k}_inflight"), v))
                    .collect()
            });
        res.record("nbd", "w3", m);
    }
}

/// A client workload with the CPU it took, client and server, per GiB of
/// `bytes` moved.
fn client_with_cpu(
    kind: Kind,
    (addr, server): (&str, u32),
    workload: &str,
    args: &[(&str, String)],
    bytes: u64,
) -> Result<Metrics, String> {
    let cpu = CpuMeter::start(&[server]);
    let mut m = client(kind, addr, workload, args)?;
    m.extend(cpu.stop().per_gib(bytes));
    Ok(m)
}

fn rmmap_run(
    st: &Settings,
    k: Kind,
    (addr, server): (&str, u32),
    dir: &Path,
    run: usize,
    res: &mut Results,
) {
    let sys = k.name();
    eprintln!("e2e:   rmmap-{sys}");
    let seq = ("path", s("seq.bin"));
    let seq_len = ("bytes", s(st.seq_bytes));
    if st.wants("w1") {
        res.record(
            sys,
            "w1",
            client_with_cpu(
                k,
                (addr, server),
                "seq-read",
                &[seq.clone(), seq_len.clone()],
                st.seq_bytes,
            ),
        );
    }
    if st.wants("w2") {
        let name = format!("write-{sys}-{run}.bin");
        res.record(
            sys,
            "w2",
            client_with_cpu(
                k,
                (addr, server),
                "seq-write",
                &[("path", name.clone()), seq_len.clone()],
                st.seq_bytes,
            ),
        );
        // As the NBD run does with its target: a file left behind would keep
        // its page cache, and every later run would write into memory the
        // machine never used before (much slower in this VM, see
        // docs/BENCHMARKS.md) instead of memory just freed.
        let _ = std::fs::remove_file(dir.join(name));
    }
    if st.wants("w3") {
        let count = ("count", s(st.rand_count));
        let seed = 100 + run as u64;
        let one = client(
            k,
            addr,
            "rand-read",
            &[
                seq.clone(),
                seq_len.clone(),
                count.clone(),
                ("seed", s(seed)),
            ],
        );
        res.record(sys, "w3", one);
        let many = client(
            k,
            addr,
            "rand-read",
            &[
                seq.clone(),
                seq_len.clone(),
                count,
                ("seed", s(seed + 50)),
                ("parallel", s(st.inflight)),
            ],
        )
        .map(|m| {
            m.into_iter()
                .map(|(k, v)| (format!("{k}_inflight"), v))
                .collect()
        });
        res.record(sys, "w3", many);
    }
    if st.wants("w4") {
        res.record(
            sys,
            "w4",
            client(k, addr, "cache-hit", &[seq.clone(), ("count", s(st.hits))]),
        );
    }
    if st.wants("w5") {
        let path = ("path", format!("hand-{sys}-{run}.bin"));
        res.record(
            sys,
            "w5",
            client(k, addr, "handover", &[path, ("count", s(st.turns))]),
        );
    }
    if st.wants("w6") {
        for &n in &st.clients {
            let m = client(
                k,
                addr,
                "disjoint",
                &[
                    ("path", s("big.bin")),
                    ("bytes", s(st.big_bytes)),
                    ("parallel", s(n)),
                    ("secs", s(st.disjoint_secs)),
                ],
            )
            .map(|m| {
                m.into_iter()
                    .map(|(key, v)| (format!("{key}_c{n}"), v))
                    .collect()
            });
            res.record(sys, "w6", m);
        }
    }
}

/// Workload 7 against a fresh server: memory per idle session, then memory
/// along one client's read of the large file.
fn memory(st: &Settings, k: Kind, dir: &Path, res: &mut Results) -> Result<(), String> {
    let sys = k.name();
    eprintln!("e2e:   rmmap-{sys}: server memory (idle sessions, large read)");
    let (srv, addr) = server(k, dir)?;
    let pid = srv.pid();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let idle = |n: usize| -> Result<(u64, u64), String> {
        let mut c = Child::role(&[
            s("client"),
            s("--transport"),
            s(sys),
            s("--workload"),
            s("idle"),
            s("--addr"),
            addr.clone(),
            s("--count"),
            s(n),
        ])?;
        let before = rss_kib(pid);
        c.ready()?;
        std::thread::sleep(Duration::from_millis(500));
        let after = rss_kib(pid);
        c.finish()?;
        Ok((before, after))
    };
    // One session first, so the server's one-time allocations are made.
    let r = idle(1).and_then(|_| {
        std::thread::sleep(Duration::from_millis(200));
        idle(st.idle)
    });
    match r {
        Ok((before, after)) => {
            let per = after.saturating_sub(before) as f64 / st.idle as f64;
            res.add(
                sys,
                "w7",
                &Metrics::from([
                    ("idle_kib".into(), per),
                    ("idle_base_mib".into(), mib(before)),
                    ("idle_all_mib".into(), mib(after)),
                ]),
            );
        }
        Err(e) => res.failures.push(format!("{sys} w7 idle: {e}")),
    }
    match big_read(st, k, &addr, pid) {
        Ok((m, points)) => {
            res.add(sys, "w7", &m);
            res.series.insert(format!("w7.{sys}"), points);
        }
        Err(e) => res.failures.push(format!("{sys} w7 large read: {e}")),
    }
    srv.finish()
}

type Points = Vec<(f64, f64)>;

/// One client reads the large file; the server's RSS is sampled at each
/// progress line, and its peak every 20 ms.
fn big_read(st: &Settings, k: Kind, addr: &str, pid: u32) -> Result<(Metrics, Points), String> {
    let base = rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(base));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                peak.fetch_max(rss_kib(pid), Ordering::AcqRel);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut c = Child::role(&[
        s("client"),
        s("--transport"),
        s(k.name()),
        s("--workload"),
        s("big-read"),
        s("--addr"),
        s(addr),
        s("--path"),
        s("big.bin"),
        s("--bytes"),
        s(st.big_bytes),
    ])?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut points = vec![(0.0, mib(base))];
    let mut result = None;
    while let Some(line) = c.next_line() {
        if let Some(b) = line.strip_prefix("progress ") {
            let bytes: f64 = b.trim().parse().unwrap_or(0.0);
            points.push((bytes / (1u64 << 30) as f64, mib(rss_kib(pid))));
        } else if let Some(m) = crate::stats::parse_result(&line) {
            result = Some(m);
        }
    }
    c.finish()?;
    stop.store(true, Ordering::Release);
    let _ = sampler.join();
    let m = result.ok_or("no result from the large read")?;
    // Growth over the last three quarters of the file: zero when memory does
    // not grow with the file.
    let quarter = points
        .iter()
        .find(|(g, _)| *g * (1u64 << 30) as f64 >= st.big_bytes as f64 / 4.0)
        .map_or(mib(base), |p| p.1);
    let peak = mib(peak.load(Ordering::Acquire));
    Ok((
        Metrics::from([
            (
                "big_mib_s".into(),
                m.get("mib_s").copied().unwrap_or(f64::NAN),
            ),
            ("big_base_mib".into(), mib(base)),
            ("big_quarter_mib".into(), quarter),
            ("big_peak_mib".into(), peak),
            ("big_growth_mib".into(), peak - quarter),
        ]),
        points,
    ))
}
