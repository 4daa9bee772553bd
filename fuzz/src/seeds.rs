//! The seed corpus, generated (`cargo run --example make_corpus`) rather than
//! written by hand: real frames for the codec targets, and for the state
//! machine targets inputs that tell a story (see `server::seeds`,
//! `client::seeds`).

use bytes::{Bytes, BytesMut};
use rmmap_core::protocol::*;

/// The seed files of `target`: `(file name, contents)`.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "decode_frame" => streams(),
        "roundtrip" => frames(),
        "server" => crate::server::seeds(),
        "client" => crate::client::seeds(),
        _ => Vec::new(),
    }
}

fn page(fill: u8) -> Option<Bytes> {
    Some(Bytes::from(vec![fill; 512]))
}

/// Real messages of every kind a session uses, as the peers send them.
fn messages() -> Vec<(&'static str, Message)> {
    let patch = |page, offset, fill, len| PagePatch {
        page,
        offset,
        data: Bytes::from(vec![fill; len]),
    };
    vec![
        (
            "hello",
            Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                max_frame: 4 << 20,
                client_nonce: [7; 16],
                client_name: Bytes::from_static(b"alice"),
                resume: None,
            }),
        ),
        (
            "hello_resume",
            Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                max_frame: 4 << 20,
                client_nonce: [8; 16],
                client_name: Bytes::new(),
                resume: Some(Resume {
                    session: SessionId(3),
                    token: [0x33; 16],
                    epoch: 0x1234_5679,
                }),
            }),
        ),
        (
            "challenge",
            Message::Challenge(Challenge {
                server_nonce: [9; 16],
            }),
        ),
        (
            "authenticate",
            Message::Authenticate(Authenticate { proof: [0xAA; 32] }),
        ),
        (
            "welcome",
            Message::Welcome(Welcome {
                version: PROTOCOL_VERSION,
                status: ResumeStatus::New,
                session: SessionId(1),
                token: [0x11; 16],
                epoch: 0x1234_5679,
                page_size: 4096,
                lease_ms: 10_000,
                max_frame: 2 << 20,
                max_pages_per_request: 256,
                max_inflight: 1024,
                max_mappings: 4096,
                rights: 1,
                rev_acked: RevId(0),
                server_proof: [0; 32],
            }),
        ),
        ("ping", Message::Ping(Ping { nonce: 1 })),
        (
            "pong",
            Message::Pong(Pong {
                nonce: 1,
                renewed: true,
                rev_acked: RevId(2),
            }),
        ),
        (
            "map",
            Message::Map(Map {
                req: ReqId(1),
                flags: map_flags::WRITE,
                offset: 0,
                len: 8192,
                path: Bytes::from_static(b"data/file.bin"),
            }),
        ),
        (
            "mapped",
            Message::Mapped(Mapped {
                req: ReqId(1),
                mapping: WireMappingId(1),
                file: FileHandle(1),
                file_len: 8192,
            }),
        ),
        (
            "fetch",
            Message::Fetch(Fetch {
                req: ReqId(2),
                mapping: WireMappingId(1),
                first_page: 0,
                count: 3,
                flags: fetch_flags::EXCLUSIVE,
            }),
        ),
        (
            "pages",
            Message::Pages(Pages {
                req: ReqId(2),
                file: FileHandle(1),
                first_page: 0,
                exclusive: true,
                pages: vec![
                    PageGrant {
                        version: 4,
                        data: page(1),
                    },
                    PageGrant {
                        version: 5,
                        data: None,
                    },
                    PageGrant {
                        version: 6,
                        data: page(3),
                    },
                ],
            }),
        ),
        (
            "write_back",
            Message::WriteBack(WriteBack {
                req: ReqId(3),
                mapping: WireMappingId(1),
                patches: vec![patch(0, 16, 0xAB, 100), patch(2, 0, 0xCD, 512)],
            }),
        ),
        (
            "write_ack",
            Message::WriteAck(WriteAck {
                req: ReqId(3),
                versions: vec![7, 8],
            }),
        ),
        (
            "recall",
            Message::Recall(Recall {
                rev: RevId(1),
                file: FileHandle(1),
                first_page: 0,
                count: 3,
                downgrade: true,
            }),
        ),
        (
            "recall_ack",
            Message::RecallAck(RecallAck {
                rev: RevId(1),
                patches: vec![patch(1, 500, 0xEE, 12)],
            }),
        ),
        (
            "invalidate",
            Message::Invalidate(Invalidate {
                rev: RevId(2),
                file: FileHandle(1),
                first_page: 4,
                count: 2,
            }),
        ),
        (
            "invalidate_ack",
            Message::InvalidateAck(InvalidateAck { rev: RevId(2) }),
        ),
        (
            "revalidate",
            Message::Revalidate(Revalidate {
                req: ReqId(4),
                mapping: WireMappingId(1),
                pages: (0..10)
                    .map(|p| PageVersion {
                        page: p,
                        version: p + 3,
                    })
                    .collect(),
            }),
        ),
        (
            "revalidated",
            Message::Revalidated(Revalidated {
                req: ReqId(4),
                count: 10,
                valid: Bytes::from_static(&[0xF5, 0x02]),
            }),
        ),
        (
            "atomic",
            Message::Atomic(Atomic {
                req: ReqId(5),
                mapping: WireMappingId(1),
                offset: 64,
                op: AtomicOp::CompareExchange {
                    expected: 0,
                    new: 42,
                },
            }),
        ),
        (
            "atomic_done",
            Message::AtomicDone(AtomicDone {
                req: ReqId(5),
                previous: 0,
                applied: true,
            }),
        ),
        (
            "set_len",
            Message::SetLen(SetLen {
                req: ReqId(6),
                create: true,
                len: 1 << 20,
                path: Bytes::from_static(b"new"),
            }),
        ),
        (
            "len_set",
            Message::LenSet(LenSet {
                req: ReqId(6),
                len: 1 << 20,
            }),
        ),
        (
            "sync",
            Message::Sync(Sync {
                req: ReqId(7),
                mapping: WireMappingId(1),
            }),
        ),
        ("synced", Message::Synced(Synced { req: ReqId(7) })),
        (
            "release",
            Message::Release(Release {
                file: FileHandle(1),
                first_page: 0,
                count: 2,
            }),
        ),
        (
            "unmap",
            Message::Unmap(Unmap {
                req: ReqId(8),
                mapping: WireMappingId(1),
            }),
        ),
        ("unmapped", Message::Unmapped(Unmapped { req: ReqId(8) })),
        (
            "error",
            Message::Error(ErrorMsg {
                req: ReqId(9),
                code: ErrorCode::OutOfRange,
                fatal: false,
                message: Bytes::from_static(
                    b"offset 9000 is past the end of the 8192-byte mapping",
                ),
            }),
        ),
        (
            "goodbye",
            Message::Goodbye(Goodbye {
                code: ErrorCode::ShuttingDown,
                message: Bytes::from_static(b"the server is shutting down"),
            }),
        ),
        ("bye", Message::Bye),
    ]
}

/// One frame per file, for `roundtrip` (whose input is both bytes to decode
/// and a recipe for messages).
fn frames() -> Vec<(String, Vec<u8>)> {
    messages()
        .into_iter()
        .filter(|(name, _)| {
            [
                "hello",
                "welcome",
                "map",
                "pages",
                "write_back",
                "recall_ack",
                "revalidated",
                "atomic",
                "error",
            ]
            .contains(name)
        })
        .map(|(name, m)| (name.to_string(), m.to_bytes().to_vec()))
        .collect()
}

/// Byte streams as a connection carries them, for `decode_frame`: whole
/// conversations, and the ways a stream goes wrong.
fn streams() -> Vec<(String, Vec<u8>)> {
    let all: Vec<(&str, Message)> = messages();
    let get = |n: &str| {
        all.iter()
            .find(|(name, _)| *name == n)
            .map(|(_, m)| m.to_bytes())
            .expect("known seed")
    };
    let cat = |names: &[&str]| {
        let mut b = BytesMut::new();
        for n in names {
            b.extend_from_slice(&get(n));
        }
        b.to_vec()
    };
    let client = cat(&[
        "hello",
        "ping",
        "map",
        "fetch",
        "write_back",
        "recall_ack",
        "revalidate",
        "atomic",
        "bye",
    ]);
    let server = cat(&[
        "welcome",
        "pong",
        "mapped",
        "pages",
        "write_ack",
        "recall",
        "revalidated",
        "error",
        "goodbye",
    ]);
    let mut truncated = get("pages").to_vec();
    truncated.truncate(truncated.len() - 100);
    let mut bad_body = get("map").to_vec();
    bad_body.pop();
    let mut unknown = get("ping").to_vec();
    unknown[4] = 0x7F;
    let mut huge = vec![0xFF, 0xFF, 0xFF, 0xFF];
    huge.extend_from_slice(&get("hello"));
    vec![
        ("client_conversation".into(), client),
        ("server_conversation".into(), server),
        ("handshake_pipelined".into(), cat(&["hello", "ping"])),
        ("truncated_pages".into(), truncated),
        ("map_short_by_one_byte".into(), bad_body),
        (
            "unknown_type_after_frames".into(),
            [cat(&["ping", "pong"]), unknown].concat(),
        ),
        ("length_prefix_4gib".into(), huge),
        (
            "empty_frame".into(),
            [get("bye").to_vec(), vec![0, 0, 0, 0]].concat(),
        ),
    ]
}
