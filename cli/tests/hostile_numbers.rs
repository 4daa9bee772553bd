//! Hostile clients that send well-formed requests whose numbers sit at the
//! edges to a real `rmmap serve` (tokio and mio): offsets and lengths near
//! 2^64, page counts of 0 and 2^32 - 1, patches that run past their page,
//! unknown mappings and handles, one frame with 65,535 patches or 100,000
//! revalidations. Each gets an error that names what was wrong (none of
//! them fatal: a reserved flag bit is a request-level `protocol` error), the
//! session carries on, nothing is written where it should
//! not be, and the bystander keeps its data.

#[macro_use]
mod hostile_common;

use bytes::Bytes;
use hostile_common::Scene;
use hostile_common::raw::{Raw, check_error, fetch_msg, map_msg};
use rmmap_core::protocol::{
    Atomic, AtomicOp, ErrorCode, FileHandle, Message, PageDigest, PagePatch, PageVersion, Refresh,
    Release, ReqId, Revalidate, SetLen, Sync, Unmap, WireMappingId, WriteBack, fetch_flags,
    map_flags,
};

both_transports!(numbers_at_the_edges_get_named_errors);

const LEN: u64 = 16 * 4096;

fn write_back(req: u64, mapping: WireMappingId, patches: Vec<PagePatch>) -> Message {
    Message::WriteBack(WriteBack {
        req: ReqId(req),
        mapping,
        patches,
    })
}

fn refresh(mapping: WireMappingId, first_page: u64, n: usize) -> Message {
    Message::Refresh(Refresh {
        req: ReqId(0),
        mapping,
        first_page,
        digests: vec![PageDigest([7; 16]); n],
    })
}

/// A refresh of two pages of zeros: the copy whose digest matches is vouched
/// for without data, the other is sent.
fn refresh_vouches_for_the_copy_that_matches(scene: &Scene) {
    std::fs::write(scene.root.join("z.bin"), vec![0u8; 4 * 4096]).unwrap();
    let (mut raw, _) = Raw::handshake(scene.addr());
    let z = raw.map(1, "z.bin", 0, 0, 4 * 4096);
    raw.send(&Message::Refresh(Refresh {
        req: ReqId(2),
        mapping: z,
        first_page: 2,
        digests: vec![PageDigest::of(&[0u8; 4096]), PageDigest([7; 16])],
    }));
    match raw.reply(2) {
        Message::Pages(p) => {
            assert_eq!((p.first_page, p.exclusive, p.pages.len()), (2, false, 2));
            assert!(p.pages[0].data.is_none(), "{p:?}");
            assert_eq!(p.pages[1].data.as_deref(), Some(&[0u8; 4096][..]));
        }
        other => panic!("{other:?}"),
    }
}

fn patch(page: u64, offset: u32, len: usize) -> PagePatch {
    PagePatch {
        page,
        offset,
        data: Bytes::from(vec![0xee; len]),
    }
}

fn numbers_at_the_edges_get_named_errors(transport: &str) {
    let scene = Scene::start(transport, &[]);
    std::fs::write(scene.root.join("n.bin"), vec![0u8; LEN as usize]).unwrap();
    let (mut raw, _) = Raw::handshake(scene.addr());
    let rw = map_flags::WRITE;
    let create = map_flags::WRITE | map_flags::CREATE;
    let m = raw.map(1, "n.bin", rw, 0, LEN);
    let ro = raw.map(2, "n.bin", 0, 0, LEN);
    let excl = fetch_flags::EXCLUSIVE | fetch_flags::WANT_DATA;
    refresh_vouches_for_the_copy_that_matches(&scene);
    raw.send(&fetch_msg(3, m, 0, 16, excl));
    assert!(matches!(raw.reply(3), Message::Pages(p) if p.exclusive));
    let max = u64::MAX;
    let bad = WireMappingId(999);
    let requests: Vec<(Message, ErrorCode)> = vec![
        (map_msg(0, b"n.bin", 0, max, 1), ErrorCode::OutOfRange),
        (
            map_msg(0, b"n.bin", 0, max - 10, 100),
            ErrorCode::OutOfRange,
        ),
        (map_msg(0, b"n.bin", 0, 0, 0), ErrorCode::OutOfRange),
        (map_msg(0, b"n.bin", 0, 0, LEN + 1), ErrorCode::OutOfRange),
        (map_msg(0, b"n.bin", 0x80, 0, 1), ErrorCode::Protocol),
        (
            map_msg(0, b"huge.bin", create, 0, max),
            ErrorCode::OutOfRange,
        ),
        (fetch_msg(0, m, max, 1, 0), ErrorCode::OutOfRange),
        (fetch_msg(0, m, 15, 2, 0), ErrorCode::OutOfRange),
        (fetch_msg(0, m, 0, 0, 0), ErrorCode::OutOfRange),
        (fetch_msg(0, m, 0, u32::MAX, 0), ErrorCode::OutOfRange),
        (fetch_msg(0, bad, 0, 1, 0), ErrorCode::UnknownMapping),
        (fetch_msg(0, ro, 0, 1, excl), ErrorCode::ReadOnly),
        (
            write_back(0, m, vec![patch(0, 4000, 200)]),
            ErrorCode::OutOfRange,
        ),
        (
            write_back(0, m, vec![patch(0, u32::MAX, 1)]),
            ErrorCode::OutOfRange,
        ),
        (
            write_back(0, m, vec![patch(16, 0, 1)]),
            ErrorCode::OutOfRange,
        ),
        (
            write_back(0, m, vec![patch(max, 0, 1)]),
            ErrorCode::OutOfRange,
        ),
        (write_back(0, ro, vec![patch(0, 0, 1)]), ErrorCode::ReadOnly),
        (
            write_back(0, bad, vec![patch(0, 0, 1)]),
            ErrorCode::UnknownMapping,
        ),
        (
            Message::Atomic(Atomic {
                req: ReqId(0),
                mapping: m,
                offset: max - 7,
                op: AtomicOp::FetchAdd(1),
            }),
            ErrorCode::OutOfRange,
        ),
        (
            Message::Atomic(Atomic {
                req: ReqId(0),
                mapping: m,
                offset: 3,
                op: AtomicOp::FetchAdd(1),
            }),
            ErrorCode::Misaligned,
        ),
        (
            Message::SetLen(SetLen {
                req: ReqId(0),
                create: true,
                len: max,
                path: Bytes::from_static(b"huge.bin"),
            }),
            ErrorCode::OutOfRange,
        ),
        (
            Message::Sync(Sync {
                req: ReqId(0),
                mapping: bad,
            }),
            ErrorCode::UnknownMapping,
        ),
        (
            Message::Unmap(Unmap {
                req: ReqId(0),
                mapping: bad,
            }),
            ErrorCode::UnknownMapping,
        ),
        (
            Message::Revalidate(Revalidate {
                req: ReqId(0),
                mapping: m,
                pages: vec![PageVersion {
                    page: max,
                    version: 1,
                }],
            }),
            ErrorCode::OutOfRange,
        ),
        (refresh(m, max, 1), ErrorCode::OutOfRange),
        (refresh(m, 15, 2), ErrorCode::OutOfRange),
        (refresh(m, 0, 0), ErrorCode::OutOfRange),
        (refresh(m, 0, 257), ErrorCode::OutOfRange),
        (refresh(bad, 0, 1), ErrorCode::UnknownMapping),
    ];
    let mut req = 3;
    for (mut msg, code) in requests {
        req += 1;
        set_req(&mut msg, req);
        let name = msg.name();
        raw.send(&msg);
        match raw.reply(req) {
            Message::Error(e) => {
                check_error(&e, code, false);
                println!(
                    "[{transport}] {name}: {} ({})",
                    e.code,
                    String::from_utf8_lossy(&e.message)
                );
            }
            other => panic!("{name} with edge numbers: {other:?}"),
        }
    }
    // One frame with 65,535 one-byte patches, and one with 100,000
    // revalidations of a page: the server takes them in its stride.
    req += 1;
    let many: Vec<PagePatch> = (0..u16::MAX as u32)
        .map(|i| patch(u64::from(i % 16), i % 4096, 1))
        .collect();
    raw.send(&write_back(req, m, many));
    match raw.reply(req) {
        Message::WriteAck(a) => assert_eq!(a.versions.len(), u16::MAX as usize),
        other => panic!("{other:?}"),
    }
    req += 1;
    raw.send(&Message::Revalidate(Revalidate {
        req: ReqId(req),
        mapping: ro,
        pages: vec![
            PageVersion {
                page: 1,
                version: 1
            };
            100_000
        ],
    }));
    assert!(matches!(
        raw.reply(req),
        Message::Revalidated(_) | Message::Error(_)
    ));
    // Releases of absurd ranges and unknown handles get no reply; the
    // session can fetch its pages again after them.
    for (file, first, count) in [(1, 0, u32::MAX), (1, max, u32::MAX), (77, 0, 1)] {
        raw.send(&Message::Release(Release {
            file: FileHandle(file),
            first_page: first,
            count,
        }));
    }
    req += 1;
    raw.send(&fetch_msg(req, m, 0, 16, excl));
    assert!(matches!(raw.reply(req), Message::Pages(p) if p.exclusive));
    // Nothing landed outside the mapping; the file did not grow.
    assert_eq!(
        std::fs::metadata(scene.root.join("n.bin")).unwrap().len(),
        LEN
    );
    assert!(
        !scene.root.join("huge.bin").exists() || {
            std::fs::metadata(scene.root.join("huge.bin"))
                .unwrap()
                .len()
                == 0
        }
    );
    scene.bystander_progresses();
    scene.finish();
}

/// Gives a request its number.
fn set_req(m: &mut Message, req: u64) {
    let r = ReqId(req);
    match m {
        Message::Map(x) => x.req = r,
        Message::Fetch(x) => x.req = r,
        Message::WriteBack(x) => x.req = r,
        Message::Atomic(x) => x.req = r,
        Message::SetLen(x) => x.req = r,
        Message::Sync(x) => x.req = r,
        Message::Unmap(x) => x.req = r,
        Message::Revalidate(x) => x.req = r,
        Message::Refresh(x) => x.req = r,
        other => panic!("not a request: {other:?}"),
    }
}
