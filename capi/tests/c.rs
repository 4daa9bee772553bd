//! The C tests: C programs in `tests/c/` and `examples/`, compiled with `cc`
//! against the committed headers and the librmmap this build made, run
//! against real servers that this test starts as child processes (so that
//! it can kill them with SIGKILL and start them again).
//!
//! The seed's programs run twice where memory mappings work: once with
//! them (the addresses are real mappings) and once without
//! (`RMMAP_MEMORY=0`). `RMMAP_C_SANITIZE=address` builds the programs with
//! AddressSanitizer (CI does); an argument runs only the cases whose name
//! contains it.
//!
//! This binary is also the test server: started with `RMMAP_C_TEST_SERVE`
//! set to a directory, it exports it and prints its port.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One test: compiles and runs a program, and says what went wrong.
type Case = dyn Fn(&Harness) -> Result<(), String>;

/// Longest a C program may run (under AddressSanitizer, on a busy machine).
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(180);

fn main() -> ExitCode {
    if let Some(root) = std::env::var_os("RMMAP_C_TEST_SERVE") {
        serve(PathBuf::from(root));
        return ExitCode::SUCCESS;
    }
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let harness = Harness::new();
    let memory = match rmmap_tokio::memory_support() {
        Ok(()) => true,
        Err(e) => {
            println!("memory mappings are not available here, the seed runs without them: {e}");
            false
        }
    };
    let mut cases: Vec<(String, Box<Case>)> = Vec::new();
    for mem in [false, true] {
        if mem && !memory {
            continue;
        }
        let mode = if mem { "memory" } else { "bytes" };
        cases.push((
            format!("seed_basic/{mode}"),
            Box::new(move |h| seed_basic(h, mem)),
        ));
        cases.push((
            format!("seed_threads/{mode}"),
            Box::new(move |h| seed_threads(h, mem)),
        ));
        cases.push((
            format!("seed_processes/{mode}"),
            Box::new(move |h| seed_processes(h, mem)),
        ));
        cases.push((
            format!("seed_restart/{mode}"),
            Box::new(move |h| seed_restart(h, mem)),
        ));
        cases.push((
            format!("example_seed_scenario/{mode}"),
            Box::new(move |h| example_seed_scenario(h, mem)),
        ));
    }
    cases.push(("rmmap_api".into(), Box::new(rmmap_api)));
    cases.push(("tls_and_tokens".into(), Box::new(tls_and_tokens)));
    cases.push(("example_counter".into(), Box::new(example_counter)));
    cases.push((
        "example_counter_static".into(),
        Box::new(example_counter_static),
    ));
    cases.push((
        "example_counter_python".into(),
        Box::new(example_counter_python),
    ));

    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, case) in &cases {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        let start = Instant::now();
        println!("--- {name}");
        let r = case(&harness);
        match &r {
            Ok(()) => println!("--- {name}: ok in {:.1?}", start.elapsed()),
            Err(e) => {
                println!("--- {name}: FAILED: {e}");
                failed.push(name.clone());
            }
        }
    }
    println!("\nC tests: {ran} run, {} failed {failed:?}", failed.len());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The test server: exports `root` on 127.0.0.1 (`RMMAP_C_TEST_PORT`, or a
/// free port), read-only with `RMMAP_C_TEST_READ_ONLY`, over TLS with the
/// PEM files in `RMMAP_C_TEST_TLS` (a directory from `test_pki`) and only to
/// the clients of its `access` file, prints `port N`, and serves until its
/// standard input closes.
fn serve(root: PathBuf) {
    let port: u16 = std::env::var("RMMAP_C_TEST_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let read_only = std::env::var_os("RMMAP_C_TEST_READ_ONLY").is_some();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        // A short lease keeps failure tests short; no restart grace, so
        // writes after a restart do not wait (the only earlier clients are
        // the test's own).
        let mut config = rmmap_tokio::ServerConfig::new(root)
            .read_only(read_only)
            .lease(Duration::from_secs(2))
            .restart_grace(Some(Duration::ZERO));
        let mut options = rmmap_tokio::ServeOptions::default();
        if let Some(dir) = std::env::var_os("RMMAP_C_TEST_TLS").map(PathBuf::from) {
            let tls = rmmap_tokio::ServerTls::from_pem_files(
                &dir.join("server.pem"),
                &dir.join("server.key"),
            );
            options.tls = Some(tls.expect("the test certificate"));
            let access = rmmap_secure::load_access_list(dir.join("access"));
            config.core.access = Some(access.expect("the test access list"));
        }
        let server = rmmap_tokio::Server::bind_with(&format!("127.0.0.1:{port}"), config, options)
            .await
            .expect("the test server binds");
        println!("port {}", server.local_addr().port());
        std::io::stdout().flush().expect("stdout");
        let _ = tokio::task::spawn_blocking(|| {
            std::io::copy(&mut std::io::stdin(), &mut std::io::sink())
        })
        .await;
        let _ = server.shutdown().await;
    });
}

/// A test server process.
struct ServerProcess {
    child: Child,
    port: u16,
}

impl ServerProcess {
    fn start(root: &Path, port: u16, read_only: bool) -> ServerProcess {
        let mut cmd = Command::new(std::env::current_exe().expect("this test's path"));
        cmd.env("RMMAP_C_TEST_SERVE", root)
            .env("RMMAP_C_TEST_PORT", port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if read_only {
            cmd.env("RMMAP_C_TEST_READ_ONLY", "1");
        }
        ServerProcess::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> ServerProcess {
        let mut child = cmd.spawn().expect("start the test server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("the server's port");
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the test server said {line:?}"));
        ServerProcess { child, port }
    }

    /// Kills it with SIGKILL: no goodbye, no flush, like a crash.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A directory to export, with the files the programs expect, beside a
/// file a symlink leads out to.
struct Export {
    dir: tempfile::TempDir,
}

impl Export {
    fn new() -> Export {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let pattern: Vec<u8> = (0..10000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(root.join("data.bin"), pattern).unwrap();
        std::fs::write(root.join("threads.bin"), vec![0u8; 4096]).unwrap();
        std::fs::write(root.join("procs.bin"), vec![0u8; 8192]).unwrap();
        std::fs::write(root.join("scenario.bin"), vec![0u8; 4096]).unwrap();
        std::fs::write(root.join("clean.bin"), vec![0u8; 1 << 20]).unwrap();
        std::fs::write(root.join("dirty.bin"), vec![0u8; 1 << 20]).unwrap();
        std::fs::create_dir(root.join("dir")).unwrap();
        std::fs::write(dir.path().join("outside.bin"), b"secret").unwrap();
        std::os::unix::fs::symlink("../outside.bin", root.join("escape")).unwrap();
        Export { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn serve(&self) -> ServerProcess {
        ServerProcess::start(&self.root(), 0, false)
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Compiles the programs and runs them.
struct Harness {
    capi: PathBuf,
    libdir: PathBuf,
    out: PathBuf,
    cc: String,
    sanitize: Option<String>,
    /// Compiler and linker flags for librmmap, from rmmap.pc.
    cflags: Vec<String>,
    libs: Vec<String>,
}

impl Harness {
    fn new() -> Harness {
        let capi = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        // This test is target/<profile>/deps/c-<hash>; building it built
        // librmmap.so and librmmap.a beside it (they are copied up to
        // target/<profile> only by `cargo build`).
        let exe = std::env::current_exe().unwrap();
        let libdir = exe.parent().unwrap().to_path_buf();
        for lib in ["librmmap.so", "librmmap.a"] {
            assert!(
                libdir.join(lib).exists(),
                "{} is missing: build rmmap-c first",
                libdir.join(lib).display()
            );
        }
        let sanitize = std::env::var("RMMAP_C_SANITIZE")
            .ok()
            .filter(|s| !s.is_empty());
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("c-{}", sanitize.as_deref().unwrap_or("plain")));
        std::fs::create_dir_all(&out).unwrap();
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let (cflags, libs) = pkg_config_flags(&capi, &libdir);
        Harness {
            capi,
            libdir,
            out,
            cc,
            sanitize,
            cflags,
            libs,
        }
    }

    /// Compiles `source` (relative to capi/) into a program, linked to
    /// librmmap.so, or to librmmap.a with `static_lib`.
    fn compile(&self, source: &str, static_lib: bool) -> Result<PathBuf, String> {
        let src = self.capi.join(source);
        let name = Path::new(source)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let exe = self.out.join(if static_lib {
            format!("{name}-static")
        } else {
            name
        });
        let mut cmd = Command::new(&self.cc);
        cmd.args([
            "-std=c11",
            "-D_GNU_SOURCE",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-g",
            "-O1",
            "-pthread",
        ])
        .args(&self.cflags)
        .arg("-I")
        .arg(self.capi.join("tests/c"))
        .arg(&src)
        .arg("-o")
        .arg(&exe);
        if let Some(s) = &self.sanitize {
            cmd.arg(format!("-fsanitize={s}"))
                .arg("-fno-omit-frame-pointer");
        }
        if static_lib {
            // The archive itself, then what it needs from the system.
            cmd.arg(self.libdir.join("librmmap.a"));
            cmd.args(
                self.libs
                    .iter()
                    .filter(|l| !l.starts_with("-L") && *l != "-lrmmap"),
            );
        } else {
            cmd.args(&self.libs);
            cmd.arg(format!("-Wl,-rpath,{}", self.libdir.display()));
        }
        let output = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.cc))?;
        if !output.status.success() {
            return Err(format!(
                "compiling {source} failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(exe)
    }

    /// A command for `program`, with the test environment.
    fn command(&self, program: &Path, memory: bool) -> Command {
        let mut cmd = Command::new(program);
        // cargo points LD_LIBRARY_PATH at target/<profile>, which may hold an
        // older librmmap.so than the one beside this test (see Harness::new);
        // it would win over the programs' run path.
        cmd.env_remove("LD_LIBRARY_PATH")
            .env("RMMAP_MEMORY", if memory { "1" } else { "0" })
            .env("RMMAP_TEST_MEMORY", if memory { "1" } else { "0" })
            .env_remove("RMMAP_GIVE_UP_MS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if self.sanitize.is_some() {
            // Leaks are reported; the process's clients and runtime live
            // in statics, reachable until exit.
            cmd.env(
                "ASAN_OPTIONS",
                "detect_leaks=1:abort_on_error=0:exitcode=23",
            );
        }
        cmd
    }

    /// Turns leak reports off for a program whose forked child calls exit:
    /// the child inherits the parent's runtime, whose worker threads are not
    /// in it, and what only their stacks referenced looks leaked.
    fn inherited_memory_is_no_leak(&self, cmd: &mut Command) {
        if self.sanitize.is_some() {
            cmd.env(
                "ASAN_OPTIONS",
                "detect_leaks=0:abort_on_error=0:exitcode=23",
            );
        }
    }
}

/// Runs `cmd` to completion (killing it after PROGRAM_TIMEOUT), printing
/// its output; `on_line` answers lines it prints (the restart test's
/// requests), through its standard input.
fn run(mut cmd: Command, mut on_line: impl FnMut(&str, &mut ChildStdin)) -> Result<(), String> {
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut stdin = child.stdin.take();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + PROGRAM_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                println!("    {line}");
                if let Some(stdin) = stdin.as_mut() {
                    on_line(&line, stdin);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{cmd:?} did not finish within {PROGRAM_TIMEOUT:?}"));
        }
    }
    let _ = reader.join();
    drop(stdin);
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{:?} ended with {status}", cmd.get_program()))
    }
}

fn seed_basic(h: &Harness, memory: bool) -> Result<(), String> {
    let exe = h.compile("tests/c/seed_basic.c", false)?;
    let export = Export::new();
    let server = export.serve();
    let ro = ServerProcess::start(&export.root(), 0, true);
    // Connections complete in the kernel's backlog; nobody ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cmd = h.command(&exe, memory);
    cmd.arg(server.port.to_string())
        .arg(ro.port.to_string())
        .arg(closed_port().to_string())
        .arg(silent.local_addr().unwrap().port().to_string())
        .arg(export.root());
    run(cmd, |_, _| {})
}

fn seed_threads(h: &Harness, memory: bool) -> Result<(), String> {
    let exe = h.compile("tests/c/seed_threads.c", false)?;
    let export = Export::new();
    let server = export.serve();
    let mut cmd = h.command(&exe, memory);
    cmd.arg(server.port.to_string());
    run(cmd, |_, _| {})
}

fn seed_processes(h: &Harness, memory: bool) -> Result<(), String> {
    let exe = h.compile("tests/c/seed_processes.c", false)?;
    let export = Export::new();
    let server = export.serve();
    let mut cmd = h.command(&exe, memory);
    h.inherited_memory_is_no_leak(&mut cmd);
    cmd.arg(server.port.to_string());
    run(cmd, |_, _| {})
}

fn seed_restart(h: &Harness, memory: bool) -> Result<(), String> {
    let exe = h.compile("tests/c/seed_restart.c", false)?;
    let export = Export::new();
    let mut server = export.serve();
    let port = server.port;
    let mut cmd = h.command(&exe, memory);
    cmd.arg(port.to_string())
        .env("RMMAP_GIVE_UP_MS", "10000")
        .stdin(Stdio::piped());
    let root = export.root();
    run(cmd, |line, stdin| {
        let answer = match line {
            "kill" => {
                server.kill();
                server = ServerProcess::start(&root, port, false);
                "restarted"
            }
            "kill-for-good" => {
                server.kill();
                "killed"
            }
            _ => return,
        };
        let _ = writeln!(stdin, "{answer}");
        let _ = stdin.flush();
    })
}

fn rmmap_api(h: &Harness) -> Result<(), String> {
    let exe = h.compile("tests/c/rmmap_api.c", false)?;
    let export = Export::new();
    let server = export.serve();
    let mut cmd = h.command(&exe, true);
    cmd.arg(server.port.to_string())
        .arg(closed_port().to_string());
    run(cmd, |_, _| {})
}

fn tls_and_tokens(h: &Harness) -> Result<(), String> {
    let exe = h.compile("tests/c/tls_and_tokens.c", false)?;
    let export = Export::new();
    let pki = export.dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    let files = rmmap_secure::test_pki::write_files(&pki);
    let secret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    rmmap_secure::test_pki::write(&pki.join("access"), &format!("capi {secret} rw\n"));
    rmmap_secure::test_pki::write(&pki.join("capi.token"), &format!("capi {secret}\n"));
    rmmap_secure::test_pki::write(&pki.join("stranger.token"), &format!("stranger {secret}\n"));
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env("RMMAP_C_TEST_SERVE", export.root())
        .env("RMMAP_C_TEST_TLS", &pki)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let server = ServerProcess::spawn(cmd);
    let mut cmd = h.command(&exe, true);
    cmd.arg(server.port.to_string())
        .arg(&files.ca)
        .arg(&files.other_ca)
        .arg(pki.join("capi.token"))
        .arg(pki.join("stranger.token"));
    run(cmd, |_, _| {})
}

fn example_seed_scenario(h: &Harness, memory: bool) -> Result<(), String> {
    let exe = h.compile("examples/seed_scenario.c", false)?;
    let export = Export::new();
    let server = export.serve();
    let mut cmd = h.command(&exe, memory);
    cmd.args(["127.0.0.1", &server.port.to_string(), "scenario.bin", "4"]);
    run(cmd, |_, _| {})?;
    // Each worker's record is in the server's file.
    let file = std::fs::read(export.root().join("scenario.bin")).unwrap();
    for w in 0..4 {
        let want = format!("worker {w} ");
        if !file[w * 64..].starts_with(want.as_bytes()) {
            return Err(format!("record {w} is missing from scenario.bin"));
        }
    }
    Ok(())
}

fn counter_run(h: &Harness, exe: &Path) -> Result<(), String> {
    let export = Export::new();
    let server = export.serve();
    let mut cmd = h.command(exe, true);
    cmd.args([
        &format!("127.0.0.1:{}", server.port),
        "counter.bin",
        "4",
        "250",
    ]);
    run(cmd, |_, _| {})?;
    let file = std::fs::read(export.root().join("counter.bin")).unwrap();
    let value = u64::from_le_bytes(file[..8].try_into().unwrap());
    if value == 1000 {
        Ok(())
    } else {
        Err(format!(
            "the counter in the server's file is {value}, not 1000"
        ))
    }
}

fn example_counter(h: &Harness) -> Result<(), String> {
    let exe = h.compile("examples/counter.c", false)?;
    counter_run(h, &exe)
}

fn example_counter_static(h: &Harness) -> Result<(), String> {
    let exe = h.compile("examples/counter.c", true)?;
    counter_run(h, &exe)
}

fn example_counter_python(h: &Harness) -> Result<(), String> {
    if h.sanitize.is_some() {
        println!("    (skipped under a sanitizer: the interpreter is not built with it)");
        return Ok(());
    }
    if Command::new("python3").arg("--version").output().is_err() {
        println!("    SKIPPED: python3 is not installed");
        return Ok(());
    }
    let export = Export::new();
    let server = export.serve();
    let mut cmd = Command::new("python3");
    cmd.arg(h.capi.join("examples/counter.py"))
        .args([&format!("127.0.0.1:{}", server.port), "counter.bin", "200"])
        .env("RMMAP_LIB", h.libdir.join("librmmap.so"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    run(cmd, |_, _| {})?;
    let file = std::fs::read(export.root().join("counter.bin")).unwrap();
    let value = u64::from_le_bytes(file[..8].try_into().unwrap());
    if value == 200 {
        Ok(())
    } else {
        Err(format!(
            "the counter in the server's file is {value}, not 200"
        ))
    }
}

/// The flags to build against librmmap: from `pkg-config` over
/// capi/rmmap.pc (pointed at this build's library directory) where
/// pkg-config is installed, else the same by hand.
fn pkg_config_flags(capi: &Path, libdir: &Path) -> (Vec<String>, Vec<String>) {
    let pc = capi.join("rmmap.pc");
    let text = std::fs::read_to_string(&pc).expect("capi/rmmap.pc");
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(str::trim)
        .expect("rmmap.pc has a Version");
    assert_eq!(
        version,
        env!("CARGO_PKG_VERSION"),
        "rmmap.pc's Version is stale"
    );
    let query = |what: &[&str]| -> Option<Vec<String>> {
        let out = Command::new("pkg-config")
            .arg(format!("--define-variable=libdir={}", libdir.display()))
            .args(what)
            .arg(&pc)
            .output()
            .ok()?;
        assert!(
            out.status.success(),
            "pkg-config {what:?} rmmap.pc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = String::new();
        out.stdout.as_slice().read_to_string(&mut s).ok()?;
        Some(s.split_whitespace().map(str::to_owned).collect())
    };
    match (query(&["--cflags"]), query(&["--static", "--libs"])) {
        (Some(cflags), Some(libs)) => {
            println!(
                "flags from pkg-config: {} {}",
                cflags.join(" "),
                libs.join(" ")
            );
            (cflags, libs)
        }
        _ => {
            println!("pkg-config is not installed: flags by hand");
            let cflags = vec![format!("-I{}", capi.join("include").display())];
            let libs = vec![
                format!("-L{}", libdir.display()),
                "-lrmmap".into(),
                "-lpthread".into(),
                "-ldl".into(),
                "-lm".into(),
            ];
            (cflags, libs)
        }
    }
}
