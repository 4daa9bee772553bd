//! The NBD peer: `qemu-nbd` serving a file over loopback TCP, read and
//! written with `nbdcopy` (sequential) and `nbdsh` (random 4 KiB reads).
//! Skipped, with a message saying why, when the tools are not installed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::proc::{Child, CpuMeter, free_port, have, timed};
use crate::stats::{Metrics, mib_s, parse_result};

/// The tools the peer needs (Debian: qemu-utils, libnbd-bin).
const TOOLS: [&str; 3] = ["qemu-nbd", "nbdcopy", "nbdsh"];

/// `None` when every tool is there, else the message to print.
pub(crate) fn missing() -> Option<String> {
    let gone: Vec<&str> = TOOLS.into_iter().filter(|t| !have(t)).collect();
    if !gone.is_empty() {
        return Some(format!(
            "NBD peer skipped: {} not installed (Debian: apt-get install qemu-utils libnbd-bin python3-libnbd)",
            gone.join(", ")
        ));
    }
    let works = nbdsh()
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!works).then(|| {
        "NBD peer skipped: nbdsh does not start (its Python module `nbd` is missing: \
         apt-get install python3-libnbd)"
            .to_owned()
    })
}

/// `nbdsh` under the system's Python (its module is installed there, while a
/// `python3` earlier on the PATH, e.g. pyenv's, may not have it).
fn nbdsh() -> Command {
    let mut cmd = Command::new("nbdsh");
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("/usr/bin:/bin:{path}"));
    cmd
}

/// `qemu-nbd` serving `file` until dropped.
pub(crate) struct NbdServer {
    child: Option<Child>,
    /// `127.0.0.1:PORT`, for a relay in front of it.
    pub(crate) addr: String,
    pub(crate) uri: String,
}

impl NbdServer {
    pub(crate) fn start(file: &Path, read_only: bool) -> Result<Self, String> {
        let port = free_port()?;
        let mut cmd = Command::new("qemu-nbd");
        cmd.args([
            "--format=raw",
            "--bind=127.0.0.1",
            "--persistent",
            "--shared=0",
        ])
        .arg(format!("--port={port}"))
        .arg("--cache=writeback");
        if read_only {
            cmd.arg("--read-only");
        }
        cmd.arg(file);
        let child = Child::spawn("qemu-nbd", cmd)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                child.kill();
                return Err("qemu-nbd did not start listening within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(NbdServer {
            child: Some(child),
            addr: format!("127.0.0.1:{port}"),
            uri: format!("nbd://127.0.0.1:{port}"),
        })
    }

    /// The server's pid (for its CPU time).
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::pid)
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            c.kill();
        }
    }
}

/// What one `nbdcopy` run copies.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Transfer<'a> {
    /// The export to nowhere: `nbdcopy nbd://... null:`.
    ToNull,
    /// The export to a local file: `nbdcopy nbd://... FILE`.
    ToFile(&'a Path),
    /// A local file into the export, flushed: `nbdcopy --flush FILE nbd://...`.
    FromFile(&'a Path),
}

/// One `nbdcopy` run against `server`, reached at `uri` (the server's own,
/// or a relay's in front of it), whole process timed: MiB/s, and the CPU of
/// nbdcopy and qemu-nbd per GiB.
pub(crate) fn nbdcopy(
    server: &NbdServer,
    uri: &str,
    copy: Transfer<'_>,
    bytes: u64,
) -> Result<Metrics, String> {
    let mut cmd = Command::new("nbdcopy");
    match copy {
        Transfer::ToNull => cmd.arg(uri).arg("null:"),
        Transfer::ToFile(f) => cmd.arg(uri).arg(f),
        Transfer::FromFile(f) => cmd.arg("--flush").arg(f).arg(uri),
    };
    let cpu = CpuMeter::start(&[server.pid()]);
    let took = timed(cmd)?;
    let mut m = cpu.stop().per_gib(bytes);
    m.insert("mib_s".into(), mib_s(bytes, took));
    Ok(m)
}

/// A fresh sparse file of `bytes` for an export to be written (NBD cannot
/// create or grow a file).
pub(crate) fn sparse_target(target: &Path, bytes: u64) -> Result<(), String> {
    let f = std::fs::File::create(target).map_err(|e| e.to_string())?;
    f.set_len(bytes).map_err(|e| e.to_string())
}

/// Workload 1: `nbdcopy` from the export to nowhere (whole process timed).
pub(crate) fn seq_read(file: &Path, bytes: u64) -> Result<Metrics, String> {
    let s = NbdServer::start(file, true)?;
    nbdcopy(&s, &s.uri, Transfer::ToNull, bytes)
}

/// Workload 2: `nbdcopy --flush` of a local file (in the page cache) into
/// a fresh sparse file behind the export.
pub(crate) fn seq_write(source: &Path, target: &Path, bytes: u64) -> Result<Metrics, String> {
    sparse_target(target, bytes)?;
    let s = NbdServer::start(target, false)?;
    let m = nbdcopy(&s, &s.uri, Transfer::FromFile(source), bytes);
    drop(s);
    let _ = std::fs::remove_file(target);
    m
}

/// Workload 3 through libnbd's Python shell: `count` distinct random pages,
/// one at a time (each timed) or `inflight` at once (aio).
const RANDOM_READS: &str = r#"
import random, time
rnd = random.Random(SEED)
pages = rnd.sample(range(NPAGES), COUNT)
if INFLIGHT <= 1:
    lat = []
    t0 = time.perf_counter()
    for p in pages:
        t = time.perf_counter_ns()
        h.pread(4096, p * 4096)
        lat.append((time.perf_counter_ns() - t) / 1000.0)
    took = time.perf_counter() - t0
    lat.sort()
    q = lambda x: lat[int(round((len(lat) - 1) * x))]
    print("result p50_us=%f p99_us=%f ops_s=%f" % (q(0.5), q(0.99), len(pages) / took))
else:
    state = {"inflight": 0, "done": 0}
    def done(err):
        state["inflight"] -= 1
        state["done"] += 1
        return 1
    bufs = [nbd.Buffer(4096) for _ in range(INFLIGHT)]
    i = 0
    t0 = time.perf_counter()
    while state["done"] < len(pages):
        while state["inflight"] < INFLIGHT and i < len(pages):
            h.aio_pread(bufs[i % INFLIGHT], pages[i] * 4096, completion=done)
            state["inflight"] += 1
            i += 1
        h.poll(-1)
    took = time.perf_counter() - t0
    print("result ops_s=%f" % (len(pages) / took))
"#;

pub(crate) fn rand_read(
    file: &Path,
    bytes: u64,
    count: usize,
    inflight: usize,
    seed: u64,
) -> Result<Metrics, String> {
    let s = NbdServer::start(file, true)?;
    let script = RANDOM_READS
        .replace("SEED", &seed.to_string())
        .replace("NPAGES", &(bytes / 4096).to_string())
        .replace("COUNT", &count.to_string())
        .replace("INFLIGHT", &inflight.to_string());
    let out = nbdsh()
        .arg("-u")
        .arg(&s.uri)
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "nbdsh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(parse_result)
        .ok_or_else(|| "nbdsh printed no result".into())
}
