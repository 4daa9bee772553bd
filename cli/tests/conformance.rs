//! One conformance suite for every transport: each case below runs eight
//! times, once per pairing of `rmmap shell --transport C` with
//! `rmmap serve --transport S` (tokio/tokio, mio/mio, tokio client with mio
//! server, mio client with tokio server), as real processes over loopback,
//! first in plaintext, then over TLS with tokens (`--tls-cert --tls-key
//! --auth` on the server, `--tls-ca --token-file` on the client).
//! Test names are `<case>::<client>_client_<server>_server[_over_tls]`, so
//! `cargo test --test conformance mio_client_mio_server` runs one pairing
//! both ways and `cargo test --test conformance over_tls` every TLS run.
//! The cases under `wire::` (conformance_wire/) check the server against
//! docs/PROTOCOL.md with hand-made frames, once per server transport
//! (`wire::<case>::raw_client_<server>_server`).

mod common;
// The raw-frame cases (`wire::...`) speak the protocol by hand.
#[allow(unused_macros)]
mod hostile_common;
#[path = "conformance_wire/mod.rs"]
mod wire;

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::history::{History, Record};
use common::proxy::Proxy;
use common::secure::{Credentials, credentials};
use common::{Serve, Shell, free_addr, root};

const PAGE: usize = 4096;

/// Which transport each side runs.
#[derive(Copy, Clone, Debug)]
struct Pairing {
    client: &'static str,
    server: &'static str,
    /// TLS, and a token with full rights.
    tls: bool,
}

impl Pairing {
    /// `rmmap serve ROOT --listen LISTEN --transport S ARGS...`
    fn serve(self, root: &Path, listen: &str, args: &[&str]) -> Serve {
        let secure = self.secure_args(|c| c.serve_args());
        let mut all = vec!["--transport", self.server];
        all.extend(secure.iter().map(String::as_str));
        all.extend_from_slice(args);
        Serve::start(root, listen, &all)
    }

    /// `rmmap shell ADDR --transport C ARGS...`
    fn shell(self, addr: &str, args: &[&str]) -> Shell {
        let secure = self.secure_args(|c| c.client_args(&c.writer));
        let mut all = vec!["--transport", self.client];
        all.extend(secure.iter().map(String::as_str));
        all.extend_from_slice(args);
        Shell::start(addr, &all)
    }

    fn secure_args(self, f: impl FnOnce(&'static Credentials) -> Vec<String>) -> Vec<String> {
        if self.tls {
            f(credentials())
        } else {
            Vec::new()
        }
    }
}

/// Generates `mod <case> { #[test] fn <pairing>() }` for every pairing,
/// in plaintext and over TLS.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::Pairing;

            pairings!($case:
                tokio_client_tokio_server, tokio_client_tokio_server_over_tls = "tokio", "tokio";
                mio_client_mio_server, mio_client_mio_server_over_tls = "mio", "mio";
                tokio_client_mio_server, tokio_client_mio_server_over_tls = "tokio", "mio";
                mio_client_tokio_server, mio_client_tokio_server_over_tls = "mio", "tokio";
            );
        }
    )*};
}

/// One plaintext and one TLS test per client/server pairing.
macro_rules! pairings {
    ($case:ident: $($plain:ident, $tls:ident = $client:literal, $server:literal;)*) => {$(
        #[test]
        fn $plain() {
            super::within(super::$case, Pairing { client: $client, server: $server, tls: false });
        }

        #[test]
        fn $tls() {
            super::within(super::$case, Pairing { client: $client, server: $server, tls: true });
        }
    )*};
}

conformance!(
    pages_map_read_write_sync_and_unmap,
    every_read_by_any_client_sees_the_latest_completed_write,
    writes_invalidate_and_recall_other_clients_copies,
    cut_connections_apply_every_write_exactly_once,
    a_restarted_server_keeps_synced_data_and_reports_lost_sessions,
    bad_inputs_get_clear_errors_and_touch_nothing_outside,
    a_read_only_server_refuses_writes,
    a_graceful_shutdown_writes_back_dirty_pages,
);

/// Runs a raw-frame case against `rmmap serve --transport SERVER` on a
/// thread, with the same two-minute limit.
fn within_raw(case: fn(&str), server: &'static str) {
    within(
        move |_| case(server),
        Pairing {
            client: "raw",
            server,
            tls: false,
        },
    );
}

/// Runs a case on a thread and fails it, instead of hanging the suite, if
/// it takes longer than two minutes.
fn within(case: impl FnOnce(Pairing) + Send + 'static, p: Pairing) {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        case(p);
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(()) => t.join().unwrap(),
        // The case panicked: report its panic.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(e) = t.join() {
                std::panic::resume_unwind(e);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{p:?} took over 120 s"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|k| u8::from_str_radix(&s[2 * k..2 * k + 2], 16).unwrap())
        .collect()
}

/// A word as the shell writes it.
fn word(v: u64) -> String {
    hex(&v.to_le_bytes())
}

/// The server arguments of a fresh temporary root: short leases, no grace.
const FRESH: [&str; 4] = ["--lease-ms", "2000", "--restart-grace-ms", "0"];

// ---- the cases ----

fn pages_map_read_write_sync_and_unmap(p: Pairing) {
    let (_dir, root) = root();
    let initial: Vec<u8> = (0..3 * PAGE + 100).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("f"), &initial).unwrap();
    let server = p.serve(&root, "127.0.0.1:0", &FRESH);
    let mut sh = p.shell(&server.addr, &[]);
    // A mapping that starts inside page 0 and ends inside page 3.
    let len = 3 * PAGE;
    let m = sh.ok(&format!("map f 100 {len} rw"));
    assert_eq!(
        sh.ok(&format!("read {m} 0 {len}")),
        hex(&initial[100..100 + len])
    );
    // A write across two page boundaries (file bytes 3100..9100).
    let data: Vec<u8> = (0..6000).map(|i| (i * 7 % 256) as u8).collect();
    sh.ok(&format!("write {m} 3000 {}", hex(&data)));
    let mut expected = initial.clone();
    expected[3100..9100].copy_from_slice(&data);
    assert_eq!(
        sh.ok(&format!("read {m} 2990 6020")),
        hex(&expected[3090..9110])
    );
    // A second, overlapping mapping of the same client sees it too.
    let whole = sh.ok(&format!("map f 0 {} ro", initial.len()));
    assert_eq!(
        sh.ok(&format!("read {whole} 0 {}", initial.len())),
        hex(&expected)
    );
    sh.ok(&format!("sync {m}"));
    assert_eq!(
        std::fs::read(root.join("f")).unwrap(),
        expected,
        "synced to disk"
    );
    // Another client reads the same bytes.
    let mut other = p.shell(&server.addr, &[]);
    let o = other.ok("map f 4000 200 ro");
    assert_eq!(
        other.ok(&format!("read {o} 0 200")),
        hex(&expected[4000..4200])
    );
    sh.ok(&format!("unmap {m}"));
    assert_eq!(
        sh.err_kind(format!("read {m} 0 1").as_bytes()),
        "unknown_mapping"
    );
    sh.ok(&format!("unmap {whole}"));
    assert!(sh.quit().success());
    assert!(other.quit().success());
}

fn every_read_by_any_client_sees_the_latest_completed_write(p: Pairing) {
    const SHELLS: u64 = 3;
    const OPS: u64 = 50;
    const SLOTS: u64 = 8;
    // Eight words on two pages, next to the boundary.
    let offset = |slot: u64| (slot % 2) * PAGE as u64 + 4000 + (slot / 2) * 8;
    let (_dir, root) = root();
    std::fs::write(root.join("shared"), vec![0u8; 2 * PAGE]).unwrap();
    let server = p.serve(&root, "127.0.0.1:0", &FRESH);
    let history = Arc::new(History::default());
    let threads: Vec<_> = (0..SHELLS)
        .map(|s| {
            let (addr, h) = (server.addr.clone(), history.clone());
            std::thread::spawn(move || {
                let mut sh = p.shell(&addr, &[]);
                let id = sh.ok("map shared 0 8192 rw");
                let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ (s + 1);
                for i in 0..OPS {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let slot = rng % SLOTS;
                    let write = (rng >> 8) % 2 == 0;
                    let start = h.tick();
                    let value = if write {
                        let v = ((s + 1) << 32) | (i + 1);
                        sh.ok(&format!("write {id} {} {}", offset(slot), word(v)));
                        v
                    } else {
                        let b = unhex(&sh.ok(&format!("read {id} {} 8", offset(slot))));
                        u64::from_le_bytes(b.try_into().unwrap())
                    };
                    let end = h.tick();
                    h.record(Record {
                        slot,
                        write,
                        value,
                        start,
                        end,
                    });
                }
                assert!(sh.quit().success());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(history.len() as u64, SHELLS * OPS);
    let bad = history.violations(0);
    assert!(
        bad.is_empty(),
        "{} stale reads, first: {}",
        bad.len(),
        bad[0]
    );
}

fn writes_invalidate_and_recall_other_clients_copies(p: Pairing) {
    let (_dir, root) = root();
    std::fs::write(root.join("f"), vec![0u8; 2 * PAGE]).unwrap();
    let server = p.serve(&root, "127.0.0.1:0", &FRESH);
    let (mut a, mut b) = (p.shell(&server.addr, &[]), p.shell(&server.addr, &[]));
    let mut reader = p.shell(&server.addr, &[]);
    let ma = a.ok("map f 0 8192 rw");
    let mb = b.ok("map f 0 8192 rw");
    let mr = reader.ok("map f 0 8192 ro");
    for i in 0..12u64 {
        let at = (i % 2) * PAGE as u64 + 8 * i;
        // a writes (b's and the reader's copies must go), b reads at once.
        let v = 1000 + i;
        a.ok(&format!("write {ma} {at} {}", word(v)));
        assert_eq!(
            b.ok(&format!("read {mb} {at} 8")),
            word(v),
            "b after a, round {i}"
        );
        assert_eq!(
            reader.ok(&format!("read {mr} {at} 8")),
            word(v),
            "reader, round {i}"
        );
        // Then the reverse: b's write recalls the page from a.
        let w = 2000 + i;
        b.ok(&format!("write {mb} {at} {}", word(w)));
        assert_eq!(
            a.ok(&format!("read {ma} {at} 8")),
            word(w),
            "a after b, round {i}"
        );
        assert_eq!(
            reader.ok(&format!("read {mr} {at} 8")),
            word(w),
            "reader, round {i}"
        );
    }
    // b holds the last writes; its sync puts them on disk.
    b.ok(&format!("sync {mb}"));
    let disk = std::fs::read(root.join("f")).unwrap();
    assert_eq!(&disk[PAGE + 88..PAGE + 96], &2011u64.to_le_bytes());
    for sh in [a, b, reader] {
        assert!(sh.quit().success());
    }
}

fn cut_connections_apply_every_write_exactly_once(p: Pairing) {
    const CLIENTS: u64 = 2;
    /// Each client writes at least this many times, and on until the proxy
    /// has cut the connections [`CUTS`] times.
    const WRITES: u64 = 50;
    const CUTS: usize = 5;
    /// Slots per client: later writes overwrite earlier ones.
    const SLOTS: u64 = 16;
    let (_dir, root) = root();
    std::fs::write(root.join("log"), vec![0u8; 2 * PAGE]).unwrap();
    let args = ["--lease-ms", "5000", "--restart-grace-ms", "0"];
    let server = p.serve(&root, "127.0.0.1:0", &args);
    let proxy = Arc::new(Proxy::start(&server.addr));
    // The clients' slots interleave on two pages, so nearly every write
    // recalls a page from the other client.
    let offset = |c: u64, j: u64| {
        let s = (j % SLOTS) * CLIENTS + c;
        (s % 2) * PAGE as u64 + (s / 2) * 8
    };
    let value = |c: u64, j: u64| ((c + 1) << 32) | (j + 1);
    // Map before cutting: a cut during the very first handshake is an error
    // by design.
    let shells: Vec<(Shell, String)> = (0..CLIENTS)
        .map(|_| {
            let mut sh = p.shell(&proxy.addr, &[]);
            let id = sh.ok("map log 0 8192 rw");
            (sh, id)
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let cuts = Arc::new(AtomicUsize::new(0));
    let cutter = {
        let (done, cuts, proxy) = (done.clone(), cuts.clone(), proxy.clone());
        std::thread::spawn(move || {
            let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
            while !done.load(Ordering::Acquire) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                std::thread::sleep(Duration::from_millis(20 + rng % 50));
                if proxy.cut() > 0 {
                    cuts.fetch_add(1, Ordering::AcqRel);
                }
            }
        })
    };
    let writers: Vec<_> = shells
        .into_iter()
        .zip(0..CLIENTS)
        .map(|((mut sh, id), c)| {
            let cuts = cuts.clone();
            std::thread::spawn(move || {
                let mut j = 0;
                while j < WRITES || (cuts.load(Ordering::Acquire) < CUTS && j < 20_000) {
                    sh.ok(&format!(
                        "write {id} {} {}",
                        offset(c, j),
                        word(value(c, j))
                    ));
                    j += 1;
                }
                sh.ok(&format!("sync {id}"));
                (sh, j)
            })
        })
        .collect();
    let done_writing: Vec<(Shell, u64)> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    done.store(true, Ordering::Release);
    cutter.join().unwrap();
    let cuts = cuts.load(Ordering::Acquire);
    assert!(
        cuts >= CUTS,
        "the proxy cut only {cuts} times; the test proves nothing"
    );

    // Each slot holds the last value written to it, and no value twice.
    let disk = std::fs::read(root.join("log")).unwrap();
    let mut seen = BTreeMap::new();
    for at in (0..disk.len()).step_by(8) {
        let v = u64::from_le_bytes(disk[at..at + 8].try_into().unwrap());
        if v != 0 {
            assert!(seen.insert(v, at).is_none(), "value {v:#x} appears twice");
        }
    }
    for (c, (_, n)) in (0..CLIENTS).zip(&done_writing) {
        for j in n - SLOTS..*n {
            let at = offset(c, j) as usize;
            let got = u64::from_le_bytes(disk[at..at + 8].try_into().unwrap());
            assert_eq!(got, value(c, j), "client {c} slot {}", j % SLOTS);
        }
    }
    assert_eq!(seen.len() as u64, CLIENTS * SLOTS);
    // A client straight to the server sees what the disk has.
    let mut check = p.shell(&server.addr, &[]);
    let m = check.ok("map log 0 8192 ro");
    assert_eq!(check.ok(&format!("read {m} 0 8192")), hex(&disk));
    let writes: Vec<u64> = done_writing.iter().map(|(_, n)| *n).collect();
    eprintln!("{cuts} cuts, writes per client {writes:?}");
}

fn a_restarted_server_keeps_synced_data_and_reports_lost_sessions(p: Pairing) {
    let (_dir, root) = root();
    std::fs::write(root.join("kept"), vec![0u8; 2 * PAGE]).unwrap();
    std::fs::write(root.join("lost"), vec![0u8; PAGE]).unwrap();
    let addr = free_addr();
    // A short lease keeps the restart grace period (one lease) short; the
    // writes after the restart wait for it to end.
    let args = ["--lease-ms", "1000"];
    let server = p.serve(&root, &addr, &args);

    let mut a = p.shell(&addr, &[]);
    let kept = a.ok("map kept 0 8192 rw");
    let data: Vec<u8> = (0..2 * PAGE).map(|i| (i * 7 % 251) as u8).collect();
    a.ok(&format!("write {kept} 0 {}", hex(&data[..PAGE])));
    a.ok(&format!("write {kept} {PAGE} {}", hex(&data[PAGE..])));
    a.ok(&format!("sync {kept}"));

    let mut b = p.shell(&addr, &[]);
    let lost = b.ok("map lost 0 4096 rw");
    b.ok(&format!("write {lost} 0 {}", hex(b"never synced")));
    let clean = b.ok("map kept 0 16 ro");

    server.kill();
    assert_eq!(std::fs::read(root.join("kept")).unwrap(), data);
    let server = p.serve(&root, &addr, &args);

    // The shells reconnect by themselves; a's mapping lost nothing.
    assert_eq!(a.ok(&format!("read {kept} 0 8192")), hex(&data));
    assert_eq!(b.ok(&format!("read {clean} 0 16")), hex(&data[..16]));
    // b's unsynced writes are gone, and b says so, for that mapping only.
    let r = b.cmd(&format!("read {lost} 0 4"));
    assert!(r.starts_with("err session_lost "), "{r}");
    assert_eq!(std::fs::read(root.join("lost")).unwrap(), vec![0u8; PAGE]);
    // Told once: the mapping goes on with the server's bytes, no remap.
    assert_eq!(b.ok(&format!("read {lost} 0 4")), "00000000");
    b.ok(&format!("write {lost} 0 {}", hex(b"second try")));
    b.ok(&format!("sync {lost}"));
    b.ok(&format!("unmap {lost}"));
    assert_eq!(
        &std::fs::read(root.join("lost")).unwrap()[..10],
        b"second try"
    );
    assert!(a.quit().success());
    assert!(b.quit().success());
    drop(server);
}

fn bad_inputs_get_clear_errors_and_touch_nothing_outside(p: Pairing) {
    let (dir, root) = root();
    std::fs::write(root.join("ok"), [7u8; 100]).unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"secret").unwrap();
    symlink(&secret, root.join("escape")).unwrap();
    symlink(dir.path(), root.join("updir")).unwrap();
    let server = p.serve(&root, "127.0.0.1:0", &FRESH);
    let mut sh = p.shell(&server.addr, &["--create"]);
    let long = format!("map {} 0 1 ro", "a".repeat(10_000));
    let cases: [(&[u8], &str); 12] = [
        (b"map ../x 0 1 ro", "bad_path"),
        (b"map ../x 0 1 rw", "bad_path"),
        (b"map /etc/passwd 0 1 ro", "bad_path"),
        (b"map a\0b 0 1 ro", "bad_path"),
        (long.as_bytes(), "bad_path"),
        (b"map escape 0 1 ro", "denied"),
        (b"map escape 0 1 rw", "denied"),
        (b"map updir/secret 0 1 ro", "denied"),
        (b"map updir/new 0 1 rw", "denied"),
        (b"map ok 0 101 ro", "out_of_range"),
        (b"map ok 100 1 ro", "out_of_range"),
        (b"map missing 0 1 ro", "not_found"),
    ];
    for (line, want) in cases {
        let shown = String::from_utf8_lossy(&line[..line.len().min(40)]).into_owned();
        assert_eq!(sh.err_kind(line), want, "{shown:?}");
    }
    let id = sh.ok("map ok 10 50 rw");
    assert_eq!(
        sh.err_kind(format!("read {id} 45 6").as_bytes()),
        "out_of_range"
    );
    assert_eq!(
        sh.err_kind(format!("write {id} 50 00").as_bytes()),
        "out_of_range"
    );
    assert_eq!(sh.err_kind(b"read 9 0 1"), "unknown_mapping");
    // The shell and the server carry on, and nothing outside changed.
    assert_eq!(sh.ok(&format!("read {id} 0 2")), "0707");
    assert!(sh.quit().success());
    assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
    assert!(!dir.path().join("new").exists());
    assert!(!dir.path().join("x").exists());
    assert!(!root.join("missing").exists());
}

fn a_read_only_server_refuses_writes(p: Pairing) {
    let (_dir, root) = root();
    std::fs::write(root.join("f"), b"unchanged").unwrap();
    let server = p.serve(
        &root,
        "127.0.0.1:0",
        &["--read-only", "--restart-grace-ms", "0"],
    );
    let mut sh = p.shell(&server.addr, &["--create"]);
    assert_eq!(sh.err_kind(b"map f 0 9 rw"), "read_only");
    assert_eq!(sh.err_kind(b"map new 0 9 rw"), "read_only");
    let id = sh.ok("map f 0 9 ro");
    assert_eq!(
        sh.err_kind(format!("write {id} 0 00").as_bytes()),
        "read_only"
    );
    assert_eq!(sh.ok(&format!("read {id} 0 9")), hex(b"unchanged"));
    assert!(sh.quit().success());
    assert_eq!(std::fs::read(root.join("f")).unwrap(), b"unchanged");
    assert!(!root.join("new").exists());
}

fn a_graceful_shutdown_writes_back_dirty_pages(p: Pairing) {
    let (_dir, root) = root();
    std::fs::write(root.join("f"), vec![0u8; 2 * PAGE]).unwrap();
    let mut server = p.serve(&root, "127.0.0.1:0", &FRESH);
    let mut sh = p.shell(&server.addr, &[]);
    let id = sh.ok("map f 0 8192 rw");
    // Written, never synced by the client: only in its cache.
    sh.ok(&format!("write {id} 4090 {}", hex(b"dirty across pages")));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "rmmap serve exited with {exit}");
    let disk = std::fs::read(root.join("f")).unwrap();
    assert_eq!(&disk[4090..4108], b"dirty across pages");
    drop(sh);
}
