//! The command-line comparison (issue 14): `rmmap cat`, `rmmap get` and
//! `rmmap put` (the release binary, against `rmmap serve`) against
//! `nbdcopy` moving the same file out of and into `qemu-nbd`: directly
//! (part `cli`), and through the delaying relay at several round-trip times
//! (part `relay`). Every run of either side is one whole process, timed from
//! its start to its exit, with the CPU of the client and the server.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::nbd::{self, NbdServer, Transfer};
use crate::plan::{Results, Settings};
use crate::proc::{Child, CpuMeter, timed};
use crate::relay::Relay;
use crate::stats::{Metrics, mib_s, pattern};

/// What is moved, named after the rmmap command; the NBD counterpart of
/// each is in [`Op::nbd`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `rmmap cat ADDR FILE > /dev/null`; `nbdcopy nbd://... null:`.
    Cat,
    /// `rmmap get ADDR FILE LOCAL`; `nbdcopy nbd://... LOCAL`.
    Get,
    /// `rmmap put LOCAL ADDR FILE` (its sync included); `nbdcopy --flush
    /// LOCAL nbd://...` into a fresh file behind the export.
    Put,
}

pub(crate) const OPS: [Op; 3] = [Op::Cat, Op::Get, Op::Put];

impl Op {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Cat => "cat",
            Op::Get => "get",
            Op::Put => "put",
        }
    }

    /// The rmmap command, as the report shows it.
    pub(crate) fn rmmap(self) -> &'static str {
        match self {
            Op::Cat => "`rmmap cat` (to /dev/null)",
            Op::Get => "`rmmap get` (to a file)",
            Op::Put => "`rmmap put` (sync included)",
        }
    }

    /// The NBD command it is compared with.
    pub(crate) fn nbd(self) -> &'static str {
        match self {
            Op::Cat => "`nbdcopy nbd://... null:`",
            Op::Get => "`nbdcopy nbd://... FILE`",
            Op::Put => "`nbdcopy --flush FILE nbd://...`",
        }
    }
}

/// The round-trip times of the relay part, in ms (0: the relay alone).
pub(crate) fn rtt_key(rtt_ms: u32) -> String {
    format!("relay.rtt{rtt_ms}")
}

/// The release `rmmap` binary, built by the harness itself with `cargo
/// build --release -p rmmap-cli` (a no-op when it is up to date), so the
/// command measured is the one of the tree under test, never a stale one.
/// It is built in a target directory of its own, `target/e2e-rmmap/`, next
/// to the one this executable runs from: `-p rmmap-cli` alone unifies other
/// features than `-p rmmap-benches`, and in one target directory each build
/// would recompile the shared crates the other just built (minutes each
/// run). Without cargo (the harness copied elsewhere), an `rmmap` already
/// there is used.
fn rmmap_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // target/<profile>/e2e → target/e2e-rmmap
    let target = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("the harness is not in a target directory")?
        .join("e2e-rmmap");
    let bin = target.join("release").join("rmmap");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    eprintln!("e2e: building the release rmmap (cargo build --release -p rmmap-cli)");
    let built = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "rmmap-cli"])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .is_ok_and(|s| s.success());
    match (built, bin.is_file()) {
        (true, true) => Ok(bin),
        (false, true) => {
            eprintln!(
                "e2e: cannot build rmmap-cli; measuring the {} already there",
                bin.display()
            );
            Ok(bin)
        }
        (_, false) => Err(format!(
            "no rmmap binary at {} (cargo build --release -p rmmap-cli failed)",
            bin.display()
        )),
    }
}

/// The rmmap side of the comparison: the binary, and `rmmap serve` over a
/// root of its own that holds the benchmark's file (a hard link: the same
/// file NBD exports, in the same page cache).
pub(crate) struct CliBench {
    rmmap: PathBuf,
    server: Child,
    addr: String,
    root: PathBuf,
    dir: PathBuf,
    bytes: u64,
    /// NBD's tools are there.
    nbd: bool,
}

impl CliBench {
    pub(crate) fn start(dir: &Path, bytes: u64, nbd: bool) -> Result<Self, String> {
        let rmmap = rmmap_binary()?;
        let root = dir.join("cli-root");
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        let file = root.join("seq.bin");
        if !file.exists() {
            std::fs::hard_link(dir.join("seq.bin"), &file)
                .or_else(|_| std::fs::copy(dir.join("seq.bin"), &file).map(drop))
                .map_err(|e| format!("cannot put seq.bin in {}: {e}", root.display()))?;
        }
        let mut cmd = Command::new(&rmmap);
        cmd.arg("serve")
            .arg(&root)
            .args(["--listen", "127.0.0.1:0", "--restart-grace-ms", "0"])
            .env("RUST_LOG", "warn");
        let mut server = Child::spawn("rmmap serve", cmd)?;
        let addr = loop {
            let line = server
                .next_line()
                .ok_or("rmmap serve ended before it was serving")?;
            if let Some((_, addr)) = line.rsplit_once(" on ")
                && line.starts_with("rmmap: serving")
            {
                break addr.trim().to_owned();
            }
        };
        Ok(CliBench {
            rmmap,
            server,
            addr,
            root,
            dir: dir.to_owned(),
            bytes,
            nbd,
        })
    }

    /// Stops `rmmap serve` (SIGTERM: it syncs and exits).
    pub(crate) fn finish(self) -> Result<(), String> {
        self.server.terminate()
    }

    /// One run of the direct comparison: each command and its NBD
    /// counterpart back to back, which goes first alternating by run.
    pub(crate) fn direct(&self, run: usize, res: &mut Results) {
        eprintln!("e2e:   command line: rmmap cat/get/put and nbdcopy");
        for op in OPS {
            self.pair(op, None, run, &format!("cli.{}", op.name()), res);
        }
    }

    /// One run of the relay part: at each RTT the raw stream and a
    /// ping-pong through the relay, then each command and its NBD
    /// counterpart; first the raw stream without the relay, for the relay's
    /// ceiling.
    pub(crate) fn relayed(&self, st: &Settings, run: usize, res: &mut Results) {
        eprintln!("e2e:   through the delaying relay: RTT {:?} ms", st.rtts_ms);
        res.record("raw", "relay.direct.stream", raw_stream(st.seq_bytes, None));
        for &rtt in &st.rtts_ms {
            let one_way = Duration::from_micros(u64::from(rtt) * 500);
            let key = rtt_key(rtt);
            res.record(
                "raw",
                &format!("{key}.stream"),
                raw_stream(st.seq_bytes, Some(one_way)),
            );
            let pings = if rtt == 0 {
                st.pings / 10
            } else {
                st.relay_pings
            };
            res.record(
                "raw",
                &format!("{key}.ping"),
                raw_ping(pings, Some(one_way)),
            );
            for op in OPS {
                self.pair(op, Some(one_way), run, &format!("{key}.{}", op.name()), res);
            }
        }
    }

    /// rmmap's command and NBD's, in an order alternating by run.
    fn pair(&self, op: Op, via: Option<Duration>, run: usize, key: &str, res: &mut Results) {
        let rmmap_first = run % 2 == 0;
        for turn in 0..2 {
            if (turn == 0) == rmmap_first {
                res.record("rmmap", key, self.rmmap_op(op, via, run));
            } else if self.nbd {
                res.record("nbd", key, self.nbd_op(op, via, run));
            }
        }
    }

    /// One rmmap command, whole process timed; its CPU and the server's.
    fn rmmap_op(&self, op: Op, via: Option<Duration>, run: usize) -> Result<Metrics, String> {
        let relay = via.map(|d| Relay::start(&self.addr, d)).transpose()?;
        let addr = relay.as_ref().map_or(self.addr.as_str(), |r| &r.addr);
        let local = self.dir.join(format!("cli-get-{run}.bin"));
        let remote = format!("cli-put-{run}.bin");
        let mut cmd = Command::new(&self.rmmap);
        match op {
            Op::Cat => cmd.args(["cat", addr, "seq.bin"]),
            Op::Get => cmd.args(["get", addr, "seq.bin"]).arg(&local),
            Op::Put => cmd
                .arg("put")
                .arg(self.dir.join("seq.bin"))
                .args([addr, &remote]),
        };
        let cpu = CpuMeter::start(&[self.server.pid()]);
        let took = timed(cmd);
        let used = cpu.stop();
        let pipe = relay.map(Relay::stop).transpose();
        let written = match op {
            Op::Cat => None,
            Op::Get => Some(local),
            Op::Put => Some(self.root.join(&remote)),
        };
        let checked = match (&took, &written) {
            (Ok(_), Some(f)) => check_copy(f, self.bytes),
            _ => Ok(()),
        };
        if let Some(f) = written {
            // A file left behind would keep its page cache; later runs
            // would write into memory the VM never used (see W2).
            let _ = std::fs::remove_file(f);
        }
        let took = took?;
        checked?;
        let mut m = used.per_gib(self.bytes);
        m.insert("mib_s".into(), mib_s(self.bytes, took));
        m.extend(pipe?.unwrap_or_default());
        Ok(m)
    }

    /// `nbdcopy` doing what `op` does, against a fresh `qemu-nbd`.
    fn nbd_op(&self, op: Op, via: Option<Duration>, run: usize) -> Result<Metrics, String> {
        let seq = self.dir.join("seq.bin");
        let local = self.dir.join(format!("nbd-get-{run}.bin"));
        let target = self.dir.join(format!("nbd-put-{run}.bin"));
        let server = match op {
            Op::Cat | Op::Get => NbdServer::start(&seq, true)?,
            Op::Put => {
                nbd::sparse_target(&target, self.bytes)?;
                NbdServer::start(&target, false)?
            }
        };
        let relay = via.map(|d| Relay::start(&server.addr, d)).transpose()?;
        let uri = relay
            .as_ref()
            .map_or(server.uri.clone(), |r| format!("nbd://{}", r.addr));
        let transfer = match op {
            Op::Cat => Transfer::ToNull,
            Op::Get => Transfer::ToFile(&local),
            Op::Put => Transfer::FromFile(&seq),
        };
        let m = nbd::nbdcopy(&server, &uri, transfer, self.bytes);
        let pipe = relay.map(Relay::stop).transpose();
        drop(server);
        let written = match op {
            Op::Cat => None,
            Op::Get => Some(local),
            Op::Put => Some(target),
        };
        let checked = match (&m, &written) {
            (Ok(_), Some(f)) => check_copy(f, self.bytes),
            _ => Ok(()),
        };
        if let Some(f) = written {
            let _ = std::fs::remove_file(f);
        }
        let mut m = m?;
        checked?;
        m.extend(pipe?.unwrap_or_default());
        Ok(m)
    }
}

/// A copy of the benchmark's file: its length, and bytes spread over it.
fn check_copy(path: &Path, bytes: u64) -> Result<(), String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len != bytes {
        return Err(format!("{} has {len} bytes, not {bytes}", path.display()));
    }
    for i in 0..16u64 {
        let off = (bytes - 1) * i / 15;
        let mut b = [0u8];
        f.seek(SeekFrom::Start(off))
            .and_then(|_| f.read_exact(&mut b))
            .map_err(|e| e.to_string())?;
        if b[0] != pattern(off) {
            return Err(format!("{}: wrong byte at offset {off}", path.display()));
        }
    }
    Ok(())
}

/// The raw TCP stream of `bytes`, through a relay if `via` is given; with
/// the relay's pipe figures and its CPU per GiB.
fn raw_stream(bytes: u64, via: Option<Duration>) -> Result<Metrics, String> {
    let mut src = Child::role(&["raw-source".into(), "--bytes".into(), bytes.to_string()])?;
    let addr = src.ready()?;
    let relay = via.map(|d| Relay::start(&addr, d)).transpose()?;
    let to = relay.as_ref().map_or(addr.clone(), |r| r.addr.clone());
    let r = Child::role(&["raw-sink".into(), "--addr".into(), to])?.result();
    let pipe = relay.map(Relay::stop).transpose();
    src.finish()?;
    let mut m = r?;
    if let Some(mut p) = pipe? {
        let gib = bytes as f64 / (1u64 << 30) as f64;
        if let Some(cpu) = p.remove("pipe_relay_cpu_s") {
            m.insert("relay_cpu_s_gib".into(), cpu / gib);
        }
        m.extend(p);
    }
    Ok(m)
}

/// The raw ping-pong through a relay: the round trip the relay makes.
fn raw_ping(count: usize, via: Option<Duration>) -> Result<Metrics, String> {
    let mut echo = Child::role(&["raw-echo".into()])?;
    let addr = echo.ready()?;
    let relay = via.map(|d| Relay::start(&addr, d)).transpose()?;
    let to = relay.as_ref().map_or(addr.clone(), |r| r.addr.clone());
    let r = Child::role(&[
        "raw-ping".into(),
        "--addr".into(),
        to,
        "--count".into(),
        count.max(1).to_string(),
    ])?
    .result();
    if let Some(relay) = relay {
        relay.stop()?;
    }
    echo.finish()?;
    r
}
