//! Rolling restarts (issue 19): `rmmap serve` is stopped with SIGTERM and
//! started again on the same address 20 times while 8 shells write (each its
//! own page, synced only every other round) and read everyone's pages. No
//! shell reports a loss or needs to map again, every read is the latest
//! write, and every write handed back before a shutdown is on the disk after
//! it. Both transports (server and shells alike).

mod common;

use common::{Serve, Shell, free_addr, root};

const PAGE: usize = 4096;
const CLIENTS: usize = 8;
const ROUNDS: u8 = 20;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn rolling_restarts_lose_nothing(transport: &str) {
    let (_dir, root) = root();
    std::fs::write(root.join("f"), vec![0u8; CLIENTS * PAGE]).unwrap();
    let addr = free_addr();
    let args = ["--transport", transport, "--lease-ms", "2000"];
    let mut server = Serve::start(&root, &addr, &args);
    let mut shells: Vec<Shell> = (0..CLIENTS)
        .map(|_| Shell::start(&addr, &["--transport", transport]))
        .collect();
    let len = CLIENTS * PAGE;
    let ids: Vec<String> = shells
        .iter_mut()
        .map(|s| s.ok(&format!("map f 0 {len} rw")))
        .collect();
    let mut latest = [[0u8; 8]; CLIENTS];
    for round in 0..ROUNDS {
        for (i, s) in shells.iter_mut().enumerate() {
            let value = [round, i as u8, 0xA5, round ^ 0x5A, 1, 2, 3, i as u8];
            let at = i * PAGE + 16;
            s.ok(&format!("write {} {at} {}", ids[i], hex(&value)));
            latest[i] = value;
            if round % 2 == 0 {
                s.ok(&format!("sync {}", ids[i]));
            }
        }
        for (i, s) in shells.iter_mut().enumerate() {
            for (j, want) in latest.iter().enumerate() {
                let at = j * PAGE + 16;
                assert_eq!(
                    s.ok(&format!("read {} {at} 8", ids[i])),
                    hex(want),
                    "round {round}: shell {i} reads page {j}"
                );
            }
        }
        assert!(server.terminate().success(), "round {round}: a clean stop");
        let disk = std::fs::read(root.join("f")).unwrap();
        for (j, want) in latest.iter().enumerate() {
            let at = j * PAGE + 16;
            assert_eq!(&disk[at..at + 8], want, "round {round}: page {j} on disk");
        }
        server = Serve::start(&root, &addr, &args);
    }
    for s in shells {
        assert!(s.quit().success());
    }
    assert!(server.terminate().success());
}

#[test]
fn rolling_restarts_lose_nothing_tokio() {
    rolling_restarts_lose_nothing("tokio");
}

#[test]
fn rolling_restarts_lose_nothing_mio() {
    rolling_restarts_lose_nothing("mio");
}
