//! Hostile clients that send garbage to a real `rmmap serve` (tokio and
//! mio): random bytes, truncated frames, a 4 GiB length prefix, unknown
//! message types. Each connection ends with a fatal error naming what was
//! wrong (or, for a frame cut short by the client's close, just ends), the
//! server's memory does not follow the length prefixes, and the bystander
//! beside the attack keeps its data.

#[macro_use]
mod hostile_common;

use bytes::{BufMut, BytesMut};
use hostile_common::probe::MemoryWatch;
use hostile_common::raw::{Raw, Recv, hello, map_msg};
use hostile_common::{Rng, Scene};
use rmmap_core::protocol::{ErrorCode, Message};

both_transports!(
    random_bytes,
    truncated_frames,
    a_length_prefix_of_4_gib,
    unknown_message_types,
);

/// Error codes a server may answer garbage with.
const GARBAGE_CODES: [ErrorCode; 4] = [
    ErrorCode::Malformed,
    ErrorCode::FrameTooLarge,
    ErrorCode::Protocol,
    ErrorCode::UnsupportedVersion,
];

/// Sends `junk`, closes our side, and checks that the server ended the
/// connection: with at most one frame, a fatal error of a garbage code.
fn garbage_ends_the_connection(raw: &mut Raw, junk: &[u8]) -> Option<ErrorCode> {
    let _ = raw.send_raw(junk);
    raw.shutdown_write();
    let frames = raw.until_closed();
    match &frames[..] {
        // The junk ended inside a frame: the close is the end.
        [] => None,
        [Message::Error(e)] => {
            assert!(e.fatal, "{e:?}");
            assert!(GARBAGE_CODES.contains(&e.code), "{e:?}");
            assert!(!e.message.is_empty());
            Some(e.code)
        }
        other => panic!("garbage got {other:?}"),
    }
}

/// 60 connections of random bytes before the handshake and 30 after it:
/// fully random, and random behind a plausible small length prefix.
fn random_bytes(transport: &str) {
    let scene = Scene::start(transport, &[]);
    let mut rng = Rng::new(0x5eed);
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..90 {
        let mut raw = if i < 60 {
            Raw::connect(scene.addr())
        } else {
            Raw::handshake(scene.addr()).0
        };
        let mut junk = BytesMut::new();
        if i % 2 == 1 {
            let len = 1 + rng.below(64) as u32;
            junk.put_u32(len);
        }
        let n = 1 + rng.below(8192) as usize;
        junk.extend_from_slice(&rng.bytes(n));
        let code = garbage_ends_the_connection(&mut raw, &junk);
        let key = code.map_or("closed".to_owned(), |c| c.kind().to_owned());
        *seen.entry(key).or_default() += 1;
        if i == 45 {
            scene.bystander_progresses();
        }
    }
    println!("[{transport}] 90 connections of random bytes ended: {seen:?}");
    scene.finish();
}

/// Frames cut short by the client's close (the connection just ends), and
/// frames whose length prefix leaves their fields short or long (malformed).
fn truncated_frames(transport: &str) {
    let scene = Scene::start(transport, &[]);
    let hello_frame = Message::Hello(hello()).to_bytes();
    let map_frame = map_msg(1, b"bystander.bin", 0, 0, 10).to_bytes();
    // Cut short by the close, at every length.
    for cut in 1..hello_frame.len() {
        let mut raw = Raw::connect(scene.addr());
        assert_eq!(
            garbage_ends_the_connection(&mut raw, &hello_frame[..cut]),
            None
        );
    }
    for cut in (1..map_frame.len()).step_by(3) {
        let (mut raw, _) = Raw::handshake(scene.addr());
        assert_eq!(
            garbage_ends_the_connection(&mut raw, &map_frame[..cut]),
            None
        );
    }
    scene.bystander_progresses();
    // Whole frames whose bodies are too short or too long for their type.
    for (frame, handshake) in [(&hello_frame, false), (&map_frame, true)] {
        for delta in [-5i64, -1, 1, 7] {
            let mut raw = if handshake {
                Raw::handshake(scene.addr()).0
            } else {
                Raw::connect(scene.addr())
            };
            let body_len = frame.len() as i64 - 4 + delta;
            let mut f = BytesMut::new();
            f.put_u32(body_len as u32);
            let keep = (body_len as usize).min(frame.len() - 4);
            f.extend_from_slice(&frame[4..4 + keep]);
            f.resize(4 + body_len as usize, 0);
            raw.send_raw(&f).unwrap();
            let msg = raw.expect_fatal(ErrorCode::Malformed);
            assert!(msg.contains("malformed"), "{msg}");
        }
    }
    scene.finish();
}

/// A length prefix of 4 GiB (and just over each limit) is refused at once,
/// before any body arrives, and allocates nothing.
fn a_length_prefix_of_4_gib(transport: &str) {
    let scene = Scene::start(transport, &[]);
    let watch = MemoryWatch::start(scene.pid());
    for _ in 0..20 {
        let mut raw = Raw::connect(scene.addr());
        raw.send_raw(&[0xff, 0xff, 0xff, 0xff]).unwrap();
        let msg = raw.expect_fatal(ErrorCode::FrameTooLarge);
        assert!(msg.contains("4294967295"), "{msg}");

        let (mut raw, _) = Raw::handshake(scene.addr());
        raw.send_raw(&[0xff, 0xff, 0xff, 0xff, 0x10]).unwrap();
        raw.expect_fatal(ErrorCode::FrameTooLarge);
    }
    // Just over the limits: 4096 before the handshake, max_frame after.
    let mut raw = Raw::connect(scene.addr());
    raw.send_raw(&4097u32.to_be_bytes()).unwrap();
    assert!(raw.expect_fatal(ErrorCode::FrameTooLarge).contains("4096"));
    let (mut raw, welcome) = Raw::handshake(scene.addr());
    raw.send_raw(&(welcome.max_frame + 1).to_be_bytes())
        .unwrap();
    raw.expect_fatal(ErrorCode::FrameTooLarge);
    // Exactly at the limit is fine: the server waits for the body.
    let (mut raw, welcome) = Raw::handshake(scene.addr());
    raw.send_raw(&welcome.max_frame.to_be_bytes()).unwrap();
    assert!(
        raw.try_recv(std::time::Duration::from_millis(300))
            .is_none()
    );
    let figures = watch.stop();
    figures.print(&format!("{transport}: 4 GiB length prefixes"));
    figures.assert_peak_within("4 GiB length prefixes", 32.0);
    scene.finish();
}

/// Type bytes no version of the protocol defines, before and after the
/// handshake, and a frame of length zero: `malformed`, named.
fn unknown_message_types(transport: &str) {
    let scene = Scene::start(transport, &[]);
    let kinds = [
        0x00u8, 0x05, 0x0f, 0x1a, 0x1f, 0x22, 0x7f, 0x80, 0x86, 0x95, 0x99, 0xa2, 0xff,
    ];
    for kind in kinds {
        for handshake in [false, true] {
            let mut raw = if handshake {
                Raw::handshake(scene.addr()).0
            } else {
                Raw::connect(scene.addr())
            };
            raw.send_raw(&[0, 0, 0, 9, kind, 1, 2, 3, 4, 5, 6, 7, 8])
                .unwrap();
            let msg = raw.expect_fatal(ErrorCode::Malformed);
            assert!(
                msg.contains(&format!("unknown message type 0x{kind:02x}")),
                "{msg}"
            );
        }
    }
    let mut raw = Raw::connect(scene.addr());
    raw.send_raw(&[0, 0, 0, 0]).unwrap();
    assert!(raw.expect_fatal(ErrorCode::Malformed).contains("empty"));
    // Nothing above disturbed a session that follows the rules.
    let (mut raw, _) = Raw::handshake(scene.addr());
    raw.send(&Message::Ping(rmmap_core::protocol::Ping { nonce: 9 }));
    assert!(matches!(raw.recv(), Recv::Frame(Message::Pong(p)) if p.nonce == 9));
    scene.finish();
}
