//! Child processes: this binary re-executed in a role, or an outside tool;
//! their stdout read line by line, their memory read from /proc.

use std::io::{BufRead, BufReader, Lines};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::stats::{Metrics, parse_result};

/// A child gets at most this long before it is killed (a hung run must not
/// hang the benchmark).
const CHILD_TIMEOUT: Duration = Duration::from_secs(900);

/// A running child with piped stdin and stdout.
pub(crate) struct Child {
    name: String,
    child: std::process::Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    done: Arc<AtomicBool>,
}

impl Child {
    /// This executable in a role: `e2e role ARGS...`.
    pub(crate) fn role(args: &[String]) -> Result<Child, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.arg("role").args(args);
        Child::spawn(args.first().map_or("role", |s| s.as_str()), cmd)
    }

    /// This executable in a role, pinned to one CPU with `taskset`.
    pub(crate) fn role_on_cpu(cpu: usize, args: &[String]) -> Result<Child, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c")
            .arg(cpu.to_string())
            .arg(exe)
            .arg("role")
            .args(args);
        Child::spawn("taskset", cmd)
    }

    /// Any command, with a watchdog.
    pub(crate) fn spawn(name: &str, mut cmd: Command) -> Result<Child, String> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped");
        let done = Arc::new(AtomicBool::new(false));
        let (pid, flag, who) = (child.id(), done.clone(), name.to_owned());
        std::thread::spawn(move || {
            let step = Duration::from_millis(200);
            let mut waited = Duration::ZERO;
            while waited < CHILD_TIMEOUT {
                if flag.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(step);
                waited += step;
            }
            if !flag.load(Ordering::Acquire) {
                eprintln!("e2e: {who} (pid {pid}) took over {CHILD_TIMEOUT:?}; killing it");
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        });
        Ok(Child {
            name: name.to_owned(),
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            done,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the child prints (None at its end).
    pub(crate) fn next_line(&mut self) -> Option<String> {
        self.lines.next().and_then(Result::ok)
    }

    /// Waits for `ready ADDR`; returns ADDR.
    pub(crate) fn ready(&mut self) -> Result<String, String> {
        while let Some(l) = self.next_line() {
            if let Some(addr) = l.strip_prefix("ready") {
                return Ok(addr.trim().to_owned());
            }
        }
        Err(format!("{} ended before it was ready", self.name))
    }

    /// Reads until the `result` line, then waits for a clean exit.
    pub(crate) fn result(mut self) -> Result<Metrics, String> {
        let mut found = None;
        while let Some(l) = self.next_line() {
            if let Some(m) = parse_result(&l) {
                found = Some(m);
            }
        }
        self.finish()?;
        found.ok_or_else(|| "no result line".to_owned())
    }

    /// Closes stdin (a role that reports when it ends, the relay), reads
    /// its `result` line, and waits for the exit.
    pub(crate) fn stop(mut self) -> Result<Metrics, String> {
        drop(self.stdin.take());
        let mut found = None;
        while let Some(l) = self.next_line() {
            if let Some(m) = parse_result(&l) {
                found = Some(m);
            }
        }
        self.finish()?;
        found.ok_or_else(|| "no result line".to_owned())
    }

    /// Closes stdin (a server or idle role then ends) and waits for the exit.
    pub(crate) fn finish(mut self) -> Result<(), String> {
        drop(self.stdin.take());
        let status = self.child.wait().map_err(|e| e.to_string())?;
        self.done.store(true, Ordering::Release);
        if status.success() {
            Ok(())
        } else {
            Err(format!("{} failed ({status})", self.name))
        }
    }

    /// Stops a server that ends on SIGTERM (`rmmap serve`: it then recalls
    /// and syncs before it exits) and waits for it.
    pub(crate) fn terminate(self) -> Result<(), String> {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .is_ok_and(|s| s.success());
        if !sent {
            self.kill();
            return Err("cannot send SIGTERM (no `kill` command?)".into());
        }
        self.finish()
    }

    /// Ends an outside server that does not read stdin (qemu-nbd).
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.done.store(true, Ordering::Release);
    }
}

/// A process's resident memory in KiB (VmRSS), 0 when it cannot be read.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs an outside command to its end, output discarded; how long it took.
pub(crate) fn timed(mut cmd: Command) -> Result<Duration, String> {
    let start = std::time::Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    if !status.success() {
        return Err(format!("{cmd:?} failed ({status})"));
    }
    Ok(start.elapsed())
}

/// CPU time (user + system) of the processes doing a transfer, for
/// CPU-seconds per GiB: long-lived servers by their pid, and every child
/// this process reaps while the meter runs (a client run, or a server
/// started and stopped for one measurement). From /proc, in clock ticks
/// (10 ms), so a measurement needs a few seconds of CPU to be exact to a
/// few percent.
pub(crate) struct CpuMeter {
    children: f64,
    servers: Vec<(u32, f64)>,
}

/// What a [`CpuMeter`] counted, in seconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuUse {
    /// The children reaped while it ran (the clients).
    pub(crate) clients: f64,
    /// The servers it watched.
    pub(crate) servers: f64,
}

impl CpuMeter {
    /// Starts counting; `servers` are running processes (not yet reaped
    /// when the meter stops).
    pub(crate) fn start(servers: &[u32]) -> Self {
        CpuMeter {
            children: proc_cpu("self").map_or(f64::NAN, |c| c.children),
            servers: servers
                .iter()
                .map(|&p| (p, proc_cpu(&p.to_string()).map_or(f64::NAN, |c| c.own)))
                .collect(),
        }
    }

    /// The CPU used since [`CpuMeter::start`].
    pub(crate) fn stop(&self) -> CpuUse {
        let children = proc_cpu("self").map_or(f64::NAN, |c| c.children);
        let servers = self
            .servers
            .iter()
            .map(|&(p, before)| proc_cpu(&p.to_string()).map_or(f64::NAN, |c| c.own) - before)
            .sum();
        CpuUse {
            clients: children - self.children,
            servers,
        }
    }
}

impl CpuUse {
    /// Client, server and total CPU-seconds per GiB moved.
    pub(crate) fn per_gib(self, bytes: u64) -> Metrics {
        let gib = bytes as f64 / (1u64 << 30) as f64;
        Metrics::from([
            ("cpu_s_gib".into(), (self.clients + self.servers) / gib),
            ("cpu_client_s_gib".into(), self.clients / gib),
            ("cpu_server_s_gib".into(), self.servers / gib),
        ])
    }
}

/// A process's CPU seconds: its own (all its threads), and its reaped
/// children's.
pub(crate) struct ProcCpu {
    pub(crate) own: f64,
    pub(crate) children: f64,
}

/// Reads `/proc/PID/stat` (PID may be `self`).
pub(crate) fn proc_cpu(pid: &str) -> Option<ProcCpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// utime, stime, cutime and cstime are fields 14 to 17 of `/proc/PID/stat`;
/// the command name (field 2) is in parentheses and may hold spaces.
fn parse_stat(stat: &str) -> Option<ProcCpu> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if f.len() < 4 {
        return None;
    }
    // USER_HZ: the unit of these fields, 100 on every Linux ABI in use.
    const TICKS_PER_S: f64 = 100.0;
    Some(ProcCpu {
        own: (f[0] + f[1]) / TICKS_PER_S,
        children: (f[2] + f[3]) / TICKS_PER_S,
    })
}

/// Whether `tool` is on the PATH.
pub(crate) fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// A free loopback port (bound then released).
pub(crate) fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_past_a_command_name_with_spaces_and_parentheses() {
        let line = "4242 (e2e (role) x) S 1 2 3 4 5 6 7 8 9 10 150 25 300 50 20 0 3";
        let c = parse_stat(line).expect("parsed");
        assert!((c.own - 1.75).abs() < 1e-9, "{}", c.own);
        assert!((c.children - 3.5).abs() < 1e-9, "{}", c.children);
        assert!(parse_stat("4242 (short) S 1 2").is_none());
    }

    #[test]
    fn the_meter_counts_a_reaped_child() {
        let m = CpuMeter::start(&[]);
        // A child that burns some CPU, then is reaped.
        let status = Command::new("sh")
            .arg("-c")
            .arg("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done")
            .status()
            .expect("sh runs");
        assert!(status.success());
        let used = m.stop();
        assert!(used.clients > 0.0, "{used:?}");
        assert_eq!(used.servers, 0.0);
    }
}
