//! `rmmap serve` killed with SIGKILL and started again on the same address:
//! what was written and synced is all there, the shells reconnect by
//! themselves, and a shell whose mapping had unsynced writes says
//! `err session_lost ...` for it instead of hiding the loss.

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
    assert_eq!(std::fs::read(root.join("lost")).unwrap(), vec![0u8; PAGE]);
    // Unmap and map again to carry on.
    b.ok(&format!("unmap {lost}"));
    let again = b.ok("map lost 0 4096 rw");
    b.ok(&format!("write {again} 0 {}", hex(b"second try")));
    b.ok(&format!("sync {again}"));
    assert_eq!(
        &std::fs::read(root.join("lost")).unwrap()[..10],
        b"second try"
    );
    assert!(a.quit().success());
    assert!(b.quit().success());
    drop(server);
}
