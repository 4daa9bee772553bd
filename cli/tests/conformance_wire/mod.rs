//! The server against docs/PROTOCOL.md, frame by frame: what the text says
//! about each corrected rule, checked with hand-made frames over a raw
//! socket (no rmmap client involved), against `rmmap serve` with each
//! transport. Test names are `wire::<case>::raw_client_<server>_server`.

use std::time::Duration;

use bytes::Bytes;
use rmmap_core::protocol::{
    Atomic, AtomicOp, ErrorCode, HARD_MAX_FRAME, Hello, Mapped, Message, PagePatch, Pages, Pong,
    Recall, RecallAck, Release, ReqId, ResumeStatus, RevId, Welcome, WireMappingId, fetch_flags,
    kind, map_flags,
};

use super::common::{Serve, root};
use super::hostile_common::raw::{
    Raw, Recv, check_error, fetch_msg, hello, map_msg, reply_req, resume_hello,
};

const PAGE: usize = 4096;

/// `mod <case> { #[test] fn raw_client_tokio_server(); ... mio ... }`.
macro_rules! wire {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[test]
            fn raw_client_tokio_server() {
                super::super::within_raw(super::$case, "tokio");
            }

            #[test]
            fn raw_client_mio_server() {
                super::super::within_raw(super::$case, "mio");
            }
        }
    )*};
}

wire!(
    pages_page_len_is_the_page_size_when_a_page_has_data_and_0_otherwise,
    a_copy_of_a_request_is_answered_once_per_connection_and_again_after_a_resume,
    an_atomic_outside_the_grammar_is_malformed_and_ends_the_session,
    a_server_message_from_a_client_is_a_protocol_violation_in_every_state,
    hello_limits_names_creation_pipelining_and_bye_behave_as_written,
    recalled_data_outside_the_recalled_pages_ends_the_session_unapplied,
    a_refresh_leaves_out_the_pages_whose_digest_matches,
);

/// `rmmap serve` over a fresh root holding `f` (two pages of a known
/// pattern), with a short lease and no grace.
fn serve(transport: &str, lease_ms: &str) -> (tempfile::TempDir, std::path::PathBuf, Serve) {
    let (dir, root) = root();
    std::fs::write(root.join("f"), pattern(2 * PAGE)).unwrap();
    let args = [
        "--transport",
        transport,
        "--lease-ms",
        lease_ms,
        "--restart-grace-ms",
        "0",
    ];
    let server = Serve::start(&root, "127.0.0.1:0", &args);
    (dir, root, server)
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// The reply to `req`, which must be `Mapped`.
fn mapped(raw: &mut Raw, req: u64) -> Mapped {
    match raw.reply(req) {
        Message::Mapped(m) => m,
        other => panic!("map {req}: {other:?}"),
    }
}

/// The reply to `req`, pinging every lease / 5 meanwhile so that a wait of
/// more than a lease (for another session's lease to run out) does not
/// end this session too.
fn reply_keeping_lease(raw: &mut Raw, req: u64, lease: Duration) -> Message {
    let mut nonce = 1000;
    loop {
        match raw.try_recv(lease / 5) {
            Some(Recv::Frame(m)) if reply_req(&m) == Some(ReqId(req)) => return m,
            Some(Recv::Frame(Message::Error(e))) if e.fatal => panic!("waiting for {req}: {e:?}"),
            Some(Recv::Frame(_)) => {}
            Some(Recv::Closed) => panic!("closed while waiting for {req}"),
            None => {
                nonce += 1;
                raw.send(&Message::Ping(rmmap_core::protocol::Ping { nonce }));
            }
        }
    }
}

/// The `Welcome` that answers a `Hello` on a fresh connection.
fn welcome(raw: &mut Raw) -> Welcome {
    match raw.recv() {
        Recv::Frame(Message::Welcome(w)) => w,
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// A `Pages` frame read field by field from its bytes, as an independent
/// implementation of section 10 would: `(req, has_data per page, page_len)`.
/// Checks that the frame is exactly as long as those fields say.
fn pages_on_the_wire(frame: &[u8]) -> (u64, Vec<bool>, u32) {
    let be = |at: usize, n: usize| {
        frame[at..at + n]
            .iter()
            .fold(0u64, |v, b| (v << 8) | u64::from(*b))
    };
    assert_eq!(frame[0], kind::PAGES, "not a Pages frame: {frame:?}");
    let req = be(1, 8);
    let n = be(22, 4) as usize;
    let has: Vec<bool> = (0..n).map(|i| frame[26 + 9 * i + 8] == 1).collect();
    let at = 26 + 9 * n;
    let page_len = be(at, 4) as u32;
    let with_data = has.iter().filter(|h| **h).count();
    assert_eq!(
        frame.len(),
        at + 4 + with_data * page_len as usize,
        "the frame is as long as its fields"
    );
    (req, has, page_len)
}

/// Sends a fetch and reads its `Pages` reply off the wire.
fn fetch_on_the_wire(
    raw: &mut Raw,
    req: u64,
    m: WireMappingId,
    first: u64,
    count: u32,
    flags: u8,
) -> (Vec<bool>, u32) {
    raw.send(&fetch_msg(req, m, first, count, flags));
    let frame = raw.recv_bytes().expect("a reply");
    let (got, has, page_len) = pages_on_the_wire(&frame);
    assert_eq!(got, req);
    assert_eq!(has.len(), count as usize, "n is the request's count");
    (has, page_len)
}

/// Section 10: `page_len` is the page size when a page carries data, 0 when
/// none does (an OVERWRITE fetch, a re-fetch of held pages).
fn pages_page_len_is_the_page_size_when_a_page_has_data_and_0_otherwise(transport: &str) {
    let (_dir, _root, server) = serve(transport, "2000");
    let (mut raw, w) = Raw::handshake(&server.addr);
    let ps = w.page_size;
    raw.send(&map_msg(1, b"f", map_flags::WRITE, 0, 2 * PAGE as u64));
    let m = mapped(&mut raw, 1);
    // Pages the session does not hold: data, page_len = the page size.
    let (has, len) = fetch_on_the_wire(&mut raw, 2, m.mapping, 0, 2, 0);
    assert_eq!((has, len), (vec![true, true], ps));
    // The same pages again, held: no data, page_len = 0.
    let (has, len) = fetch_on_the_wire(&mut raw, 3, m.mapping, 0, 2, 0);
    assert_eq!((has, len), (vec![false, false], 0));
    // WANT_DATA: data even where held.
    let (has, len) = fetch_on_the_wire(&mut raw, 4, m.mapping, 0, 1, fetch_flags::WANT_DATA);
    assert_eq!((has, len), (vec![true], ps));
    // One page dropped, one held: data for the dropped one only.
    raw.send(&Message::Release(Release {
        file: m.file,
        first_page: 1,
        count: 1,
    }));
    let (has, len) = fetch_on_the_wire(&mut raw, 5, m.mapping, 0, 2, 0);
    assert_eq!((has, len), (vec![false, true], ps));
    // OVERWRITE: ownership without any data.
    let overwrite = fetch_flags::EXCLUSIVE | fetch_flags::OVERWRITE;
    let (has, len) = fetch_on_the_wire(&mut raw, 6, m.mapping, 0, 2, overwrite);
    assert_eq!((has, len), (vec![false, false], 0));
}

/// Section 4: a copy of a request on the connection that already carried
/// its reply (or while it runs) gets nothing more; after a resume on
/// another connection, a remembered reply is sent again and an idempotent
/// request runs again.
fn a_copy_of_a_request_is_answered_once_per_connection_and_again_after_a_resume(transport: &str) {
    let (_dir, _root, server) = serve(transport, "2000");
    let (mut raw, w) = Raw::handshake(&server.addr);
    let map = map_msg(1, b"f", map_flags::WRITE, 0, 2 * PAGE as u64);
    // A copy pipelined behind the original finds it in progress (the file
    // is being opened).
    raw.send(&map);
    raw.send(&map);
    let first = mapped(&mut raw, 1);
    raw.send(&fetch_msg(2, first.mapping, 0, 1, 0));
    assert!(matches!(raw.reply(2), Message::Pages(_)));
    // A fetch of a page the session holds is answered at once, before the
    // pong that follows it: two copies would show as two replies.
    let fetch = fetch_msg(3, first.mapping, 0, 1, 0);
    raw.send(&fetch);
    raw.send(&fetch);
    let frames = raw.until_pong(1);
    let answers: Vec<_> = frames.iter().filter_map(reply_req).collect();
    assert_eq!(
        answers,
        vec![ReqId(3)],
        "one reply per request number on one connection: {frames:?}"
    );
    // Copies after the replies (of the map, whose reply is remembered, and
    // of the fetch): answered on this connection already, so nothing.
    raw.send(&map);
    raw.send(&fetch);
    std::thread::sleep(Duration::from_millis(200));
    let frames = raw.until_pong(2);
    assert!(frames.is_empty(), "late copies get nothing: {frames:?}");

    // The session resumes elsewhere: the old connection closes, with no
    // error on it.
    let mut again = Raw::connect(&server.addr);
    again.send(&Message::Hello(resume_hello(&w)));
    let w2 = welcome(&mut again);
    assert_eq!(w2.status, ResumeStatus::Resumed);
    assert_eq!((w2.session, w2.token), (w.session, w.token));
    let left = raw.until_closed();
    assert!(
        !left.iter().any(|m| matches!(m, Message::Error(_))),
        "the old connection closes without an error: {left:?}"
    );
    // Remembered (Map) and idempotent (Fetch) requests are answered again.
    again.send(&map);
    assert_eq!(mapped(&mut again, 1), first, "the same reply again");
    again.send(&fetch);
    assert!(matches!(again.reply(3), Message::Pages(p) if p.req == ReqId(3)));
    // Numbering goes on; copies on this connection are quiet again.
    again.send(&map_msg(4, b"f", 0, 0, 10));
    let fourth = mapped(&mut again, 4);
    assert_ne!(fourth.mapping, first.mapping);
    again.send(&map);
    again.send(&fetch);
    std::thread::sleep(Duration::from_millis(200));
    assert!(again.until_pong(3).is_empty());
}

/// An Atomic frame with any op and operands (the encoder only makes valid
/// ones).
fn atomic_frame(req: u64, mapping: WireMappingId, offset: u64, op: u8, a: u64, b: u64) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&38u32.to_be_bytes());
    f.push(kind::ATOMIC);
    f.extend_from_slice(&req.to_be_bytes());
    f.extend_from_slice(&mapping.0.to_be_bytes());
    f.extend_from_slice(&offset.to_be_bytes());
    f.push(op);
    f.extend_from_slice(&a.to_be_bytes());
    f.extend_from_slice(&b.to_be_bytes());
    f
}

/// Sections 2 and 9: an Atomic whose op is not 1..=3, or whose unused
/// operand is not zero, is malformed (fatal, and the session ends), while a
/// request that parses but asks for something invalid fails alone.
fn an_atomic_outside_the_grammar_is_malformed_and_ends_the_session(transport: &str) {
    let (_dir, _root, server) = serve(transport, "2000");
    let add = |raw: &mut Raw, req: u64, m: WireMappingId, v: u64| {
        raw.send(&Message::Atomic(Atomic {
            req: ReqId(req),
            mapping: m,
            offset: 0,
            op: AtomicOp::FetchAdd(v),
        }));
        match raw.reply(req) {
            Message::AtomicDone(d) => d.previous,
            other => panic!("{other:?}"),
        }
    };
    let cases: [(u8, u64, &str); 3] = [
        (4, 0, "unknown atomic operation"),
        (1, 7, "unused operand"),
        (2, 7, "unused operand"),
    ];
    let mut expected = u64::from_le_bytes(pattern(8).try_into().unwrap());
    for (op, b, says) in cases {
        let (mut raw, w) = Raw::handshake(&server.addr);
        raw.send(&map_msg(1, b"f", map_flags::WRITE, 0, PAGE as u64));
        let m = mapped(&mut raw, 1).mapping;
        // Parses, but a reserved flag bit: only this request fails.
        raw.send(&fetch_msg(2, m, 0, 1, 0x80));
        match raw.reply(2) {
            Message::Error(e) => check_error(&e, ErrorCode::Protocol, false),
            other => panic!("{other:?}"),
        }
        assert_eq!(add(&mut raw, 3, m, 1), expected);
        expected += 1;
        raw.send_raw(&atomic_frame(4, m, 0, op, 1000, b)).unwrap();
        let msg = raw.expect_fatal(ErrorCode::Malformed);
        assert!(msg.contains(says), "op {op}, b {b}: {msg}");
        // The session ended with the connection.
        let mut back = Raw::connect(&server.addr);
        back.send(&Message::Hello(resume_hello(&w)));
        let w2 = welcome(&mut back);
        assert_eq!(w2.status, ResumeStatus::Expired);
        assert_ne!(w2.session, w.session);
        // And the word did not change.
        back.send(&map_msg(1, b"f", map_flags::WRITE, 0, 8));
        let m2 = mapped(&mut back, 1).mapping;
        assert_eq!(add(&mut back, 2, m2, 0), expected, "op {op}, b {b}");
    }
}

/// Server-to-client messages a client must never send.
fn server_messages() -> Vec<Message> {
    vec![
        Message::Pong(Pong {
            nonce: 1,
            renewed: true,
            rev_acked: RevId(0),
        }),
        Message::Mapped(Mapped {
            req: ReqId(1),
            mapping: WireMappingId(1),
            file: rmmap_core::protocol::FileHandle(1),
            file_len: 10,
        }),
        Message::Pages(Pages {
            req: ReqId(1),
            file: rmmap_core::protocol::FileHandle(1),
            first_page: 0,
            exclusive: false,
            pages: vec![],
        }),
        Message::Recall(Recall {
            rev: RevId(1),
            file: rmmap_core::protocol::FileHandle(1),
            first_page: 0,
            count: 1,
            downgrade: false,
        }),
    ]
}

/// Section 2: a message of the other direction is a protocol violation
/// before and after the handshake (and then ends the session); one whose
/// body does not parse is malformed, like any other frame.
fn a_server_message_from_a_client_is_a_protocol_violation_in_every_state(transport: &str) {
    let (_dir, _root, server) = serve(transport, "2000");
    for m in server_messages() {
        let mut raw = Raw::connect(&server.addr);
        raw.send(&m);
        let said = raw.expect_fatal(ErrorCode::Protocol);
        assert!(said.contains(m.name()), "{said}");

        let (mut raw, w) = Raw::handshake(&server.addr);
        raw.send(&m);
        let said = raw.expect_fatal(ErrorCode::Protocol);
        assert!(said.contains(m.name()), "{said}");
        let mut back = Raw::connect(&server.addr);
        back.send(&Message::Hello(resume_hello(&w)));
        assert_eq!(welcome(&mut back).status, ResumeStatus::Expired);
    }
    // A Pong cut short: the frame does not decode.
    let short_pong = [0, 0, 0, 4, kind::PONG, 1, 2, 3];
    for handshake in [false, true] {
        let mut raw = if handshake {
            Raw::handshake(&server.addr).0
        } else {
            Raw::connect(&server.addr)
        };
        raw.send_raw(&short_pong).unwrap();
        raw.expect_fatal(ErrorCode::Malformed);
    }
}

/// What an implementer had to find by experiment, as sections 2, 3, 5, 6
/// and 8 now say it: the least `Hello.max_frame` and what it lowers, a name
/// without authentication, a request pipelined behind `Hello`, `CREATE`
/// without `WRITE`, what `Bye` gets.
fn hello_limits_names_creation_pipelining_and_bye_behave_as_written(transport: &str) {
    let (_dir, root, server) = serve(transport, "2000");
    let ps = PAGE as u32;
    let with_frame = |max_frame: u32| Hello {
        max_frame,
        ..hello()
    };
    // One page must fit in a Pages reply: page_size + 73.
    let mut raw = Raw::connect(&server.addr);
    raw.send(&Message::Hello(with_frame(ps + 72)));
    raw.expect_fatal(ErrorCode::Protocol);
    for (max_frame, pages) in [
        (ps + 73, 1),
        (64 + 10 * (ps + 9), 10),
        (HARD_MAX_FRAME + 1, 256),
        (u32::MAX, 256),
    ] {
        let mut raw = Raw::connect(&server.addr);
        raw.send(&Message::Hello(with_frame(max_frame)));
        let w = welcome(&mut raw);
        assert_eq!(w.max_pages_per_request, pages, "max_frame {max_frame}");
        // The lowered limit is the one enforced.
        raw.send(&map_msg(1, b"f", 0, 0, 2 * PAGE as u64));
        let m = mapped(&mut raw, 1).mapping;
        if pages == 1 {
            raw.send(&fetch_msg(2, m, 0, 2, 0));
            match raw.reply(2) {
                Message::Error(e) => check_error(&e, ErrorCode::OutOfRange, false),
                other => panic!("{other:?}"),
            }
        }
    }

    // A name without authentication, and a Map pipelined behind Hello.
    let mut raw = Raw::connect(&server.addr);
    let named = Hello {
        client_name: Bytes::from_static(b"someone"),
        ..hello()
    };
    let mut both = Message::Hello(named.clone()).to_bytes().to_vec();
    both.extend_from_slice(&map_msg(1, b"f", 0, 0, 10).to_bytes());
    raw.send_raw(&both).unwrap();
    let w = welcome(&mut raw);
    assert_eq!(w.status, ResumeStatus::New);
    mapped(&mut raw, 1);
    // A resume must carry the same name.
    let mut other = Raw::connect(&server.addr);
    other.send(&Message::Hello(resume_hello(&w)));
    other.expect_fatal(ErrorCode::Denied);

    // CREATE without WRITE: the file is made, the mapping is read-only.
    raw.send(&map_msg(2, b"new", map_flags::CREATE, 0, 100));
    let m = mapped(&mut raw, 2);
    assert_eq!(m.file_len, 100);
    assert_eq!(std::fs::metadata(root.join("new")).unwrap().len(), 100);
    raw.send(&fetch_msg(3, m.mapping, 0, 1, fetch_flags::EXCLUSIVE));
    match raw.reply(3) {
        Message::Error(e) => check_error(&e, ErrorCode::ReadOnly, false),
        other => panic!("{other:?}"),
    }
    raw.send(&fetch_msg(4, m.mapping, 0, 1, 0));
    assert!(matches!(raw.reply(4), Message::Pages(_)));

    // Bye: nothing in answer, the connection closes, the session is gone.
    let mut resume = resume_hello(&w);
    resume.client_name = named.client_name.clone();
    raw.send(&Message::Bye);
    raw.send(&map_msg(5, b"f", 0, 0, 10));
    assert_eq!(
        raw.until_closed(),
        vec![],
        "nothing answers Bye or follows it"
    );
    let mut back = Raw::connect(&server.addr);
    back.send(&Message::Hello(resume));
    assert_eq!(welcome(&mut back).status, ResumeStatus::Expired);
}

/// Sections 5 and 7.2: a RecallAck whose data lies outside the recalled
/// pages is a protocol violation: the session ends, its data is not
/// applied, and the fetch that recalled waits for the lease to run out.
fn recalled_data_outside_the_recalled_pages_ends_the_session_unapplied(transport: &str) {
    let (_dir, root, server) = serve(transport, "1000");
    let (mut owner, _) = Raw::handshake(&server.addr);
    owner.send(&map_msg(1, b"f", map_flags::WRITE, 0, 2 * PAGE as u64));
    let om = mapped(&mut owner, 1).mapping;
    let excl = fetch_flags::EXCLUSIVE | fetch_flags::WANT_DATA;
    owner.send(&fetch_msg(2, om, 0, 2, excl));
    assert!(matches!(owner.reply(2), Message::Pages(p) if p.exclusive));

    let (mut reader, _) = Raw::handshake(&server.addr);
    reader.send(&map_msg(1, b"f", 0, 0, 2 * PAGE as u64));
    let rm = mapped(&mut reader, 1).mapping;
    reader.send(&fetch_msg(2, rm, 0, 1, 0));
    let recall = match owner.recv() {
        Recv::Frame(Message::Recall(r)) => r,
        other => panic!("expected a recall, got {other:?}"),
    };
    assert_eq!((recall.first_page, recall.count), (0, 1));
    // Dirty bytes for page 1, which was not recalled.
    owner.send(&Message::RecallAck(RecallAck {
        rev: recall.rev,
        patches: vec![PagePatch {
            page: 1,
            offset: 0,
            data: Bytes::from_static(b"not recalled"),
        }],
    }));
    let said = owner.expect_fatal(ErrorCode::Protocol);
    assert!(said.contains("outside"), "{said}");
    // The reader gets the page once the owner's lease has run out, with the
    // file's own bytes.
    let pages = match reply_keeping_lease(&mut reader, 2, Duration::from_millis(1000)) {
        Message::Pages(p) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(pages.pages[0].data.as_deref(), Some(&pattern(PAGE)[..]));
    reader.send(&fetch_msg(3, rm, 1, 1, 0));
    match reader.reply(3) {
        Message::Pages(p) => {
            assert_eq!(p.pages[0].data.as_deref(), Some(&pattern(2 * PAGE)[PAGE..]))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(root.join("f")).unwrap(), pattern(2 * PAGE));
}

/// Section 10: a `Refresh` frame built from the table (type 0x19, `req`,
/// `mapping`, `first_page`, `n`, then `n` digests: the first 16 bytes of
/// SHA-256 over each page) is answered by `Pages` that leave out the pages
/// whose digest matches the page's bytes, and only those.
fn a_refresh_leaves_out_the_pages_whose_digest_matches(transport: &str) {
    use sha2::Digest as _;
    let (_dir, _root, server) = serve(transport, "2000");
    let (mut raw, w) = Raw::handshake(&server.addr);
    let ps = w.page_size;
    raw.send(&map_msg(1, b"f", 0, 0, 2 * PAGE as u64));
    let m = mapped(&mut raw, 1);
    let bytes = pattern(2 * PAGE);
    let digest = |page: &[u8]| sha2::Sha256::digest(page)[..16].to_vec();
    for (req, copies, expected) in [
        (2u64, [&bytes[..PAGE], &bytes[PAGE..]], vec![false, false]),
        (3, [&bytes[..PAGE], &[0u8; PAGE][..]], vec![false, true]),
        (4, [&[1u8; PAGE][..], &bytes[PAGE..]], vec![true, false]),
    ] {
        let mut f = Vec::new();
        f.extend_from_slice(&(1 + 8 + 4 + 8 + 4 + 2 * 16u32).to_be_bytes());
        f.push(0x19);
        f.extend_from_slice(&req.to_be_bytes());
        f.extend_from_slice(&m.mapping.0.to_be_bytes());
        f.extend_from_slice(&0u64.to_be_bytes());
        f.extend_from_slice(&2u32.to_be_bytes());
        for c in copies {
            f.extend_from_slice(&digest(c));
        }
        raw.send_raw(&f).unwrap();
        let frame = raw.recv_bytes().expect("a reply");
        let (got, has, page_len) = pages_on_the_wire(&frame);
        assert_eq!(got, req);
        assert_eq!(has, expected, "request {req}");
        let with_data = expected.iter().any(|h| *h);
        assert_eq!(page_len, if with_data { ps } else { 0 });
    }
}
