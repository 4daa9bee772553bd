//! What the kernel says about the server process: resident memory (VmRSS,
//! and its high-water mark VmHWM), open sockets, CPU time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// VmRSS and VmHWM, in KiB.
#[derive(Copy, Clone, Debug, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

/// Sockets the process holds open.
pub fn sockets(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// User plus system CPU time of the process, in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after it are plain.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3 of the whole line, utime 14, stime 15.
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

/// Samples VmRSS every 10 ms from `start()` to `stop()`: before, peak and
/// after figures of one flood.
pub struct MemoryWatch {
    pid: u32,
    before: Memory,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The figures of one flood, in KiB.
#[derive(Copy, Clone, Debug)]
pub struct Figures {
    pub before_rss: u64,
    /// The highest VmRSS sampled, or VmHWM if higher (it catches peaks
    /// between samples, but also counts the server's startup).
    pub peak_rss: u64,
    pub hwm: u64,
    pub after_rss: u64,
}

impl Figures {
    /// Growth of the peak over the start, in MiB.
    pub fn peak_growth_mib(&self) -> f64 {
        self.peak_rss.saturating_sub(self.before_rss) as f64 / 1024.0
    }

    pub fn print(&self, what: &str) {
        println!(
            "memory [{what}]: VmRSS before {:.1} MiB, peak {:.1} MiB (VmHWM {:.1} MiB), after {:.1} MiB",
            self.before_rss as f64 / 1024.0,
            self.peak_rss as f64 / 1024.0,
            self.hwm as f64 / 1024.0,
            self.after_rss as f64 / 1024.0,
        );
    }

    /// Fails unless the peak stayed within `limit_mib` of the start.
    pub fn assert_peak_within(&self, what: &str, limit_mib: f64) {
        assert!(
            self.peak_growth_mib() <= limit_mib,
            "{what}: the server's memory grew by {:.1} MiB (limit {limit_mib} MiB): {self:?}",
            self.peak_growth_mib()
        );
    }
}

impl MemoryWatch {
    pub fn start(pid: u32) -> MemoryWatch {
        let before = memory(pid);
        let peak = Arc::new(AtomicU64::new(before.rss_kib));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(memory(pid).rss_kib, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        MemoryWatch {
            pid,
            before,
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// The figures so far (the watch keeps sampling).
    pub fn figures(&self) -> Figures {
        let now = memory(self.pid);
        let sampled = self.peak.load(Ordering::Relaxed).max(now.rss_kib);
        Figures {
            before_rss: self.before.rss_kib,
            peak_rss: sampled,
            hwm: now.hwm_kib,
            after_rss: now.rss_kib,
        }
    }

    pub fn stop(mut self) -> Figures {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.figures()
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
