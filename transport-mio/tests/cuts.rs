//! A proxy between the blocking mio clients and the mio server cuts every
//! connection at random moments while the clients write and count with
//! atomics: they reconnect, resume their sessions and carry on, and no
//! write is lost or applied twice (each fetch-add sees the count before it,
//! without a gap or a repeat).

// The plain-thread proxy of the command's tests (no Tokio here either).
#[path = "../../cli/tests/common/proxy.rs"]
#[allow(unreachable_pub)]
mod proxy;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use proxy::Proxy;
use rmmap_mio::{Access, AtomicOp, Client, ClientConfig, ClientEvent, Server, ServerConfig};

const CLIENTS: u64 = 3;
const SLOTS: u64 = 150;
/// Each client writes at least [`SLOTS`] times, and on (round the slots)
/// until the proxy has cut the connections this often.
const CUTS: usize = 5;
const PAGE: u64 = 4096;
const LEN: u64 = 3 * PAGE;

/// Client `c`'s slot `j`: the clients' slots interleave on the first two
/// pages, so nearly every write recalls a page from someone.
fn slot(c: u64, j: u64) -> u64 {
    (j * CLIENTS + c) * 8
}

/// Client `c`'s counter, on the third page.
fn counter(c: u64) -> u64 {
    2 * PAGE + c * 8
}

fn value(c: u64, j: u64) -> u64 {
    ((c + 1) << 32) | (j + 1)
}

#[test]
fn cut_connections_lose_no_write_and_apply_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("log"), vec![0u8; LEN as usize]).unwrap();
    let config = ServerConfig::new(dir.path())
        .lease(Duration::from_secs(5))
        .restart_grace(Some(Duration::ZERO));
    let server = Server::bind("127.0.0.1:0", config).unwrap();
    let addr = server.local_addr().to_string();
    let proxy = Arc::new(Proxy::start(&addr));
    let done = Arc::new(AtomicBool::new(false));
    let cuts = Arc::new(AtomicUsize::new(0));

    // Connect first: a cut during the very first handshake is an error by
    // design (Client::connect reports it).
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|_| Client::connect(&proxy.addr, ClientConfig::default()).unwrap())
        .collect();
    let cutter = {
        let (done, cuts, p) = (done.clone(), cuts.clone(), proxy.clone());
        std::thread::spawn(move || {
            let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
            while !done.load(Ordering::Acquire) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                std::thread::sleep(Duration::from_millis(5 + rng % 35));
                if p.cut() > 0 {
                    cuts.fetch_add(1, Ordering::AcqRel);
                }
            }
        })
    };

    let writers: Vec<_> = (0..CLIENTS)
        .zip(clients)
        .map(|(c, client)| {
            let cuts = cuts.clone();
            std::thread::spawn(move || {
                let events = client.events();
                let m = client.map("log", 0..LEN, Access::ReadWrite).unwrap();
                let mut j = 0;
                while j < SLOTS || (cuts.load(Ordering::Acquire) < CUTS && j < 100_000) {
                    m.write(slot(c, j % SLOTS), &value(c, j).to_le_bytes())
                        .unwrap();
                    let (previous, applied) = m.atomic(counter(c), AtomicOp::FetchAdd(1)).unwrap();
                    assert!(applied);
                    assert_eq!(previous, j, "client {c}: add {j} saw {previous}");
                    j += 1;
                }
                m.sync().unwrap();
                let seen: Vec<ClientEvent> = events.try_iter().collect();
                drop(m);
                client.close().unwrap();
                (seen, j)
            })
        })
        .collect();
    let (mut events, mut counts) = (Vec::new(), Vec::new());
    for w in writers {
        let (seen, n) = w.join().unwrap();
        events.extend(seen);
        counts.push(n);
    }
    done.store(true, Ordering::Release);
    cutter.join().unwrap();
    let cuts = cuts.load(Ordering::Acquire);
    assert!(
        cuts >= CUTS,
        "the proxy cut only {cuts} times; the test proves nothing"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ClientEvent::SessionLost { .. })),
        "a session was lost: {events:?}"
    );
    assert!(events.contains(&ClientEvent::Connected { resumed: true }));

    let disk = std::fs::read(dir.path().join("log")).unwrap();
    let check = Client::connect(&addr, ClientConfig::default()).unwrap();
    let m = check.map("log", 0..LEN, Access::ReadOnly).unwrap();
    let data = m.read_bytes(0, LEN).unwrap();
    for bytes in [&data[..], &disk[..]] {
        let word =
            |at: u64| u64::from_le_bytes(bytes[at as usize..at as usize + 8].try_into().unwrap());
        for (c, n) in (0..CLIENTS).zip(counts.iter().copied()) {
            for j in n - SLOTS..n {
                let s = j % SLOTS;
                assert_eq!(word(slot(c, s)), value(c, j), "client {c} slot {s}");
            }
            assert_eq!(word(counter(c)), n, "client {c} counter");
        }
    }
    eprintln!("{cuts} cuts, operations per client {counts:?}");
}

#[test]
fn garbage_from_a_peer_closes_only_its_connection() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"still served").unwrap();
    let config = ServerConfig::new(dir.path()).restart_grace(Some(Duration::ZERO));
    let server = Server::bind("127.0.0.1:0", config).unwrap();
    let addr = server.local_addr().to_string();
    let good = Client::connect(&addr, ClientConfig::default()).unwrap();
    let mut raw = std::net::TcpStream::connect(&addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(&[0xff; 64]).unwrap();
    // The server answers with an error frame and closes: reading ends.
    let mut sink = Vec::new();
    let r = raw.read_to_end(&mut sink);
    assert!(r.is_ok() || r.unwrap_err().kind() == std::io::ErrorKind::ConnectionReset);
    let m = good.map("f", 0..12, Access::ReadOnly).unwrap();
    assert_eq!(&m.read_bytes(0, 12).unwrap()[..], b"still served");
    drop(m);
    good.close().unwrap();
    server.shutdown().unwrap();
}
