//! `rmmap serve` killed with SIGKILL and started again on the same address:
//! what was written and synced is all there, the shells reconnect by
//! themselves, and a shell whose mapping had unsynced writes says
//! `err session_lost ...` for it, once, instead of hiding the loss; the
//! mapping then goes on with the server's bytes (issue 19). A loss no
//! command heard is reported by the unmap, never `ok`.

mod common;

use common::{Serve, Shell, free_addr, root};

const PAGE: usize = 4096;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn synced_data_survives_sigkill_and_unsynced_loss_is_reported() {
    let (_dir, root) = root();
    std::fs::write(root.join("kept"), vec![0u8; 2 * PAGE]).unwrap();
    std::fs::write(root.join("lost"), vec![0u8; PAGE]).unwrap();
    std::fs::write(root.join("unheard"), vec![0u8; PAGE]).unwrap();
    let addr = free_addr();
    // A short lease keeps the restart grace period (one lease) short.
    let args = ["--lease-ms", "1000"];
    let server = Serve::start(&root, &addr, &args);

    let mut a = Shell::start(&addr, &[]);
    let kept = a.ok("map kept 0 8192 rw");
    let data: Vec<u8> = (0..2 * PAGE).map(|i| (i * 7 % 251) as u8).collect();
    a.ok(&format!("write {kept} 0 {}", hex(&data[..PAGE])));
    a.ok(&format!("write {kept} {PAGE} {}", hex(&data[PAGE..])));
    a.ok(&format!("sync {kept}"));

    let mut b = Shell::start(&addr, &[]);
    let lost = b.ok("map lost 0 4096 rw");
    b.ok(&format!("write {lost} 0 {}", hex(b"never synced")));
    // b also maps `kept` without writing it: nothing to lose there.
    let clean = b.ok("map kept 0 16 ro");
    let unheard = b.ok("map unheard 0 4096 rw");
    b.ok(&format!("write {unheard} 0 {}", hex(b"also unsynced")));

    server.kill();
    assert_eq!(
        std::fs::read(root.join("kept")).unwrap(),
        data,
        "synced data on disk after SIGKILL"
    );
    let server = Serve::start(&root, &addr, &args);

    // The shells reconnect by themselves; a's mapping lost nothing.
    assert_eq!(a.ok(&format!("read {kept} 0 8192")), hex(&data));
    assert_eq!(b.ok(&format!("read {clean} 0 16")), hex(&data[..16]));
    // b's unsynced writes are gone, and b says so, for that mapping only.
    let r = b.cmd(&format!("read {lost} 0 4"));
    assert!(r.starts_with("err session_lost "), "{r}");
    assert!(r.contains("lost") && r.contains("restarted"), "{r}");
    assert!(r.contains("page(s) 0"), "names the page: {r}");
    assert_eq!(std::fs::read(root.join("lost")).unwrap(), vec![0u8; PAGE]);
    // Told once: the mapping goes on with the server's bytes, no remap.
    assert_eq!(b.ok(&format!("read {lost} 0 4")), "00000000");
    b.ok(&format!("write {lost} 0 {}", hex(b"second try")));
    b.ok(&format!("sync {lost}"));
    // A loss no command heard: the unmap says it (never "ok" for lost data).
    let r = b.cmd(&format!("unmap {unheard}"));
    assert!(r.starts_with("err session_lost "), "{r}");
    assert_eq!(
        &std::fs::read(root.join("lost")).unwrap()[..10],
        b"second try"
    );
    assert!(a.quit().success());
    assert!(b.quit().success());
    drop(server);
}

/// A crashed run's clients may trust their leases for as long as that run
/// granted them: a new run with a shorter lease still waits out the old one
/// before it lets anyone write (the old run recorded its lease in the
/// export's run state), while reads are served at once.
#[test]
fn a_restart_with_a_shorter_lease_waits_out_the_longer_one() {
    let (_dir, root) = root();
    std::fs::write(root.join("f"), vec![0u8; PAGE]).unwrap();
    let addr = free_addr();
    let old = Serve::start(&root, &addr, &["--lease-ms", "3000"]);
    let mut c = Shell::start(&addr, &[]);
    let cm = c.ok("map f 0 4096 ro");
    assert_eq!(c.ok(&format!("read {cm} 0 4")), "00000000");
    old.kill();
    let state = std::fs::read_to_string(root.join(".rmmap-state")).unwrap();
    assert!(state.contains("grace_ms 3000"), "{state}");
    let started = std::time::Instant::now();
    let new = Serve::start(&root, &addr, &["--lease-ms", "300"]);
    let mut d = Shell::start(&addr, &[]);
    let dm = d.ok("map f 0 4096 rw");
    assert_eq!(d.ok(&format!("read {dm} 0 4")), "00000000");
    let read_at = started.elapsed();
    d.ok(&format!("write {dm} 0 {}", hex(b"new!")));
    let written_at = started.elapsed();
    assert!(
        read_at < std::time::Duration::from_millis(2500),
        "reads wait for nothing: {read_at:?}"
    );
    assert!(
        written_at >= std::time::Duration::from_millis(3000),
        "the first write waited out the old run's 3 s lease, not the new 0.3 s one: {written_at:?}"
    );
    // The new run records the longer of the two, for its own successor.
    let state = std::fs::read_to_string(root.join(".rmmap-state")).unwrap();
    assert!(state.contains("grace_ms 3000"), "{state}");
    d.ok(&format!("sync {dm}"));
    assert!(d.quit().success());
    drop((c, new));
}

/// After a clean shutdown whose clients had all left, nobody can still
/// trust a lease: the next run takes writes at once, whatever its lease.
#[test]
fn after_a_clean_shutdown_the_next_run_takes_writes_at_once() {
    let (_dir, root) = root();
    std::fs::write(root.join("f"), vec![0u8; PAGE]).unwrap();
    let addr = free_addr();
    let first = Serve::start(&root, &addr, &["--lease-ms", "10000"]);
    let mut a = Shell::start(&addr, &[]);
    let am = a.ok("map f 0 4096 rw");
    a.ok(&format!("write {am} 0 {}", hex(b"one")));
    assert!(a.quit().success());
    assert!(first.terminate().success());
    let state = std::fs::read_to_string(root.join(".rmmap-state")).unwrap();
    assert!(
        state.contains("running 0") && state.contains("grace_ms 0"),
        "{state}"
    );
    let started = std::time::Instant::now();
    let _second = Serve::start(&root, &addr, &["--lease-ms", "10000"]);
    let mut b = Shell::start(&addr, &[]);
    let bm = b.ok("map f 0 4096 rw");
    assert_eq!(b.ok(&format!("read {bm} 0 3")), hex(b"one"));
    b.ok(&format!("write {bm} 0 {}", hex(b"two")));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "no grace after a clean shutdown: {:?}",
        started.elapsed()
    );
    assert!(b.quit().success());
}
