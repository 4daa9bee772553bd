//! A disk that fills up under `rmmap serve`, for real: a small tmpfs holding
//! a sparse file, filled with another file, so that the server's write of a
//! recalled page fails with ENOSPC. Nothing may report success for data that
//! is not on the disk, and every client must keep reading the latest
//! completed write. Both server transports. (Linux, as root: the test says
//! it is skipped where it cannot mount a tmpfs.)
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::{Serve, Shell, Tmpfs, eventually};

const LEN: u64 = 1 << 20;
const AT: u64 = 409_608;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A server of `transport` exporting a tmpfs that holds the sparse file `g`
/// (1 MiB, no blocks), and that is full once the server has recorded its
/// run state (it grants no write ownership before).
fn serve_a_full_disk(transport: &str) -> Option<(Tmpfs, Serve)> {
    let fs = Tmpfs::mount("2m")?;
    let g = std::fs::File::create(fs.path().join("g")).unwrap();
    g.set_len(LEN).unwrap();
    drop(g);
    let server = Serve::start(fs.path(), "127.0.0.1:0", &["--transport", transport]);
    assert!(eventually(Duration::from_secs(10), || fs
        .path()
        .join(".rmmap-state")
        .exists()));
    fs.fill("fill");
    Some((fs, server))
}

fn on_disk(fs: &Tmpfs, at: u64, len: usize) -> Vec<u8> {
    let b = std::fs::read(fs.path().join("g")).unwrap();
    b[at as usize..at as usize + len].to_vec()
}

/// The reproduction: W writes, Q's read recalls W's page, and the
/// server's write of it fails for lack of space. W's sync says so, naming
/// the file and the cause; both keep reading W's bytes; once space is freed a
/// sync succeeds and the bytes are on the disk.
fn a_full_disk_fails_the_writers_sync_and_loses_nothing(transport: &str) {
    let Some((fs, server)) = serve_a_full_disk(transport) else {
        return;
    };
    let mut w = Shell::start(&server.addr, &[]);
    let mut q = Shell::start(&server.addr, &[]);
    let wm = w.ok(&format!("map g 0 {LEN} rw"));
    let data = [0xabu8; 16];
    w.ok(&format!("write {wm} {AT} {}", hex(&data)));
    let qm = q.ok(&format!("map g 0 {LEN} ro"));
    assert_eq!(q.ok(&format!("read {qm} {AT} 16")), hex(&data));
    let r = w.cmd(&format!("sync {wm}"));
    assert!(r.starts_with("err no_space "), "{r}");
    assert!(
        r.contains('g') && r.contains("space"),
        "names the file and the cause: {r}"
    );
    assert_eq!(
        on_disk(&fs, AT, 16),
        vec![0u8; 16],
        "the disk really is full"
    );
    // Nobody reads anything older than W's completed write.
    assert_eq!(q.ok(&format!("read {qm} {AT} 16")), hex(&data));
    assert_eq!(w.ok(&format!("read {wm} {AT} 16")), hex(&data));
    // A second sync, still full, still says so.
    let r = w.cmd(&format!("sync {wm}"));
    assert!(r.starts_with("err no_space "), "{r}");
    std::fs::remove_file(fs.path().join("fill")).unwrap();
    w.ok(&format!("sync {wm}"));
    assert_eq!(
        on_disk(&fs, AT, 16),
        data.to_vec(),
        "on the disk once it had room"
    );
    assert!(w.quit().success());
    assert!(q.quit().success());
    assert!(server.terminate().success(), "a clean shutdown");
}

/// The server shuts down (SIGTERM) while the disk refuses a recalled page:
/// it does not claim success (exit status 1), and the written bytes, synced
/// once space is back before the next start, were never reported durable.
fn a_shutdown_that_cannot_write_says_so(transport: &str) {
    let Some((fs, server)) = serve_a_full_disk(transport) else {
        return;
    };
    let mut w = Shell::start(&server.addr, &[]);
    let wm = w.ok(&format!("map g 0 {LEN} rw"));
    w.ok(&format!("write {wm} {AT} {}", hex(&[0xcd; 16])));
    let status = server.terminate();
    assert!(
        !status.success(),
        "the shutdown reports what it could not write"
    );
    assert_eq!(on_disk(&fs, AT, 16), vec![0u8; 16]);
}

#[test]
fn a_full_disk_fails_the_writers_sync_and_loses_nothing_tokio() {
    a_full_disk_fails_the_writers_sync_and_loses_nothing("tokio");
}

#[test]
fn a_full_disk_fails_the_writers_sync_and_loses_nothing_mio() {
    a_full_disk_fails_the_writers_sync_and_loses_nothing("mio");
}

#[test]
fn a_shutdown_that_cannot_write_says_so_tokio() {
    a_shutdown_that_cannot_write_says_so("tokio");
}

#[test]
fn a_shutdown_that_cannot_write_says_so_mio() {
    a_shutdown_that_cannot_write_says_so("mio");
}

/// `unmap` and `quit` sync first: a write the disk refused is reported by
/// each instead of success; the unmap keeps the mapping (it works once
/// space is back) and a failed quit exits non-zero.
fn unmap_and_quit_report_what_the_disk_refused(transport: &str) {
    let Some((fs, server)) = serve_a_full_disk(transport) else {
        return;
    };
    let mut w = Shell::start(&server.addr, &["--transport", transport]);
    let mut q = Shell::start(&server.addr, &[]);
    let wm = w.ok(&format!("map g 0 {LEN} rw"));
    w.ok(&format!("write {wm} {AT} {}", hex(&[0xef; 16])));
    let qm = q.ok(&format!("map g 0 {LEN} ro"));
    assert_eq!(q.ok(&format!("read {qm} {AT} 16")), hex(&[0xef; 16]));
    let r = w.cmd(&format!("unmap {wm}"));
    assert!(r.starts_with("err no_space "), "{r}");
    assert_eq!(w.ok(&format!("read {wm} {AT} 16")), hex(&[0xef; 16]));
    let r = w.cmd("quit");
    assert!(r.starts_with("err no_space "), "{r}");
    assert!(
        !w.exit_status().success(),
        "a quit that could not sync fails"
    );
    std::fs::remove_file(fs.path().join("fill")).unwrap();
    assert!(q.quit().success());
    assert!(server.terminate().success(), "a clean shutdown");
    assert_eq!(on_disk(&fs, AT, 16), vec![0xef; 16], "kept and written");
}

#[test]
fn unmap_and_quit_report_what_the_disk_refused_tokio() {
    unmap_and_quit_report_what_the_disk_refused("tokio");
}

#[test]
fn unmap_and_quit_report_what_the_disk_refused_mio() {
    unmap_and_quit_report_what_the_disk_refused("mio");
}
