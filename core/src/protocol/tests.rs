use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn bytes_upto(n: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..n).prop_map(Bytes::from)
}

fn code() -> impl Strategy<Value = ErrorCode> {
    // Unknown codes that collide with known ones would decode as the known one.
    prop_oneof![
        (1u16..=25).prop_map(ErrorCode::from_u16),
        (1000u16..).prop_map(ErrorCode::Unknown)
    ]
}

fn patches() -> impl Strategy<Value = Vec<PagePatch>> {
    proptest::collection::vec(
        (any::<u64>(), any::<u32>(), bytes_upto(600)).prop_map(|(page, offset, data)| PagePatch {
            page,
            offset,
            data,
        }),
        0..4,
    )
}

fn status() -> impl Strategy<Value = ResumeStatus> {
    prop_oneof![
        Just(ResumeStatus::New),
        Just(ResumeStatus::Resumed),
        Just(ResumeStatus::ServerRestarted),
        Just(ResumeStatus::Expired)
    ]
}

fn client_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u32>(),
            any::<[u8; 16]>(),
            bytes_upto(40),
            proptest::option::of((any::<u64>(), any::<[u8; 16]>(), any::<u64>()))
        )
            .prop_map(
                |(version, max_frame, client_nonce, client_name, r)| Message::Hello(Hello {
                    version,
                    max_frame,
                    client_nonce,
                    client_name,
                    resume: r.map(|(s, token, epoch)| Resume {
                        session: SessionId(s),
                        token,
                        epoch
                    }),
                })
            ),
        any::<[u8; 32]>().prop_map(|proof| Message::Authenticate(Authenticate { proof })),
        any::<u64>().prop_map(|nonce| Message::Ping(Ping { nonce })),
        Just(Message::Bye),
        (
            any::<u64>(),
            any::<u8>(),
            any::<u64>(),
            any::<u64>(),
            bytes_upto(100)
        )
            .prop_map(|(r, flags, offset, len, path)| Message::Map(Map {
                req: ReqId(r),
                flags,
                offset,
                len,
                path
            })),
        (any::<u64>(), any::<u32>()).prop_map(|(r, m)| Message::Unmap(Unmap {
            req: ReqId(r),
            mapping: WireMappingId(m)
        })),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            any::<u32>(),
            any::<u8>()
        )
            .prop_map(|(r, m, first_page, count, flags)| Message::Fetch(Fetch {
                req: ReqId(r),
                mapping: WireMappingId(m),
                first_page,
                count,
                flags
            })),
        (any::<u64>(), any::<u32>(), patches()).prop_map(|(r, m, patches)| Message::WriteBack(
            WriteBack {
                req: ReqId(r),
                mapping: WireMappingId(m),
                patches
            }
        )),
        (any::<u64>(), any::<u32>()).prop_map(|(r, m)| Message::Sync(Sync {
            req: ReqId(r),
            mapping: WireMappingId(m)
        })),
        (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(f, first_page, count)| {
            Message::Release(Release {
                file: FileHandle(f),
                first_page,
                count,
            })
        }),
        (
            any::<u64>(),
            any::<u32>(),
            proptest::collection::vec((any::<u64>(), any::<u64>()), 0..5)
        )
            .prop_map(|(r, m, v)| Message::Revalidate(Revalidate {
                req: ReqId(r),
                mapping: WireMappingId(m),
                pages: v
                    .into_iter()
                    .map(|(page, version)| PageVersion { page, version })
                    .collect()
            })),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            proptest::collection::vec(any::<[u8; 16]>(), 0..5)
        )
            .prop_map(|(r, m, first_page, d)| Message::Refresh(Refresh {
                req: ReqId(r),
                mapping: WireMappingId(m),
                first_page,
                digests: d.into_iter().map(PageDigest).collect()
            })),
        (any::<u64>(), any::<bool>(), any::<u64>(), bytes_upto(50)).prop_map(
            |(r, create, len, path)| {
                Message::SetLen(SetLen {
                    req: ReqId(r),
                    create,
                    len,
                    path,
                })
            }
        ),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            any::<u8>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(r, m, offset, op, a, b)| Message::Atomic(Atomic {
                req: ReqId(r),
                mapping: WireMappingId(m),
                offset,
                op: match op % 3 {
                    0 => AtomicOp::FetchAdd(a),
                    1 => AtomicOp::Swap(a),
                    _ => AtomicOp::CompareExchange {
                        expected: b,
                        new: a
                    },
                }
            })),
        any::<u64>().prop_map(|r| Message::InvalidateAck(InvalidateAck { rev: RevId(r) })),
        (any::<u64>(), patches()).prop_map(|(r, patches)| Message::RecallAck(RecallAck {
            rev: RevId(r),
            patches
        })),
    ]
}

fn server_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        any::<[u8; 16]>().prop_map(|server_nonce| Message::Challenge(Challenge { server_nonce })),
        (
            (
                any::<u16>(),
                status(),
                any::<u64>(),
                any::<[u8; 16]>(),
                any::<u64>(),
                any::<u32>(),
                any::<u32>()
            ),
            (
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                any::<u8>(),
                any::<u64>(),
                any::<[u8; 32]>()
            )
        )
            .prop_map(|(a, b)| Message::Welcome(Welcome {
                version: a.0,
                status: a.1,
                session: SessionId(a.2),
                token: a.3,
                epoch: a.4,
                page_size: a.5,
                lease_ms: a.6,
                max_frame: b.0,
                max_pages_per_request: b.1,
                max_inflight: b.2,
                max_mappings: b.3,
                rights: b.4,
                rev_acked: RevId(b.5),
                server_proof: b.6,
            })),
        (any::<u64>(), any::<bool>(), any::<u64>()).prop_map(|(nonce, renewed, r)| Message::Pong(
            Pong {
                nonce,
                renewed,
                rev_acked: RevId(r)
            }
        )),
        (code(), bytes_upto(80))
            .prop_map(|(code, message)| Message::Goodbye(Goodbye { code, message })),
        (any::<u64>(), code(), any::<bool>(), bytes_upto(80)).prop_map(
            |(r, code, fatal, message)| {
                Message::Error(ErrorMsg {
                    req: ReqId(r),
                    code,
                    fatal,
                    message,
                })
            }
        ),
        (any::<u64>(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(r, m, f, file_len)| {
            Message::Mapped(Mapped {
                req: ReqId(r),
                mapping: WireMappingId(m),
                file: FileHandle(f),
                file_len,
            })
        }),
        any::<u64>().prop_map(|r| Message::Unmapped(Unmapped { req: ReqId(r) })),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            any::<bool>(),
            0usize..700,
            proptest::collection::vec((any::<u64>(), any::<bool>(), any::<u8>()), 0..5)
        )
            .prop_map(
                |(r, f, first_page, exclusive, page_len, pages)| Message::Pages(Pages {
                    req: ReqId(r),
                    file: FileHandle(f),
                    first_page,
                    exclusive,
                    pages: pages
                        .into_iter()
                        .map(|(version, has, fill)| PageGrant {
                            version,
                            data: has.then(|| Bytes::from(vec![fill; page_len]))
                        })
                        .collect()
                })
            ),
        (any::<u64>(), proptest::collection::vec(any::<u64>(), 0..6)).prop_map(|(r, versions)| {
            Message::WriteAck(WriteAck {
                req: ReqId(r),
                versions,
            })
        }),
        any::<u64>().prop_map(|r| Message::Synced(Synced { req: ReqId(r) })),
        (
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..5),
            0u32..8
        )
            .prop_map(|(r, bits, unused)| {
                // `count` entries need exactly ceil(count / 8) bytes of bitmap.
                let count = if bits.is_empty() {
                    0
                } else {
                    bits.len() as u32 * 8 - unused
                };
                Message::Revalidated(Revalidated {
                    req: ReqId(r),
                    count,
                    valid: Bytes::from(bits),
                })
            }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(r, len)| Message::LenSet(LenSet { req: ReqId(r), len })),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(r, previous, applied)| {
            Message::AtomicDone(AtomicDone {
                req: ReqId(r),
                previous,
                applied,
            })
        }),
        (any::<u64>(), any::<u32>(), any::<u64>(), any::<u32>()).prop_map(
            |(r, f, first_page, count)| {
                Message::Invalidate(Invalidate {
                    rev: RevId(r),
                    file: FileHandle(f),
                    first_page,
                    count,
                })
            }
        ),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(
                |(r, f, first_page, count, downgrade)| Message::Recall(Recall {
                    rev: RevId(r),
                    file: FileHandle(f),
                    first_page,
                    count,
                    downgrade
                })
            ),
    ]
}

fn any_message() -> impl Strategy<Value = Message> {
    prop_oneof![client_message(), server_message()]
}

fn decode_one(bytes: &[u8]) -> Result<Option<Message>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let r = decode_frame(&mut buf, HARD_MAX_FRAME);
    if let Ok(Some(_)) = r {
        assert!(buf.is_empty(), "one frame, all consumed");
    }
    r
}

proptest! {
    #[test]
    fn every_message_decodes_to_itself_after_encoding(msg in any_message()) {
        let bytes = msg.to_bytes();
        prop_assert_eq!(bytes.len(), msg.frame_len());
        prop_assert_eq!(decode_one(&bytes).unwrap(), Some(msg));
    }

    #[test]
    fn chunked_encoding_gives_the_same_bytes(msgs in proptest::collection::vec(any_message(), 1..5)) {
        let mut q = ChunkQueue::new();
        let mut flat = BytesMut::new();
        for m in &msgs {
            q.push_message(m);
            m.encode(&mut flat);
        }
        prop_assert_eq!(q.len(), flat.len());
        let mut joined = BytesMut::new();
        while let Some(c) = q.pop() {
            joined.extend_from_slice(&c);
        }
        prop_assert_eq!(&joined[..], &flat[..]);
    }

    #[test]
    fn every_prefix_of_a_frame_asks_for_more_bytes(msg in any_message(), cut in any::<prop::sample::Index>()) {
        let bytes = msg.to_bytes();
        let n = cut.index(bytes.len());
        let mut buf = BytesMut::from(&bytes[..n]);
        prop_assert_eq!(decode_frame(&mut buf, HARD_MAX_FRAME).unwrap(), None);
        prop_assert_eq!(buf.len(), n, "nothing consumed");
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut buf = BytesMut::from(&data[..]);
        // Drain as many frames as decode; any error ends the stream.
        while let Ok(Some(_)) = decode_frame(&mut buf, 1 << 16) {}
    }

    #[test]
    fn accepted_bytes_encode_back_to_themselves(kind in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..120)) {
        let mut frame = Vec::new();
        frame.extend_from_slice(&(1 + body.len() as u32).to_be_bytes());
        frame.push(kind);
        frame.extend_from_slice(&body);
        if let Ok(Some(m)) = decode_one(&frame) {
            prop_assert_eq!(&m.to_bytes()[..], &frame[..]);
        }
    }

    #[test]
    fn mutated_frames_never_panic_and_reencode_exactly(msg in any_message(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut bytes = msg.to_bytes().to_vec();
        for (i, v) in flips {
            let i = i.index(bytes.len());
            bytes[i] = v;
        }
        if let Ok(Some(m)) = decode_one(&bytes) {
            let again = m.to_bytes();
            prop_assert_eq!(&again[..], &bytes[..again.len()]);
        }
    }
}

#[test]
fn a_length_prefix_over_the_limit_is_refused_before_reading_the_body() {
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0x01][..]);
    assert_eq!(
        decode_frame(&mut buf, HARD_MAX_FRAME),
        Err(DecodeError::FrameTooLarge {
            len: u32::MAX,
            max: HARD_MAX_FRAME
        })
    );
}

#[test]
fn unknown_types_and_empty_frames_are_errors() {
    assert_eq!(
        decode_one(&[0, 0, 0, 1, 0x7f]),
        Err(DecodeError::UnknownType(0x7f))
    );
    assert_eq!(decode_one(&[0, 0, 0, 0]), Err(DecodeError::Empty));
}

#[test]
fn trailing_bytes_are_malformed() {
    let mut b = Message::Synced(Synced { req: ReqId(7) })
        .to_bytes()
        .to_vec();
    b.push(0);
    let len = (b.len() - 4) as u32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    assert!(matches!(decode_one(&b), Err(DecodeError::Malformed { .. })));
}

#[test]
fn page_data_is_not_copied_on_decode() {
    let page = Bytes::from(vec![7u8; 4096]);
    let m = Message::Pages(Pages {
        req: ReqId(1),
        file: FileHandle(1),
        first_page: 0,
        exclusive: false,
        pages: vec![PageGrant {
            version: 1,
            data: Some(page),
        }],
    });
    let wire = m.to_bytes();
    let mut buf = BytesMut::from(&wire[..]);
    let buf_base = buf.as_ptr() as usize;
    let Some(Message::Pages(p)) = decode_frame(&mut buf, HARD_MAX_FRAME).unwrap() else {
        panic!()
    };
    let data = p.pages[0].data.as_ref().unwrap();
    let at = data.as_ptr() as usize;
    assert!(
        at >= buf_base && at < buf_base + wire.len(),
        "page data points into the receive buffer"
    );
}
