//! Hostile clients that stall a real `rmmap serve` (tokio and mio) rather
//! than flood it: slowloris before and after the handshake, silent
//! sessions, clients that stop reading while the server pushes
//! invalidations to them, and an exclusive owner that never answers a
//! recall. Each is closed within about one lease (or the handshake timeout),
//! writers waiting on them proceed, nothing else is held up, and the
//! bystander keeps its data. Leases are 1 s.
//!
//! Linux only: the server is observed through /proc.
#![cfg(target_os = "linux")]

#[macro_use]
mod hostile_common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hostile_common::probe::{self, MemoryWatch};
use hostile_common::raw::{Raw, Recv, check_error, fetch_msg, hello};
use hostile_common::{LEASE_MS, PATIENCE, Scene, eventually};
use rmmap_core::protocol::{ErrorCode, Message, Ping, fetch_flags, map_flags};
use rmmap_mio::{Access, Client, ClientConfig};

both_transports!(
    slowloris_before_the_handshake,
    slowloris_and_silence_after_the_handshake,
    clients_that_stop_reading_while_invalidations_pile_up,
    an_owner_that_never_answers_a_recall,
);

const PAGES: u64 = 64;
const PAGE: u64 = 4096;

/// Writes `bytes` one at a time, `every` apart, until they run out, the
/// write fails (the server closed) or `stop` is set.
fn dribble(
    raw: &Raw,
    bytes: Vec<u8>,
    every: Duration,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut w = raw.stream.try_clone().unwrap();
    let flag = stop.clone();
    let t = std::thread::spawn(move || {
        for (i, b) in bytes.iter().enumerate() {
            if flag.load(Ordering::Relaxed) || w.write_all(&[*b]).is_err() {
                return i;
            }
            std::thread::sleep(every);
        }
        bytes.len()
    });
    (stop, t)
}

/// With a 1.5 s handshake timeout: a silent connection, a Hello sent one
/// byte every 250 ms (it would complete after about 8 s), and a 4096-byte
/// frame dribbled a byte every 100 ms all get `timeout`, not a Welcome.
fn slowloris_before_the_handshake(transport: &str) {
    let scene = Scene::start(transport, &["--handshake-timeout-ms", "1500"]);
    let mut silent = Raw::connect(scene.addr());
    let mut slow_hello = Raw::connect(scene.addr());
    let hello_bytes = Message::Hello(hello()).to_bytes().to_vec();
    let (_, t1) = dribble(&slow_hello, hello_bytes, Duration::from_millis(250));
    let mut big = Raw::connect(scene.addr());
    let mut frame = vec![0, 0, 16, 0, 0x01];
    frame.resize(4 + 4096, 7);
    let (_, t2) = dribble(&big, frame, Duration::from_millis(100));
    let start = Instant::now();
    for raw in [&mut silent, &mut slow_hello, &mut big] {
        raw.expect_fatal(ErrorCode::Timeout);
    }
    println!(
        "[{transport}] three slow handshakes closed with `timeout` after {:?}",
        start.elapsed()
    );
    assert!(t1.join().unwrap() < 30, "the slow Hello was completed");
    t2.join().unwrap();
    scene.bystander_progresses();
    scene.finish();
}

/// After the handshake: a frame of 1 MiB dribbled a byte every 100 ms (no
/// frame ever completes, so nothing renews the lease) and a silent session
/// are both ended about one lease later with `session_lost`; a session that
/// only pings lives on.
fn slowloris_and_silence_after_the_handshake(transport: &str) {
    let scene = Scene::start(transport, &[]);
    let (mut slow, _) = Raw::handshake(scene.addr());
    let mut frame = vec![0, 16, 0, 0, 0x10];
    frame.resize(4 + (1 << 20), 0);
    let (stop, t) = dribble(&slow, frame, Duration::from_millis(100));
    let (mut silent, _) = Raw::handshake(scene.addr());
    let (mut pinger, _) = Raw::handshake(scene.addr());
    let start = Instant::now();
    let mut nonce = 0;
    let mut ping = |p: &mut Raw| {
        nonce += 1;
        p.send(&Message::Ping(Ping { nonce }));
        match p.recv() {
            Recv::Frame(Message::Pong(x)) => assert!(x.renewed && x.nonce == nonce),
            other => panic!("the pinging session got {other:?}"),
        }
    };
    let mut ended = [None, None];
    while ended.iter().any(Option::is_none) {
        assert!(start.elapsed() < PATIENCE, "not closed: {ended:?}");
        for (i, raw) in [&mut slow, &mut silent].into_iter().enumerate() {
            if ended[i].is_none()
                && let Some(r) = raw.try_recv(Duration::from_millis(50))
            {
                match r {
                    Recv::Frame(Message::Error(e)) => {
                        check_error(&e, ErrorCode::SessionLost, true);
                        ended[i] = Some(start.elapsed());
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        ping(&mut pinger);
    }
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    assert!(matches!(slow.recv(), Recv::Closed));
    assert!(matches!(silent.recv(), Recv::Closed));
    println!(
        "[{transport}] lease {LEASE_MS} ms: dribbling session ended after {:?}, silent one after {:?}",
        ended[0].unwrap(),
        ended[1].unwrap()
    );
    // The pinging session outlives both, by more than a lease.
    let more = Instant::now();
    while more.elapsed() < Duration::from_millis(LEASE_MS + 200) {
        std::thread::sleep(Duration::from_millis(100));
        ping(&mut pinger);
    }
    scene.bystander_progresses();
    scene.finish();
}

/// A writer's client, with the defaults.
fn writer(addr: &str) -> (Client, rmmap_mio::Mapping) {
    let c = Client::connect(addr, ClientConfig::default()).expect("writer connects");
    let m = c
        .map("shared.bin", 0..PAGES * PAGE, Access::ReadWrite)
        .expect("writer maps");
    (c, m)
}

/// Two clients share every page of a file and stop reading their sockets:
/// one after pipelining fetches until the server stops reading it (its
/// output queue at the limit), one quietly. A writer then writes every
/// page, which needs both invalidated: its first write waits about one
/// lease (until their sessions end), the rest go through, the server drops
/// both connections without their reading a byte, and its memory stays
/// near one output limit.
fn clients_that_stop_reading_while_invalidations_pile_up(transport: &str) {
    let scene = Scene::start(transport, &[]);
    std::fs::write(
        scene.root.join("shared.bin"),
        vec![0u8; (PAGES * PAGE) as usize],
    )
    .unwrap();
    let pid = scene.pid();
    let baseline = probe::sockets(pid);
    let watch = MemoryWatch::start(pid);
    let mut sharers = Vec::new();
    for _ in 0..2 {
        let (mut raw, _) = Raw::handshake(scene.addr());
        let m = raw.map(1, "shared.bin", 0, 0, PAGES * PAGE);
        raw.send(&fetch_msg(2, m, 0, PAGES as u32, 0));
        assert!(matches!(raw.reply(2), Message::Pages(p) if !p.exclusive));
        sharers.push((raw, m));
    }
    // The first sharer floods fetches it never reads the answers to.
    let (flooding, m) = &sharers[0];
    let mut w = flooding.stream.try_clone().unwrap();
    let m = *m;
    let flooder = std::thread::spawn(move || {
        let mut req = 3;
        while w
            .write_all(&fetch_msg(req, m, 0, PAGES as u32, fetch_flags::WANT_DATA).to_bytes())
            .is_ok()
        {
            req += 1;
        }
        req - 3
    });
    std::thread::sleep(Duration::from_millis(300));
    let (client, mapping) = writer(scene.addr());
    let start = Instant::now();
    mapping.write(0, b"first").expect("the first write");
    let first_wait = start.elapsed();
    scene.bystander_progresses();
    for page in 1..PAGES {
        mapping
            .write(page * PAGE, format!("page {page}").as_bytes())
            .expect("a write");
    }
    mapping.sync().expect("sync");
    let all = start.elapsed();
    let closed = eventually(PATIENCE, || probe::sockets(pid) <= baseline + 1);
    assert!(
        closed,
        "the server kept connections that read nothing; log:\n{}",
        scene.server.log_text()
    );
    let fetches = flooder.join().unwrap();
    let figures = watch.stop();
    figures.print(&format!(
        "{transport}: 2 clients not reading, {fetches} fetches pipelined"
    ));
    println!(
        "[{transport}] the writer's first write waited {first_wait:?}; all {PAGES} pages written and synced after {all:?}"
    );
    figures.assert_peak_within("clients that stop reading", 48.0);
    let disk = std::fs::read(scene.root.join("shared.bin")).unwrap();
    assert_eq!(&disk[..5], b"first");
    for page in 1..PAGES {
        let want = format!("page {page}");
        let at = (page * PAGE) as usize;
        assert_eq!(&disk[at..at + want.len()], want.as_bytes());
    }
    drop(mapping);
    client.close().unwrap();
    drop(sharers);
    scene.finish();
}

/// A client takes pages exclusively, then keeps pinging but never answers
/// the recall another client's write causes: its pongs stop renewing its
/// lease, its session ends one lease later, and the writer proceeds (not
/// before: the owner could still have been serving from its copy).
fn an_owner_that_never_answers_a_recall(transport: &str) {
    let scene = Scene::start(transport, &[]);
    std::fs::write(
        scene.root.join("shared.bin"),
        vec![0u8; (PAGES * PAGE) as usize],
    )
    .unwrap();
    let (mut owner, _) = Raw::handshake(scene.addr());
    let m = owner.map(1, "shared.bin", map_flags::WRITE, 0, PAGES * PAGE);
    let flags = fetch_flags::EXCLUSIVE | fetch_flags::WANT_DATA;
    owner.send(&fetch_msg(2, m, 0, 4, flags));
    assert!(matches!(owner.reply(2), Message::Pages(p) if p.exclusive));
    // It pings every 100 ms from another thread, and reads everything here.
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let mut w = owner.stream.try_clone().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut nonce = 0;
            while !stop.load(Ordering::Relaxed) {
                nonce += 1;
                let p = Message::Ping(Ping { nonce });
                if w.write_all(&p.to_bytes()).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let addr = scene.addr().to_owned();
    let write = std::thread::spawn(move || {
        let (client, mapping) = writer(&addr);
        let start = Instant::now();
        mapping.write(8, b"the writer's").expect("the write");
        let waited = start.elapsed();
        mapping.sync().expect("sync");
        drop(mapping);
        client.close().unwrap();
        waited
    });
    let (mut recalled, mut unrenewed, mut renewed_after) = (false, 0, 0);
    let ended = loop {
        match owner.recv() {
            Recv::Frame(Message::Recall(r)) => {
                assert!(r.first_page == 0 && !r.downgrade, "{r:?}");
                recalled = true;
            }
            Recv::Frame(Message::Pong(p)) if recalled => match p.renewed {
                false => unrenewed += 1,
                true => renewed_after += 1,
            },
            Recv::Frame(Message::Pong(_)) => {}
            Recv::Frame(Message::Error(e)) => {
                check_error(&e, ErrorCode::SessionLost, true);
                break true;
            }
            Recv::Frame(other) => panic!("the owner got {other:?}"),
            Recv::Closed => break false,
        }
    };
    assert!(ended, "closed without `session_lost`");
    assert!(matches!(owner.recv(), Recv::Closed));
    stop.store(true, Ordering::Relaxed);
    pinger.join().unwrap();
    let waited = write.join().unwrap();
    println!(
        "[{transport}] the writer waited {waited:?} for an owner that ignored the recall \
         (lease {LEASE_MS} ms; {unrenewed} pongs after the recall did not renew)"
    );
    assert!(recalled && unrenewed >= 1 && renewed_after == 0);
    // Its last renewal came at most one ping (100 ms) before the recall.
    assert!(waited >= Duration::from_millis(LEASE_MS / 2), "{waited:?}");
    let disk = std::fs::read(scene.root.join("shared.bin")).unwrap();
    assert_eq!(&disk[8..20], b"the writer's");
    scene.bystander_progresses();
    scene.finish();
}
