//! Memory mappings across processes: increments through `fetch_add` from
//! several processes are all counted, an access after `give_up_after`
//! raises the documented SIGBUS instead of hanging, and a lost session is
//! reported to one faulting thread by that SIGBUS, after which the thread
//! goes on with the server's bytes (issue 19). The children choose
//! `FaultMode::Signal`, the C library's mode; `memory_report.rs` tests the
//! default.
//!
//! Child processes are this test binary run again with `RMMAP_MEMORY_CHILD`
//! naming their part (see [`child`]).

mod memory_common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use memory_common::{Gate, TestServer, client_config, supported, touch, within};
use rmmap_tokio::{Access, Client, FaultMode};

const PAGE: usize = 4096;
const ROLE: &str = "RMMAP_MEMORY_CHILD";
const ADDR: &str = "RMMAP_MEMORY_ADDR";
/// Exit codes of a child whose SIGBUS handler ran.
const SIGBUS_AS_DOCUMENTED: i32 = 77;
const SIGBUS_WRONG_CODE: i32 = 78;
const SIGBUS_WRONG_ADDRESS: i32 = 79;
const NO_SIGNAL: i32 = 3;
/// Exit codes of a child whose handler returned: told once, then it went on.
const TOLD_ONCE_AND_RESUMED: i32 = 80;
const TOLD_MORE_THAN_ONCE: i32 = 81;

fn spawn(role: &str, addr: &str, extra: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(ROLE, role)
        .env(ADDR, addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Waits for a line from the child's stdout that contains `word` (the
/// harness may have printed the test's name before it).
fn expect_line(child: &mut Child, word: &str) -> String {
    let out = child.stdout.as_mut().unwrap();
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "child ended before {word:?}"
        );
        if line.contains(word) {
            return line.trim().to_owned();
        }
    }
}

/// Waits for the child to end, at most `secs` seconds; its exit code.
fn wait_code(child: &mut Child, secs: u64) -> Option<i32> {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the child did not end within {secs} s: an access hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_through_fetch_add_from_several_processes_are_all_counted() {
    if !supported() {
        return;
    }
    within(120, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("counter", &vec![0u8; PAGE]);
        const PROCS: usize = 4;
        const EACH: u64 = 200;
        let mut children: Vec<Child> = (0..PROCS)
            .map(|k| {
                spawn(
                    "increment",
                    &ts.addr,
                    &[
                        ("RMMAP_SLOT", k.to_string()),
                        ("RMMAP_EACH", EACH.to_string()),
                    ],
                )
            })
            .collect();
        for c in &mut children {
            let code = touch(|| wait_code(c, 100));
            assert_eq!(code, Some(0), "an incrementing child failed");
        }
        let a = ts.client().await;
        let m = a
            .map_memory("counter", 0..PAGE as u64, Access::ReadOnly)
            .await
            .unwrap();
        let word = |i: usize| u64::from_le_bytes(m.load(8 * i as u64).unwrap());
        assert_eq!(word(0), PROCS as u64 * EACH, "every increment counted");
        for k in 0..PROCS {
            assert_eq!(word(1 + k), 1000 + k as u64, "child {k}'s plain store");
        }
        let disk = ts.get("counter");
        assert_eq!(
            u64::from_le_bytes(disk[0..8].try_into().unwrap()),
            PROCS as u64 * EACH
        );
        drop(m);
        a.close().await.unwrap();
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_raises_one_sigbus_then_the_thread_goes_on_with_the_servers_bytes() {
    if !supported() {
        return;
    }
    within(60, async {
        // A short lease: the server ends the session soon after the cut.
        let ts = TestServer::start(|c| c.lease(Duration::from_millis(1000))).await;
        ts.put("f", &vec![0u8; 4 * PAGE]);
        let gate = Gate::start(ts.addr.clone()).await;
        let mut child = spawn("lost_session", &gate.addr, &[]);
        touch(|| expect_line(&mut child, "ready"));
        // Cut while the child holds an unsynced store; it then touches pages
        // it does not have. It reconnects only after the server has ended
        // its session, which loses the store: one fault hears it (SIGBUS,
        // SI_QUEUE; the handler returns), the access is retried and the
        // thread goes on with the server's byte, then stores and syncs.
        gate.close();
        writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
        tokio::time::sleep(Duration::from_millis(3000)).await;
        gate.open();
        let code = touch(|| wait_code(&mut child, 40));
        assert_eq!(code, Some(TOLD_ONCE_AND_RESUMED), "exit code {code:?}");
        // The lost store was not half-applied; the one after it is there.
        let disk = ts.get("f");
        assert_eq!((disk[7], disk[8]), (0, 9));
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_after_give_up_after_raises_sigbus_in_the_faulting_thread() {
    if !supported() {
        return;
    }
    within(60, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("f", &vec![0u8; 4 * PAGE]);
        let gate = Gate::start(ts.addr.clone()).await;
        let mut child = spawn("give_up", &gate.addr, &[]);
        touch(|| expect_line(&mut child, "ready"));
        // The server stays out of reach: the child's fault waits, then fails
        // once the client has been disconnected for `give_up_after` (1 s).
        gate.close();
        writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
        let code = touch(|| wait_code(&mut child, 30));
        assert_eq!(code, Some(SIGBUS_AS_DOCUMENTED), "exit code {code:?}");
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_after_the_clients_runtime_shut_down_raises_sigbus() {
    if !supported() {
        return;
    }
    within(60, async {
        let ts = TestServer::start(|c| c).await;
        ts.put("f", &vec![0u8; 4 * PAGE]);
        let mut child = spawn("runtime_gone", &ts.addr, &[]);
        let code = touch(|| wait_code(&mut child, 30));
        assert_eq!(code, Some(SIGBUS_AS_DOCUMENTED), "exit code {code:?}");
        ts.server.shutdown().await.unwrap();
    })
    .await;
}

// ---- the child processes ----

/// The child's part; a no-op in a normal test run.
#[test]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let addr = std::env::var(ADDR).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if role == "runtime_gone" {
        // The mapping outlives the runtime that drove its client: a fault
        // then has nobody to bring the page, and must not wait forever.
        let (client, m) = rt.block_on(async {
            let client = Client::connect(&addr, client_config()).await.unwrap();
            let m = client
                .map_memory("f", 0..4 * PAGE as u64, Access::ReadOnly)
                .await
                .unwrap();
            m.set_fault_mode(FaultMode::Signal);
            (client, m)
        });
        assert_eq!(m.load::<u8>(0).unwrap(), 0);
        sigbus::expect(
            libc::SI_QUEUE,
            m.as_ptr() as usize,
            m.as_ptr() as usize + m.len(),
        );
        rt.shutdown_timeout(Duration::from_secs(1));
        let _ = m.atomic_bytes()[3 * PAGE].load(std::sync::atomic::Ordering::Relaxed);
        drop((client, m));
        std::process::exit(NO_SIGNAL);
    }
    let code = rt.block_on(async {
        match role.as_str() {
            "increment" => increment(&addr).await,
            "lost_session" | "give_up" => touch_until_signal(&addr, &role).await,
            other => panic!("unknown child role {other}"),
        }
    });
    std::process::exit(code);
}

/// Adds 1 to word 0 `RMMAP_EACH` times, and stores 1000 + slot in word
/// 1 + slot with a plain store.
async fn increment(addr: &str) -> i32 {
    let slot: usize = std::env::var("RMMAP_SLOT").unwrap().parse().unwrap();
    let each: u64 = std::env::var("RMMAP_EACH").unwrap().parse().unwrap();
    let client = Client::connect(addr, client_config()).await.unwrap();
    let m = client
        .map_memory("counter", 0..PAGE as u64, Access::ReadWrite)
        .await
        .unwrap();
    m.set_fault_mode(FaultMode::Signal);
    for i in 0..each {
        m.fetch_add(0, 1).await.unwrap();
        if i == each / 2 {
            // This thread is not one of the runtime's workers: it may fault.
            let at = 8 * (1 + slot) as u64;
            m.store(at, &(1000 + slot as u64).to_le_bytes()).unwrap();
        }
    }
    m.sync().await.unwrap();
    m.unmap().await.unwrap();
    client.close().await.unwrap();
    0
}

/// Makes an unsynced store, says "ready", waits for "go", then touches
/// every page until a SIGBUS ends the process (through the handler, which
/// checks the documented `si_code` and address).
async fn touch_until_signal(addr: &str, role: &str) -> i32 {
    let mut config = client_config();
    if role == "give_up" {
        config.give_up_after = Some(Duration::from_secs(1));
    }
    let client = Client::connect(addr, config).await.unwrap();
    let m = client
        .map_memory("f", 0..4 * PAGE as u64, Access::ReadWrite)
        .await
        .unwrap();
    m.set_fault_mode(FaultMode::Signal);
    m.store(7, &1u8).unwrap();
    let (lo, hi) = (m.as_ptr() as usize, m.as_ptr() as usize + m.len());
    let code = if role == "give_up" {
        libc::SI_QUEUE
    } else {
        libc::BUS_ADRERR
    };
    if role == "lost_session" {
        sigbus::resume(libc::SI_QUEUE, lo, hi);
    } else {
        sigbus::expect(code, lo, hi);
    }
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if role == "lost_session" && sigbus::heard() > 0 {
            // Told: the lost store is gone, the page is the server's, and
            // the mapping works.
            assert_eq!(m.load::<u8>(7).unwrap(), 0, "the lost store is gone");
            m.store(8, &9u8).unwrap();
            m.sync().await.unwrap();
            assert!(m.failure().is_none(), "{:?}", m.failure());
            return match sigbus::heard() {
                1 => TOLD_ONCE_AND_RESUMED,
                _ => TOLD_MORE_THAN_ONCE,
            };
        }
        for p in 0..4 {
            // Through the atomic view: the compiler loads every time.
            let _ = m.atomic_bytes()[p * PAGE + 1].load(std::sync::atomic::Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("no SIGBUS; failure: {:?}", m.failure());
    NO_SIGNAL
}

/// A SIGBUS handler that checks what the memory module documents and
/// reports it through the exit code.
#[allow(unsafe_code)]
mod sigbus {
    use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

    use super::{SIGBUS_AS_DOCUMENTED, SIGBUS_WRONG_ADDRESS, SIGBUS_WRONG_CODE};

    static CODE: AtomicI32 = AtomicI32::new(0);
    /// Return from the handler (the access is retried) instead of exiting.
    static RESUME: AtomicBool = AtomicBool::new(false);
    static HEARD: AtomicUsize = AtomicUsize::new(0);
    static LO: AtomicUsize = AtomicUsize::new(0);
    static HI: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn handler(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: the kernel hands an SA_SIGINFO handler a valid siginfo.
        let info = unsafe { &*info };
        let code = info.si_code;
        // SAFETY: the union member read is the one `si_code` says is set.
        let addr = unsafe {
            if code == libc::SI_QUEUE {
                info.si_value().sival_ptr as usize
            } else {
                info.si_addr() as usize
            }
        };
        let exit = if code != CODE.load(Ordering::SeqCst) {
            SIGBUS_WRONG_CODE
        } else if !(LO.load(Ordering::SeqCst)..HI.load(Ordering::SeqCst)).contains(&addr) {
            SIGBUS_WRONG_ADDRESS
        } else {
            SIGBUS_AS_DOCUMENTED
        };
        if exit == SIGBUS_AS_DOCUMENTED && RESUME.load(Ordering::SeqCst) {
            HEARD.fetch_add(1, Ordering::SeqCst);
            return;
        }
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(exit) }
    }

    /// Like [`expect`], but a documented signal returns from the handler
    /// (the access is retried) and is counted in [`heard`].
    pub(crate) fn resume(code: i32, lo: usize, hi: usize) {
        RESUME.store(true, Ordering::SeqCst);
        expect(code, lo, hi);
    }

    /// How many documented signals a [`resume`] handler has returned from.
    pub(crate) fn heard() -> usize {
        HEARD.load(Ordering::SeqCst)
    }

    /// Installs the handler, expecting `si_code` `code` and an address in
    /// `lo..hi`.
    pub(crate) fn expect(code: i32, lo: usize, hi: usize) {
        CODE.store(code, Ordering::SeqCst);
        LO.store(lo, Ordering::SeqCst);
        HI.store(hi, Ordering::SeqCst);
        // SAFETY: a zeroed sigaction is valid; we fill handler and flags.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()), 0);
        }
    }
}
