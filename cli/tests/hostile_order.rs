//! Hostile clients that send well-formed frames out of protocol order to a
//! real `rmmap serve` (tokio and mio): requests before the handshake,
//! acknowledgements of revocations never sent, the server's own messages,
//! request number 0, a second handshake, guessed resume tokens. Each gets a
//! fatal error naming the rule it broke, only its own connection closes, a
//! session that broke the rules cannot be resumed, and the bystander keeps
//! its data.

#[macro_use]
mod hostile_common;

use bytes::Bytes;
use hostile_common::raw::{Raw, Recv, check_error, hello, map_msg};
use hostile_common::{Rng, Scene};
use rmmap_core::protocol::{
    Atomic, AtomicOp, Authenticate, ErrorCode, ErrorMsg, Fetch, FileHandle, Hello, Invalidate,
    InvalidateAck, Message, PagePatch, Pages, Ping, Pong, Recall, RecallAck, ReqId, Resume,
    ResumeStatus, RevId, SessionId, SetLen, Sync, Welcome, WireMappingId, WriteBack,
};

both_transports!(
    requests_before_the_handshake,
    acknowledgements_of_revocations_never_sent,
    server_messages_sent_by_a_client,
    requests_numbered_zero,
    a_second_handshake,
    guessed_resume_tokens_and_doomed_sessions,
);

fn patch(page: u64, data: &'static [u8]) -> PagePatch {
    PagePatch {
        page,
        offset: 0,
        data: Bytes::from_static(data),
    }
}

fn write_back(req: u64) -> Message {
    Message::WriteBack(WriteBack {
        req: ReqId(req),
        mapping: WireMappingId(1),
        patches: vec![patch(0, b"pwned")],
    })
}

fn welcome() -> Message {
    Message::Welcome(Welcome {
        version: 1,
        status: ResumeStatus::New,
        session: SessionId(1),
        token: [0; 16],
        epoch: 1,
        page_size: 4096,
        lease_ms: 1000,
        max_frame: 1 << 20,
        max_pages_per_request: 16,
        max_inflight: 16,
        max_mappings: 16,
        rights: 1,
        rev_acked: RevId(0),
        server_proof: [0; 32],
    })
}

/// Frames only a server sends.
fn server_messages() -> Vec<Message> {
    vec![
        welcome(),
        Message::Pong(Pong {
            nonce: 1,
            renewed: true,
            rev_acked: RevId(0),
        }),
        Message::Error(ErrorMsg {
            req: ReqId(0),
            code: ErrorCode::Busy,
            fatal: false,
            message: Bytes::from_static(b"hello there"),
        }),
        Message::Pages(Pages {
            req: ReqId(1),
            file: FileHandle(1),
            first_page: 0,
            exclusive: true,
            pages: vec![],
        }),
        Message::Invalidate(Invalidate {
            rev: RevId(1),
            file: FileHandle(1),
            first_page: 0,
            count: 1,
        }),
        Message::Recall(Recall {
            rev: RevId(1),
            file: FileHandle(1),
            first_page: 0,
            count: 1,
            downgrade: false,
        }),
    ]
}

/// A write (and every other request) as the first frame: `protocol`,
/// "expected Hello", and nothing is written anywhere.
fn requests_before_the_handshake(transport: &str) {
    let scene = Scene::start(transport, &[]);
    let firsts = [
        write_back(1),
        map_msg(1, b"bystander.bin", 1, 0, 10),
        Message::Sync(Sync {
            req: ReqId(1),
            mapping: WireMappingId(1),
        }),
        Message::Ping(Ping { nonce: 1 }),
        Message::Bye,
        Message::InvalidateAck(InvalidateAck { rev: RevId(1) }),
        Message::RecallAck(RecallAck {
            rev: RevId(1),
            patches: vec![patch(0, b"pwned")],
        }),
        Message::Authenticate(Authenticate { proof: [0; 32] }),
    ];
    for m in &firsts {
        let mut raw = Raw::connect(scene.addr());
        raw.send(m);
        let msg = raw.expect_fatal(ErrorCode::Protocol);
        assert!(msg.contains("expected Hello"), "{}: {msg}", m.name());
    }
    scene.bystander_progresses();
    scene.finish();
}

/// `InvalidateAck` and `RecallAck` (with data) for revocations the server
/// never sent: `protocol`, and the data goes nowhere.
fn acknowledgements_of_revocations_never_sent(transport: &str) {
    let scene = Scene::start(transport, &[]);
    for rev in [1, 2, u64::MAX] {
        let (mut raw, _) = Raw::handshake(scene.addr());
        raw.send(&Message::InvalidateAck(InvalidateAck { rev: RevId(rev) }));
        let msg = raw.expect_fatal(ErrorCode::Protocol);
        assert!(msg.contains("never sent"), "{msg}");

        let (mut raw, _) = Raw::handshake(scene.addr());
        raw.map(1, "bystander.bin", 1, 0, 4096);
        raw.send(&Message::RecallAck(RecallAck {
            rev: RevId(rev),
            patches: vec![patch(0, b"pwned")],
        }));
        assert!(raw.expect_fatal(ErrorCode::Protocol).contains("never sent"));
    }
    // Revocation 0 is never sent either.
    let (mut raw, _) = Raw::handshake(scene.addr());
    raw.send(&Message::InvalidateAck(InvalidateAck { rev: RevId(0) }));
    raw.expect_fatal(ErrorCode::Protocol);
    scene.finish();
}

/// The server's own messages from a client, before and after the
/// handshake: `protocol`.
fn server_messages_sent_by_a_client(transport: &str) {
    let scene = Scene::start(transport, &[]);
    for m in server_messages() {
        let mut raw = Raw::connect(scene.addr());
        raw.send(&m);
        let msg = raw.expect_fatal(ErrorCode::Protocol);
        assert!(msg.contains(m.name()), "{msg}");

        let (mut raw, _) = Raw::handshake(scene.addr());
        raw.send(&m);
        let msg = raw.expect_fatal(ErrorCode::Protocol);
        assert!(msg.contains("not a message a client may send"), "{msg}");
    }
    scene.finish();
}

/// Every kind of request with number 0 (reserved): `protocol`.
fn requests_numbered_zero(transport: &str) {
    let scene = Scene::start(transport, &[]);
    let zero = ReqId(0);
    let m = WireMappingId(1);
    let requests = [
        map_msg(0, b"bystander.bin", 0, 0, 10),
        Message::Fetch(Fetch {
            req: zero,
            mapping: m,
            first_page: 0,
            count: 1,
            flags: 0,
        }),
        write_back(0),
        Message::Sync(Sync {
            req: zero,
            mapping: m,
        }),
        Message::SetLen(SetLen {
            req: zero,
            create: true,
            len: 4096,
            path: Bytes::from_static(b"zero.bin"),
        }),
        Message::Atomic(Atomic {
            req: zero,
            mapping: m,
            offset: 0,
            op: AtomicOp::Swap(0x70776e6564),
        }),
    ];
    for r in &requests {
        let (mut raw, _) = Raw::handshake(scene.addr());
        raw.map(1, "bystander.bin", 1, 0, 4096);
        raw.send(r);
        let msg = raw.expect_fatal(ErrorCode::Protocol);
        assert!(msg.contains("request number 0"), "{}: {msg}", r.name());
    }
    assert!(!scene.root.join("zero.bin").exists());
    scene.finish();
}

/// A second Hello after the handshake, an Authenticate nobody asked for, a
/// Hello of another version, a client name over 256 bytes.
fn a_second_handshake(transport: &str) {
    let scene = Scene::start(transport, &[]);
    let (mut raw, _) = Raw::handshake(scene.addr());
    raw.send(&Message::Hello(hello()));
    assert!(raw.expect_fatal(ErrorCode::Protocol).contains("Hello"));

    let (mut raw, _) = Raw::handshake(scene.addr());
    raw.send(&Message::Authenticate(Authenticate { proof: [1; 32] }));
    raw.expect_fatal(ErrorCode::Protocol);

    let mut raw = Raw::connect(scene.addr());
    raw.send(&Message::Hello(Hello {
        version: 2,
        ..hello()
    }));
    raw.expect_fatal(ErrorCode::UnsupportedVersion);

    let mut raw = Raw::connect(scene.addr());
    raw.send(&Message::Hello(Hello {
        client_name: Bytes::from(vec![b'n'; 300]),
        ..hello()
    }));
    assert!(raw.expect_fatal(ErrorCode::Malformed).contains("256"));
    scene.finish();
}

/// Resuming sessions with guessed tokens (the bystander's among them) is
/// denied and leaves them alone; a session whose connection broke the
/// protocol cannot be resumed even with its own token.
fn guessed_resume_tokens_and_doomed_sessions(transport: &str) {
    let scene = Scene::start(transport, &[]);
    let (mut probe, w) = Raw::handshake(scene.addr());
    let mut rng = Rng::new(42);
    let mut denied = 0;
    for session in 1..=w.session.0 + 2 {
        let mut token = [0u8; 16];
        token.copy_from_slice(&rng.bytes(16));
        let mut raw = Raw::connect(scene.addr());
        raw.send(&Message::Hello(Hello {
            resume: Some(Resume {
                session: SessionId(session),
                token,
                epoch: w.epoch,
            }),
            ..hello()
        }));
        match raw.recv() {
            Recv::Frame(Message::Error(e)) => {
                check_error(&e, ErrorCode::Denied, true);
                denied += 1;
            }
            Recv::Frame(Message::Welcome(x)) => {
                assert_eq!(x.status, ResumeStatus::Expired, "session {session}")
            }
            other => panic!("resume of {session}: {other:?}"),
        }
    }
    // The bystander's session and our probe's, at least.
    assert!(denied >= 2, "{denied}");
    // The probe's connection was left alone.
    probe.send(&Message::Ping(Ping { nonce: 5 }));
    assert!(matches!(probe.recv(), Recv::Frame(Message::Pong(p)) if p.nonce == 5));
    // Another epoch: a new session, told the server restarted.
    let mut raw = Raw::connect(scene.addr());
    raw.send(&Message::Hello(Hello {
        resume: Some(Resume {
            session: w.session,
            token: w.token,
            epoch: w.epoch ^ 2,
        }),
        ..hello()
    }));
    match raw.recv() {
        Recv::Frame(Message::Welcome(x)) => assert_eq!(x.status, ResumeStatus::ServerRestarted),
        other => panic!("{other:?}"),
    }
    // The probe breaks the protocol: its session is doomed.
    probe.send(&Message::InvalidateAck(InvalidateAck { rev: RevId(9) }));
    probe.expect_fatal(ErrorCode::Protocol);
    let mut raw = Raw::connect(scene.addr());
    raw.send(&Message::Hello(Hello {
        resume: Some(Resume {
            session: w.session,
            token: w.token,
            epoch: w.epoch,
        }),
        ..hello()
    }));
    match raw.recv() {
        Recv::Frame(Message::Welcome(x)) => {
            assert_eq!(x.status, ResumeStatus::Expired);
            assert_ne!(x.session, w.session);
        }
        other => panic!("{other:?}"),
    }
    scene.bystander_progresses();
    scene.finish();
}
