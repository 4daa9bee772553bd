//! Floods against a real `rmmap serve` (tokio and mio), with the server's
//! memory measured (VmRSS before, at peak, after; printed with
//! `--nocapture`) and bounded: 10,000 pipelined map requests on one
//! session, 10,000 pipelined fetches from a client that never reads, 1,000
//! connections opened and left silent, more silent connections than the
//! handshake limit, and a server that runs out of file descriptors. The
//! bystander keeps working throughout.
//!
//! Linux only: the server is observed through /proc.
#![cfg(target_os = "linux")]

#[macro_use]
mod hostile_common;

use std::io::Write;
use std::time::{Duration, Instant};

use hostile_common::bystander::fresh_client_works;
use hostile_common::probe::{self, MemoryWatch};
use hostile_common::raw::{Raw, Recv, check_error, fetch_msg, hello, map_msg, reply_req};
use hostile_common::{PATIENCE, Scene, eventually, raise_own_nofile};
use rmmap_core::protocol::{ErrorCode, Hello, Message, Resume, ResumeStatus, fetch_flags};

both_transports!(
    ten_thousand_pipelined_map_requests,
    requests_past_the_inflight_limit_are_refused_not_queued,
    one_client_mapping_thousands_of_files_stalls_nobody,
    ten_thousand_pipelined_fetches_never_read,
    a_thousand_silent_connections,
    silent_connections_beyond_the_handshake_limit,
    running_out_of_file_descriptors,
);

/// Sends map requests `reqs`, pipelined 64 at a time; each request must be
/// answered exactly once. Returns how many were mapped and how many refused
/// with `too_many_mappings`.
fn map_flood(raw: &mut Raw, reqs: std::ops::RangeInclusive<u64>) -> (u64, u64) {
    // Pipelined as deep as the session allows (64 in flight): opening files
    // takes the disk, so a deeper flood also meets too_many_requests (see
    // `requests_past_the_inflight_limit_are_refused_not_queued`).
    let all: Vec<u64> = reqs.collect();
    let (mut mapped, mut refused) = (0, 0);
    for window in all.chunks(64) {
        let mut burst = Vec::new();
        for &r in window {
            let offset = (r % 16) * 4096;
            burst.extend_from_slice(&map_msg(r, b"flood.bin", 0, offset, 4096).to_bytes());
        }
        raw.stream.write_all(&burst).unwrap();
        let first = window[0];
        let mut seen = vec![false; window.len()];
        let mut answered = 0;
        while answered < window.len() {
            let m = match raw.recv() {
                Recv::Frame(m) => m,
                Recv::Closed => panic!("closed after {} replies", mapped + refused),
            };
            let Some(req) = reply_req(&m) else { continue };
            let i = (req.0 - first) as usize;
            assert!(
                !std::mem::replace(&mut seen[i], true),
                "two replies to {req}"
            );
            answered += 1;
            match m {
                Message::Mapped(_) => mapped += 1,
                Message::Error(e) => {
                    check_error(&e, ErrorCode::TooManyMappings, false);
                    refused += 1;
                }
                other => panic!("{other:?}"),
            }
        }
    }
    (mapped, refused)
}

/// 10,000 map requests pipelined on one session with `--max-mappings 1000`
/// (64 at a time, the in-flight limit): 1,000 mapped, 9,000 refused, each
/// answered once; 10,000 more are all refused, and the server's memory does
/// not grow with them.
fn ten_thousand_pipelined_map_requests(transport: &str) {
    let scene = Scene::start(
        transport,
        &["--max-mappings", "1000", "--max-inflight", "64"],
    );
    std::fs::write(scene.root.join("flood.bin"), vec![1u8; 16 * 4096]).unwrap();
    let watch = MemoryWatch::start(scene.pid());
    let (mut raw, _) = Raw::handshake(scene.addr());
    let start = Instant::now();
    assert_eq!(map_flood(&mut raw, 1..=10_000), (1000, 9000));
    let first = watch.figures();
    scene.bystander_progresses();
    assert_eq!(map_flood(&mut raw, 10_001..=20_000), (0, 10_000));
    let elapsed = start.elapsed();
    raw.send(&Message::Bye);
    assert!(raw.until_closed().is_empty());
    let figures = watch.stop();
    figures.print(&format!("{transport}: 2 x 10,000 pipelined maps"));
    println!("[{transport}] 20,000 map requests answered in {elapsed:?}");
    figures.assert_peak_within("10,000 pipelined maps", 64.0);
    // The second 10,000 found every limit reached: nothing more to hold.
    let second_growth = figures.peak_rss.saturating_sub(first.peak_rss);
    assert!(
        second_growth < 8 * 1024,
        "the second flood grew the server by {second_growth} KiB: {first:?} {figures:?}"
    );
    scene.finish();
}

/// 10,000 map requests in one burst on a session allowed 64 in flight: the
/// server takes what it can and refuses the rest with `too_many_requests`
/// (or `too_many_mappings` past the mapping limit), answering each request
/// exactly once, and never maps more than the limit.
fn requests_past_the_inflight_limit_are_refused_not_queued(transport: &str) {
    let scene = Scene::start(
        transport,
        &["--max-mappings", "1000", "--max-inflight", "64"],
    );
    std::fs::write(scene.root.join("flood.bin"), vec![1u8; 16 * 4096]).unwrap();
    let (mut raw, _) = Raw::handshake(scene.addr());
    let mut burst = Vec::new();
    for r in 1..=10_000u64 {
        burst.extend_from_slice(&map_msg(r, b"flood.bin", 0, (r % 16) * 4096, 4096).to_bytes());
    }
    let mut w = raw.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&burst));
    let mut seen = vec![false; 10_000];
    let (mut mapped, mut busy) = (0, 0);
    for _ in 0..10_000 {
        let m = loop {
            match raw.recv() {
                Recv::Frame(m) if reply_req(&m).is_some() => break m,
                Recv::Frame(_) => continue,
                Recv::Closed => panic!("closed after {mapped} maps"),
            }
        };
        let req = reply_req(&m).unwrap();
        assert!(
            !std::mem::replace(&mut seen[req.0 as usize - 1], true),
            "two replies to {req}"
        );
        match m {
            Message::Mapped(_) => mapped += 1,
            Message::Error(e) if e.code == ErrorCode::TooManyRequests => {
                check_error(&e, ErrorCode::TooManyRequests, false);
                busy += 1;
            }
            Message::Error(e) => check_error(&e, ErrorCode::TooManyMappings, false),
            other => panic!("{other:?}"),
        }
    }
    writer.join().unwrap().unwrap();
    assert!(mapped <= 1000, "{mapped} mappings past the limit of 1000");
    assert!(mapped >= 64, "only {mapped} maps went through");
    assert!(busy > 0, "a flood deeper than 64 meets the in-flight limit");
    raw.send(&Message::Bye);
    assert!(raw.until_closed().is_empty());
    scene.bystander_progresses();
    scene.finish();
}

/// Open files are a cache, not a limit one client can exhaust: with room
/// for 64 open files, one client maps 4,200 distinct files (the default limit
/// of 4,096 once locked everyone else out with `busy`), then reads the first
/// and last of them (closed, then opened again), while the bystander keeps
/// working.
fn one_client_mapping_thousands_of_files_stalls_nobody(transport: &str) {
    let scene = Scene::start(
        transport,
        &["--max-open-files", "64", "--max-mappings", "5000"],
    );
    let dir = scene.root.join("many");
    std::fs::create_dir(&dir).unwrap();
    const FILES: u64 = 4200;
    for k in 0..FILES {
        std::fs::write(dir.join(k.to_string()), k.to_le_bytes()).unwrap();
    }
    let (mut raw, _) = Raw::handshake(scene.addr());
    let mut mappings = Vec::new();
    let all: Vec<u64> = (0..FILES).collect();
    for window in all.chunks(64) {
        for &k in window {
            let path = format!("many/{k}");
            raw.send(&map_msg(k + 1, path.as_bytes(), 0, 0, 8));
        }
        // Opening files takes the disk: replies come in any order.
        let mut replies = std::collections::BTreeMap::new();
        while replies.len() < window.len() {
            match raw.recv() {
                Recv::Frame(m) => {
                    if let Some(r) = reply_req(&m) {
                        replies.insert(r.0, m);
                    }
                }
                Recv::Closed => panic!("closed after {} maps", mappings.len()),
            }
        }
        for &k in window {
            match replies.remove(&(k + 1)) {
                Some(Message::Mapped(m)) => mappings.push(m.mapping),
                other => panic!("map many/{k}: {other:?}"),
            }
        }
    }
    scene.bystander_progresses();
    for (req, k) in [(FILES + 1, 0u64), (FILES + 2, FILES - 1), (FILES + 3, 1)] {
        raw.send(&fetch_msg(
            req,
            mappings[k as usize],
            0,
            1,
            fetch_flags::WANT_DATA,
        ));
        match raw.reply(req) {
            Message::Pages(p) => {
                let page = p.pages[0].data.as_ref().expect("asked for data");
                assert_eq!(&page[..8], &k.to_le_bytes(), "many/{k}");
            }
            other => panic!("fetch many/{k}: {other:?}"),
        }
    }
    raw.send(&Message::Bye);
    assert!(raw.until_closed().is_empty());
    scene.finish();
}

/// A client pipelines 10,000 fetches of 64 pages (2.6 GB of replies) and
/// never reads one: the server stops reading it at its output limit, then
/// drops the connection once it has taken no bytes for the write timeout
/// (1 s, well inside its 10 s lease: the session lives on and can be
/// resumed). The server's memory stays near the output limit (8 MiB).
fn ten_thousand_pipelined_fetches_never_read(transport: &str) {
    let args = ["--lease-ms", "10000", "--write-timeout-ms", "1000"];
    let scene = Scene::start(transport, &args);
    std::fs::write(scene.root.join("big.bin"), vec![9u8; 64 * 4096]).unwrap();
    let baseline = probe::sockets(scene.pid());
    let watch = MemoryWatch::start(scene.pid());
    let (mut raw, welcome) = Raw::handshake(scene.addr());
    let mapping = raw.map(1, "big.bin", 0, 0, 64 * 4096);
    let mut w = raw.stream.try_clone().unwrap();
    let flooder = std::thread::spawn(move || {
        for req in 2..10_002 {
            let f = fetch_msg(req, mapping, 0, 64, fetch_flags::WANT_DATA);
            if w.write_all(&f.to_bytes()).is_err() {
                return req - 2;
            }
        }
        10_000
    });
    // The server closes the connection without our reading a byte.
    let closed = eventually(PATIENCE, || probe::sockets(scene.pid()) < baseline + 1);
    assert!(
        closed,
        "the server kept the connection of a client that reads nothing; log:\n{}",
        scene.server.log_text()
    );
    scene.bystander_progresses();
    let sent = flooder.join().unwrap();
    let figures = watch.stop();
    figures.print(&format!(
        "{transport}: {sent} pipelined fetches, never read"
    ));
    figures.assert_peak_within("pipelined fetches never read", 48.0);
    drop(raw);
    // The write timeout closed the connection, not the end of the session.
    let mut again = Raw::connect(scene.addr());
    again.send(&Message::Hello(Hello {
        resume: Some(Resume {
            session: welcome.session,
            token: welcome.token,
            epoch: welcome.epoch,
        }),
        ..hello()
    }));
    match again.recv() {
        Recv::Frame(Message::Welcome(w)) => assert_eq!(w.status, ResumeStatus::Resumed),
        other => panic!("resuming after the write timeout: {other:?}"),
    }
    again.send(&Message::Bye);
    assert!(scene.server.log_text().contains("took no bytes"));
    scene.finish();
}

/// 1,000 connections that never send a byte: all accepted, the bystander
/// and a new client carry on beside them, and the handshake timeout closes
/// every one with `timeout`.
fn a_thousand_silent_connections(transport: &str) {
    raise_own_nofile();
    let scene = Scene::start(transport, &["--handshake-timeout-ms", "5000"]);
    let pid = scene.pid();
    let baseline = probe::sockets(pid);
    let watch = MemoryWatch::start(pid);
    let silent: Vec<Raw> = (0..1000).map(|_| Raw::connect(scene.addr())).collect();
    // How many the server holds at once (it accepts them all well within the
    // handshake timeout unless the machine is very busy; not asserted).
    let mut most = 0;
    eventually(Duration::from_secs(3), || {
        most = most.max(probe::sockets(pid).saturating_sub(baseline));
        most >= silent.len()
    });
    let with_all = watch.figures();
    scene.bystander_progresses();
    fresh_client_works(scene.addr(), "during.bin").expect("a client during the flood");
    // Every one was accepted, then closed by the handshake timeout.
    let mut timed_out = 0;
    for mut raw in silent {
        raw.expect_fatal(ErrorCode::Timeout);
        timed_out += 1;
    }
    let released = eventually(PATIENCE, || probe::sockets(pid) <= baseline);
    assert!(released, "the server still holds the silent connections");
    let figures = watch.stop();
    figures.print(&format!("{transport}: 1,000 silent connections"));
    println!(
        "[{transport}] {timed_out} silent connections closed with `timeout`; \
         {most} open at once, VmRSS then {:.1} MiB",
        with_all.after_rss as f64 / 1024.0
    );
    figures.assert_peak_within("1,000 silent connections", 64.0);
    scene.finish();
}

/// 300 silent connections with `--max-handshaking 100`: those beyond the
/// limit are closed at once with `busy`, the rest at the handshake timeout.
fn silent_connections_beyond_the_handshake_limit(transport: &str) {
    let scene = Scene::start(
        transport,
        &["--max-handshaking", "100", "--handshake-timeout-ms", "3000"],
    );
    let silent: Vec<Raw> = (0..300).map(|_| Raw::connect(scene.addr())).collect();
    scene.bystander_progresses();
    let (mut busy, mut timeout) = (0, 0);
    for mut raw in silent {
        let frames = raw.until_closed();
        match &frames[..] {
            [Message::Error(e)] if e.code == ErrorCode::Busy => busy += 1,
            [Message::Error(e)] if e.code == ErrorCode::Timeout => timeout += 1,
            other => panic!("{other:?}"),
        }
    }
    println!("[{transport}] 300 silent connections: {busy} busy, {timeout} timed out");
    assert_eq!(busy + timeout, 300);
    assert!(
        busy >= 150 && timeout >= 50,
        "{busy} busy, {timeout} timeout"
    );
    scene.finish();
}

/// A server whose open-file limit is 64 meets 150 connections: `accept`
/// fails with EMFILE, which it logs once and backs off from (no spinning),
/// the bystander (already connected) carries on, and once the connections
/// go, new clients get in again.
fn running_out_of_file_descriptors(transport: &str) {
    let scene = Scene::start_with(transport, &[], Some(64));
    let pid = scene.pid();
    let flood: Vec<Raw> = (0..150).map(|_| Raw::connect(scene.addr())).collect();
    let failing = eventually(PATIENCE, || {
        scene.server.log_text().contains("accept failed")
    });
    assert!(
        failing,
        "no accept failure; log:\n{}",
        scene.server.log_text()
    );
    let cpu_before = probe::cpu_ticks(pid);
    let window = Instant::now();
    scene.bystander_progresses();
    std::thread::sleep(Duration::from_secs(2).saturating_sub(window.elapsed()));
    let used = probe::cpu_ticks(pid) - cpu_before;
    let wall = window.elapsed().as_secs_f64() * 100.0;
    println!("[{transport}] out of descriptors: {used} CPU ticks in {wall:.0} wall ticks");
    assert!(
        (used as f64) < wall / 2.0,
        "the server spun while out of descriptors: {used} CPU ticks in {wall:.0}"
    );
    drop(flood);
    let back = eventually(PATIENCE, || {
        fresh_client_works(scene.addr(), "after.bin").is_ok()
    });
    assert!(back, "no client got in after the flood");
    // Logged when a run of failures starts and ends, not at every retry
    // (a run may end and start again as the flood's sockets close).
    let log = scene.server.log_text();
    let warned = log.matches("accept failed").count();
    let runs = log.matches("accepting connections again").count();
    println!("[{transport}] accept failures logged {warned} times");
    assert!(runs >= 1 && warned <= runs + 1 && warned <= 20, "{log}");
    scene.finish();
}
