//! The well-behaved client every case runs beside the attack: an rmmap-mio
//! client on its own thread that keeps writing random bytes to its own file,
//! reads each write back, syncs every few operations (a round trip to the
//! server), and at the end checks every byte it wrote, through the server
//! and on disk.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rmmap_mio::{Access, Client, ClientConfig, ClientEvent, MapOptions};

use super::{Rng, eventually};

/// The bystander's file and its size (16 pages).
pub const FILE: &str = "bystander.bin";
pub const LEN: usize = 16 * 4096;
/// Sync (a round trip) every this many writes.
const SYNC_EVERY: u64 = 4;

pub struct Bystander {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    thread: JoinHandle<Result<Run, String>>,
}

/// What the bystander did.
#[derive(Debug)]
pub struct Report {
    pub ops: u64,
    pub syncs: u64,
    pub reconnects: u64,
}

struct Run {
    report: Report,
    model: Vec<u8>,
}

impl Bystander {
    /// Connects, maps its file and starts working; returns once the first
    /// operations have completed.
    pub fn start(addr: &str, root: &Path) -> Bystander {
        std::fs::write(root.join(FILE), vec![0u8; LEN]).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = {
            let (addr, stop, ops) = (addr.to_owned(), stop.clone(), ops.clone());
            std::thread::spawn(move || work(&addr, &stop, &ops, tx))
        };
        let b = Bystander { stop, ops, thread };
        match rx.recv_timeout(super::PATIENCE) {
            Ok(()) => b,
            Err(_) => {
                let why = b.thread.join().map_or_else(
                    |_| "it panicked".to_owned(),
                    |r| r.err().unwrap_or_default(),
                );
                panic!("the bystander did not start: {why}");
            }
        }
    }

    /// Waits until it has done a few more operations (at least two round
    /// trips to the server).
    pub fn progresses(&self, limit: Duration) -> bool {
        let goal = self.ops.load(Ordering::Relaxed) + 2 * SYNC_EVERY + 1;
        eventually(limit, || self.ops.load(Ordering::Relaxed) >= goal)
    }

    /// Stops, then checks its data through the server (done by the thread)
    /// and in the file on disk.
    pub fn finish(self, root: &Path) -> Result<Report, String> {
        self.stop.store(true, Ordering::Relaxed);
        let run = self
            .thread
            .join()
            .map_err(|_| "the bystander panicked".to_owned())??;
        let disk = std::fs::read(root.join(FILE)).map_err(|e| e.to_string())?;
        if disk != run.model {
            let at = disk.iter().zip(&run.model).position(|(a, b)| a != b);
            return Err(format!(
                "the file on disk differs from its writes at {at:?}"
            ));
        }
        Ok(run.report)
    }
}

fn config() -> ClientConfig {
    ClientConfig {
        give_up_after: Some(Duration::from_secs(30)),
        ..ClientConfig::default()
    }
}

fn work(
    addr: &str,
    stop: &AtomicBool,
    ops: &AtomicU64,
    started: std::sync::mpsc::Sender<()>,
) -> Result<Run, String> {
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: rmmap_mio::OpError| format!("{what}: {err}")
    };
    let client = Client::connect(addr, config()).map_err(|err| format!("connect: {err}"))?;
    let events = client.events();
    let m = client
        .map(FILE, 0..LEN as u64, Access::ReadWrite)
        .map_err(e("map"))?;
    let mut model = vec![0u8; LEN];
    let mut rng = Rng::new(0xb1 ^ u64::from(std::process::id()));
    let mut report = Report {
        ops: 0,
        syncs: 0,
        reconnects: 0,
    };
    let mut started = Some(started);
    while report.ops < 2 * SYNC_EVERY || !stop.load(Ordering::Relaxed) {
        let len = 1 + rng.below(200) as usize;
        let off = rng.below((LEN - len) as u64) as usize;
        let data = rng.bytes(len);
        m.write(off as u64, &data).map_err(e("write"))?;
        model[off..off + len].copy_from_slice(&data);
        let back = m.read_bytes(off as u64, len as u64).map_err(e("read"))?;
        if back[..] != data[..] {
            return Err(format!("read {len} bytes at {off} back wrong"));
        }
        report.ops += 1;
        if report.ops % SYNC_EVERY == 0 {
            m.sync().map_err(e("sync"))?;
            report.syncs += 1;
        }
        if report.ops % 64 == 0 {
            check_all(&m, &model)?;
        }
        ops.store(report.ops, Ordering::Relaxed);
        if report.ops == 2 * SYNC_EVERY
            && let Some(s) = started.take()
        {
            let _ = s.send(());
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    m.sync().map_err(e("sync"))?;
    check_all(&m, &model)?;
    for ev in events.try_iter() {
        match ev {
            ClientEvent::ConnectionLost => report.reconnects += 1,
            ClientEvent::SessionLost { reason, .. } => {
                return Err(format!("the session was lost: {reason:?}"));
            }
            ClientEvent::Failed { reason } => return Err(format!("failed: {reason}")),
            _ => {}
        }
    }
    client.close().map_err(e("close"))?;
    Ok(Run { report, model })
}

fn check_all(m: &rmmap_mio::Mapping, model: &[u8]) -> Result<(), String> {
    let all = m
        .read_bytes(0, model.len() as u64)
        .map_err(|err| format!("read all: {err}"))?;
    match all.iter().zip(model).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(at) => Err(format!("byte {at} differs from what was written")),
    }
}

/// A new client connects, creates and maps `path`, writes, reads back,
/// syncs and closes.
pub fn fresh_client_works(addr: &str, path: &str) -> Result<(), String> {
    let client = Client::connect(addr, config()).map_err(|e| format!("connect: {e}"))?;
    let opts = MapOptions {
        access: Access::ReadWrite,
        create: true,
    };
    let m = client
        .map_with(path, 0..8192, opts)
        .map_err(|e| format!("map: {e}"))?;
    m.write(4000, b"fresh and well")
        .map_err(|e| format!("write: {e}"))?;
    let back = m.read_bytes(4000, 14).map_err(|e| format!("read: {e}"))?;
    if &back[..] != b"fresh and well" {
        return Err(format!("read back {back:?}"));
    }
    m.sync().map_err(|e| format!("sync: {e}"))?;
    client.close().map_err(|e| format!("close: {e}"))?;
    Ok(())
}
