//! The hostile-client suite's scaffolding: a real `rmmap serve` process per
//! case ([`Scene`]), a well-behaved client that keeps working beside the
//! attack and checks its own data ([`bystander`]), hand-made frames over raw
//! sockets ([`raw`]), and the server's memory and descriptors as the kernel
//! reports them ([`probe`]).
//!
//! Every case runs once per server transport: [`both_transports!`] turns
//! `fn case(transport: &str)` into `case::tokio` and `case::mio` tests.

#![allow(dead_code, unreachable_pub)]

pub mod bystander;
pub mod probe;
pub mod raw;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bystander::Bystander;

/// Lease of every case unless it asks for another: short, so that the cases
/// that wait for a lease to run out stay fast.
pub const LEASE_MS: u64 = 1000;

/// Generous deadline for anything that should happen "soon".
pub const PATIENCE: Duration = Duration::from_secs(30);

/// `mod $case { #[test] fn tokio(); #[test] fn mio(); }` for each case, so
/// `cargo test --test hostile_x mio` runs one transport. (Declare the
/// module with `#[macro_use]`.)
macro_rules! both_transports {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[test]
            fn tokio() {
                super::$case("tokio");
            }

            #[test]
            fn mio() {
                super::$case("mio");
            }
        }
    )*};
}

/// An `rmmap serve` process. Its log (at `info`) goes to a file that a
/// failing case prints; it is killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub log: PathBuf,
}

impl Server {
    /// `rmmap serve ROOT --listen 127.0.0.1:0 --transport T ARGS...`, with
    /// the open-file limit (soft and hard) set to `nofile` if given.
    pub fn start(transport: &str, root: &Path, args: &[&str], nofile: Option<u64>) -> Server {
        let log = root.with_file_name(format!("serve-{transport}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rmmap"));
        cmd.arg("serve")
            .arg(root)
            .args(["--listen", "127.0.0.1:0", "--transport", transport])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap());
        if let Some(n) = nofile {
            limit_nofile(&mut cmd, n);
        }
        let mut child = cmd.spawn().expect("start rmmap serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let server = Server {
            child: Some(child),
            addr: line.trim().rsplit(' ').next().unwrap_or("").to_owned(),
            log,
        };
        assert!(
            line.starts_with("rmmap: serving"),
            "unexpected first line {line:?}; log:\n{}",
            server.log_text()
        );
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the graceful shutdown must finish and exit 0.
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > PATIENCE {
                let _ = child.kill();
                panic!("the server did not stop; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "the server stopped with {status}; log:\n{}",
            self.log_text()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sets RLIMIT_NOFILE (soft and hard) of the child before it runs.
#[allow(unsafe_code)]
fn limit_nofile(cmd: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls
    // setrlimit, which is async-signal-safe, on a struct on its own stack.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Raises this test process's own open-file limit to its hard limit (the
/// floods open a thousand sockets).
#[allow(unsafe_code)]
pub fn raise_own_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write one struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    r.rlim_cur
}

/// One case: an export root inside a temporary directory (whose other
/// entries are "outside"), a server, and a bystander already at work.
pub struct Scene {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub server: Server,
    pub bystander: Option<Bystander>,
    pub transport: &'static str,
}

impl Scene {
    /// A server with `--lease-ms 1000 --restart-grace-ms 0` plus `args`
    /// (which may set another `--lease-ms`), and a bystander.
    pub fn start(transport: &str, args: &[&str]) -> Scene {
        Self::start_with(transport, args, None)
    }

    /// Like [`Scene::start`], with the server's open-file limit.
    pub fn start_with(transport: &str, args: &[&str], nofile: Option<u64>) -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let lease = LEASE_MS.to_string();
        let mut all: Vec<&str> = vec!["--restart-grace-ms", "0"];
        if !args.contains(&"--lease-ms") {
            all.extend(["--lease-ms", &lease]);
        }
        all.extend_from_slice(args);
        let server = Server::start(transport, &root, &all, nofile);
        let bystander = Bystander::start(&server.addr, &root);
        Scene {
            dir,
            root,
            server,
            bystander: Some(bystander),
            transport: static_name(transport),
        }
    }

    pub fn addr(&self) -> &str {
        &self.server.addr
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// Beside the export root: what no client may reach.
    pub fn outside(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until the bystander has completed a few more operations
    /// (each few a round trip to the server): it is not stalled.
    pub fn bystander_progresses(&self) {
        let b = self.bystander.as_ref().unwrap();
        if !b.progresses(PATIENCE) {
            panic!(
                "the bystander made no progress; log:\n{}",
                self.server.log_text()
            );
        }
    }

    /// The end of every case: the bystander stops and finds its data
    /// intact (in the server's answers and on disk), a fresh client gets
    /// answers, and the server shuts down cleanly.
    pub fn finish(mut self) {
        let report = self.bystander.take().unwrap().finish(&self.root);
        if let Err(e) = &report {
            panic!("bystander: {e}; server log:\n{}", self.server.log_text());
        }
        let report = report.unwrap();
        println!(
            "[{}] bystander: {} operations ({} round trips), {} reconnections, data intact",
            self.transport, report.ops, report.syncs, report.reconnects
        );
        if let Err(e) = bystander::fresh_client_works(self.addr(), "fresh.bin") {
            panic!(
                "a fresh client failed: {e}; server log:\n{}",
                self.server.log_text()
            );
        }
        self.server.stop();
    }
}

fn static_name(t: &str) -> &'static str {
    match t {
        "tokio" => "tokio",
        "mio" => "mio",
        other => panic!("unknown transport {other}"),
    }
}

/// Retries `f` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small deterministic generator (xorshift64*), so that a failing case
/// replays.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
