//! Running `rmmap serve` and `rmmap shell` as processes.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

// One history checker for every crate's concurrency tests.
#[path = "../../../transport-tokio/tests/common/history.rs"]
pub mod history;
pub mod proxy;
pub mod secure;

pub fn rmmap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rmmap"))
}

/// `rmmap put LOCAL ADDR PATH`, which must succeed (its stderr otherwise).
pub fn put(local: &Path, addr: &str, path: &str) {
    let put = rmmap()
        .arg("put")
        .arg(local)
        .args([addr, path])
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
}

/// An `rmmap serve` process; killed (SIGKILL) when dropped.
pub struct Serve {
    pub child: Child,
    pub addr: String,
}

impl Serve {
    /// Starts `rmmap serve ROOT --listen LISTEN ARGS...` and waits until it
    /// says where it listens.
    pub fn start(root: &Path, listen: &str, args: &[&str]) -> Serve {
        let mut child = rmmap()
            .arg("serve")
            .arg(root)
            .args(["--listen", listen])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rmmap serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
        assert!(
            line.starts_with("rmmap: serving"),
            "unexpected first line {line:?}"
        );
        Serve { child, addr }
    }

    /// SIGKILL: no graceful anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the graceful shutdown to end the process.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        self.child.wait().unwrap()
    }
}

/// A small tmpfs mounted for a test (unmounted when dropped), to fill a disk
/// for real; `None`, with the reason on stderr, where mounting is not
/// allowed (not root, or a container without CAP_SYS_ADMIN).
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs to fill ({})",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount ({e})");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with `name` until it refuses more; returns
    /// the bytes written.
    pub fn fill(&self, name: &str) -> u64 {
        let mut f = std::fs::File::create(self.path().join(name)).unwrap();
        let chunk = vec![0x5au8; 4096];
        let mut n = 0;
        while f.write_all(&chunk).is_ok() {
            n += chunk.len() as u64;
        }
        let _ = f.sync_all();
        n
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `rmmap shell` process, driven line by line.
pub struct Shell {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Shell {
    pub fn start(addr: &str, args: &[&str]) -> Shell {
        let mut child = rmmap()
            .args(["shell", addr])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rmmap shell");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Shell {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one line (raw bytes allowed) and returns the response line.
    pub fn send(&mut self, line: &[u8]) -> String {
        self.stdin.write_all(line).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
        let mut out = String::new();
        let n = self.stdout.read_line(&mut out).unwrap();
        assert!(
            n > 0,
            "the shell exited instead of answering {:?}",
            String::from_utf8_lossy(line)
        );
        out.trim_end_matches('\n').to_owned()
    }

    /// Sends a line that gets no answer (blank, or a comment).
    pub fn cmd_no_answer(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.send(line.as_bytes())
    }

    /// `ok X` -> X, panicking with the line otherwise.
    pub fn ok(&mut self, line: &str) -> String {
        let r = self.cmd(line);
        match r.strip_prefix("ok") {
            Some(rest) => rest.trim_start().to_owned(),
            None => panic!("{line:?} answered {r:?}"),
        }
    }

    /// The KIND of an `err KIND MESSAGE` answer.
    pub fn err_kind(&mut self, line: &[u8]) -> String {
        let r = self.send(line);
        let mut w = r.splitn(3, ' ');
        assert_eq!(
            w.next(),
            Some("err"),
            "{:?} answered {r:?}",
            String::from_utf8_lossy(line)
        );
        let kind = w.next().unwrap().to_owned();
        assert!(
            w.next().is_some_and(|m| !m.is_empty()),
            "no message in {r:?}"
        );
        kind
    }

    /// The shell process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once the shell ends by itself (after a `quit`).
    pub fn exit_status(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// `quit`, then the exit status.
    pub fn quit(mut self) -> std::process::ExitStatus {
        assert_eq!(self.cmd("quit"), "ok");
        self.child.wait().unwrap()
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound and released), for a server that must come
/// back on the same address.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A fresh export root inside a temporary directory (the directory's other
/// entries are "outside").
pub fn root() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    (dir, root)
}

/// Retries `f` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
