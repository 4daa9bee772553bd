//! Several `rmmap shell` processes against one `rmmap serve` process write
//! and read the same pages at once: every read sees the latest completed
//! write.

mod common;

use std::sync::Arc;

use common::history::{History, Record};
use common::{Serve, Shell, root};

const SHELLS: u64 = 3;
const OPS: u64 = 60;
const SLOTS: u64 = 8;

/// Eight words on two pages.
fn offset(slot: u64) -> u64 {
    (slot % 2) * 4096 + 4000 + (slot / 2) * 8
}

#[test]
fn every_read_by_any_shell_sees_the_latest_completed_write() {
    let (_dir, root) = root();
    std::fs::write(root.join("shared"), vec![0u8; 8192]).unwrap();
    let server = Serve::start(
        &root,
        "127.0.0.1:0",
        &["--lease-ms", "2000", "--restart-grace-ms", "0"],
    );
    let history = Arc::new(History::default());
    let threads: Vec<_> = (0..SHELLS)
        .map(|s| {
            let (addr, h) = (server.addr.clone(), history.clone());
            std::thread::spawn(move || {
                let mut shell = Shell::start(&addr, &[]);
                let id = shell.ok("map shared 0 8192 rw");
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
                        let hex: String =
                            v.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect();
                        shell.ok(&format!("write {id} {} {hex}", offset(slot)));
                        v
                    } else {
                        let hex = shell.ok(&format!("read {id} {} 8", offset(slot)));
                        let bytes: Vec<u8> = (0..8)
                            .map(|k| u8::from_str_radix(&hex[2 * k..2 * k + 2], 16).unwrap())
                            .collect();
                        u64::from_le_bytes(bytes.try_into().unwrap())
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
                assert!(shell.quit().success());
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
