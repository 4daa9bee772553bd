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
