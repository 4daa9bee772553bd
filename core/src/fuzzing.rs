//! Structure-aware inputs for the fuzzers in `fuzz/` (only with `--cfg fuzzing`).
//!
//! [`Arbitrary`] for [`Message`] builds every message in its canonical form,
//! the one the encoder writes and the decoder gives back, so a fuzz target
//! can demand `decode(encode(m)) == m` exactly:
//!
//! * strings and payloads fit their length fields (`u16` counts, `u16` path
//!   and message lengths);
//! * every data block of a [`Pages`] message has the same length;
//! * [`Revalidated::valid`] is `ceil(count / 8)` bytes;
//! * [`ErrorCode`]s come from [`ErrorCode::from_u16`], so `Unknown(v)` never
//!   names a known code;
//! * [`AtomicOp::FetchAdd`] and [`AtomicOp::Swap`] have no second operand by
//!   construction.
//!
//! Sizes stay small (tens of entries, a few KiB of payload) so that one
//! fuzz input yields many messages rather than one huge one.

use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::Bytes;

use crate::protocol::*;

/// Most entries in a generated list (patches, pages, versions).
const MAX_ENTRIES: usize = 24;

/// Most bytes in a generated string or payload.
const MAX_PAYLOAD: usize = 4096;

/// Up to `max` bytes taken from the input, as `Bytes`.
fn bytes_up_to(u: &mut Unstructured<'_>, max: usize) -> Result<Bytes> {
    let n = u.int_in_range(0..=max.min(u.len()))?;
    Ok(Bytes::copy_from_slice(u.bytes(n)?))
}

/// A string field: at most `u16::MAX` bytes, usually short.
fn str16(u: &mut Unstructured<'_>) -> Result<Bytes> {
    bytes_up_to(u, MAX_PAYLOAD.min(u16::MAX as usize))
}

/// An entry count: at most [`MAX_ENTRIES`].
fn count(u: &mut Unstructured<'_>) -> Result<usize> {
    u.int_in_range(0..=MAX_ENTRIES)
}

fn patches(u: &mut Unstructured<'_>) -> Result<Vec<PagePatch>> {
    (0..count(u)?)
        .map(|_| {
            Ok(PagePatch {
                page: u.arbitrary()?,
                offset: u.arbitrary()?,
                data: bytes_up_to(u, 512)?,
            })
        })
        .collect()
}

impl<'a> Arbitrary<'a> for ErrorCode {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        // Through the decoder's own mapping: Unknown(v) only for unknown v.
        Ok(ErrorCode::from_u16(u.arbitrary()?))
    }
}

impl<'a> Arbitrary<'a> for AtomicOp {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0..=2u8)? {
            0 => AtomicOp::FetchAdd(u.arbitrary()?),
            1 => AtomicOp::Swap(u.arbitrary()?),
            _ => AtomicOp::CompareExchange {
                expected: u.arbitrary()?,
                new: u.arbitrary()?,
            },
        })
    }
}

impl<'a> Arbitrary<'a> for ResumeStatus {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(*u.choose(&[
            ResumeStatus::New,
            ResumeStatus::Resumed,
            ResumeStatus::ServerRestarted,
            ResumeStatus::Expired,
        ])?)
    }
}

/// A message a client sends (types `0x01..=0x21`).
pub fn client_message(u: &mut Unstructured<'_>) -> Result<Message> {
    let req = |u: &mut Unstructured<'_>| -> Result<ReqId> { Ok(ReqId(u.arbitrary()?)) };
    let mapping =
        |u: &mut Unstructured<'_>| -> Result<WireMappingId> { Ok(WireMappingId(u.arbitrary()?)) };
    Ok(match u.int_in_range(0..=15u8)? {
        0 => Message::Hello(Hello {
            version: u.arbitrary()?,
            max_frame: u.arbitrary()?,
            client_nonce: u.arbitrary()?,
            client_name: str16(u)?,
            resume: if u.arbitrary()? {
                Some(Resume {
                    session: SessionId(u.arbitrary()?),
                    token: u.arbitrary()?,
                    epoch: u.arbitrary()?,
                })
            } else {
                None
            },
        }),
        1 => Message::Authenticate(Authenticate {
            proof: u.arbitrary()?,
        }),
        2 => Message::Ping(Ping {
            nonce: u.arbitrary()?,
        }),
        3 => Message::Bye,
        4 => Message::Map(Map {
            req: req(u)?,
            flags: u.arbitrary()?,
            offset: u.arbitrary()?,
            len: u.arbitrary()?,
            path: str16(u)?,
        }),
        5 => Message::Unmap(Unmap {
            req: req(u)?,
            mapping: mapping(u)?,
        }),
        6 => Message::Fetch(Fetch {
            req: req(u)?,
            mapping: mapping(u)?,
            first_page: u.arbitrary()?,
            count: u.arbitrary()?,
            flags: u.arbitrary()?,
        }),
        7 => Message::WriteBack(WriteBack {
            req: req(u)?,
            mapping: mapping(u)?,
            patches: patches(u)?,
        }),
        8 => Message::Sync(Sync {
            req: req(u)?,
            mapping: mapping(u)?,
        }),
        9 => Message::Release(Release {
            file: FileHandle(u.arbitrary()?),
            first_page: u.arbitrary()?,
            count: u.arbitrary()?,
        }),
        10 => Message::Revalidate(Revalidate {
            req: req(u)?,
            mapping: mapping(u)?,
            pages: (0..count(u)?)
                .map(|_| {
                    Ok(PageVersion {
                        page: u.arbitrary()?,
                        version: u.arbitrary()?,
                    })
                })
                .collect::<Result<_>>()?,
        }),
        11 => Message::SetLen(SetLen {
            req: req(u)?,
            create: u.arbitrary()?,
            len: u.arbitrary()?,
            path: str16(u)?,
        }),
        12 => Message::Atomic(Atomic {
            req: req(u)?,
            mapping: mapping(u)?,
            offset: u.arbitrary()?,
            op: u.arbitrary()?,
        }),
        13 => Message::InvalidateAck(InvalidateAck {
            rev: RevId(u.arbitrary()?),
        }),
        15 => Message::Refresh(Refresh {
            req: req(u)?,
            mapping: mapping(u)?,
            first_page: u.arbitrary()?,
            digests: (0..count(u)?)
                .map(|_| Ok(PageDigest(u.arbitrary()?)))
                .collect::<Result<_>>()?,
        }),
        _ => Message::RecallAck(RecallAck {
            rev: RevId(u.arbitrary()?),
            patches: patches(u)?,
        }),
    })
}

/// A message a server sends (types `0x81..=0xA1`).
pub fn server_message(u: &mut Unstructured<'_>) -> Result<Message> {
    let req = |u: &mut Unstructured<'_>| -> Result<ReqId> { Ok(ReqId(u.arbitrary()?)) };
    Ok(match u.int_in_range(0..=14u8)? {
        0 => Message::Challenge(Challenge {
            server_nonce: u.arbitrary()?,
        }),
        1 => Message::Welcome(Welcome {
            version: u.arbitrary()?,
            status: u.arbitrary()?,
            session: SessionId(u.arbitrary()?),
            token: u.arbitrary()?,
            epoch: u.arbitrary()?,
            page_size: u.arbitrary()?,
            lease_ms: u.arbitrary()?,
            max_frame: u.arbitrary()?,
            max_pages_per_request: u.arbitrary()?,
            max_inflight: u.arbitrary()?,
            max_mappings: u.arbitrary()?,
            rights: u.arbitrary()?,
            rev_acked: RevId(u.arbitrary()?),
            server_proof: u.arbitrary()?,
        }),
        2 => Message::Pong(Pong {
            nonce: u.arbitrary()?,
            renewed: u.arbitrary()?,
            rev_acked: RevId(u.arbitrary()?),
        }),
        3 => Message::Goodbye(Goodbye {
            code: u.arbitrary()?,
            message: str16(u)?,
        }),
        4 => Message::Error(ErrorMsg {
            req: req(u)?,
            code: u.arbitrary()?,
            fatal: u.arbitrary()?,
            message: str16(u)?,
        }),
        5 => Message::Mapped(Mapped {
            req: req(u)?,
            mapping: WireMappingId(u.arbitrary()?),
            file: FileHandle(u.arbitrary()?),
            file_len: u.arbitrary()?,
        }),
        6 => Message::Unmapped(Unmapped { req: req(u)? }),
        7 => {
            let (req, file, first_page) = (req(u)?, FileHandle(u.arbitrary()?), u.arbitrary()?);
            Message::Pages(pages(u, req, file, first_page, None)?)
        }
        8 => Message::WriteAck(WriteAck {
            req: req(u)?,
            versions: (0..count(u)?)
                .map(|_| u.arbitrary())
                .collect::<Result<_>>()?,
        }),
        9 => Message::Synced(Synced { req: req(u)? }),
        10 => {
            let req = req(u)?;
            revalidated(u, req, None)?
        }
        11 => Message::LenSet(LenSet {
            req: req(u)?,
            len: u.arbitrary()?,
        }),
        12 => Message::AtomicDone(AtomicDone {
            req: req(u)?,
            previous: u.arbitrary()?,
            applied: u.arbitrary()?,
        }),
        13 => Message::Invalidate(Invalidate {
            rev: RevId(u.arbitrary()?),
            file: FileHandle(u.arbitrary()?),
            first_page: u.arbitrary()?,
            count: u.arbitrary()?,
        }),
        _ => Message::Recall(Recall {
            rev: RevId(u.arbitrary()?),
            file: FileHandle(u.arbitrary()?),
            first_page: u.arbitrary()?,
            count: u.arbitrary()?,
            downgrade: u.arbitrary()?,
        }),
    })
}

/// A canonical [`Pages`] reply. With `shape = Some((count, page_size))` it
/// has exactly `count` pages whose data blocks, where present, are
/// `page_size` bytes (a plausible answer to a fetch); otherwise count and
/// block length are arbitrary (but the same for every block).
pub fn pages(
    u: &mut Unstructured<'_>,
    req: ReqId,
    file: FileHandle,
    first_page: PageNo,
    shape: Option<(u32, usize)>,
) -> Result<Pages> {
    let (n, block) = match shape {
        Some((n, ps)) => (n as usize, ps),
        None => (count(u)?, u.int_in_range(0..=MAX_PAYLOAD.min(u.len()))?),
    };
    // One block from the input, varied per page, so large pages cost little input.
    let mut template = vec![0u8; block];
    let avail = u.len().min(block);
    let take = u.int_in_range(0..=avail)?;
    template[..take].copy_from_slice(u.bytes(take)?);
    let exclusive = u.arbitrary()?;
    let mut grants = Vec::with_capacity(n);
    for i in 0..n {
        let data = if u.arbitrary()? {
            let mut d = template.clone();
            if let Some(b) = d.first_mut() {
                *b ^= i as u8;
            }
            Some(Bytes::from(d))
        } else {
            None
        };
        grants.push(PageGrant {
            version: u.arbitrary()?,
            data,
        });
    }
    Ok(Pages {
        req,
        file,
        first_page,
        exclusive,
        pages: grants,
    })
}

/// A canonical [`Revalidated`] reply: `valid` holds `ceil(count / 8)` bytes.
/// With `count = Some(n)` it answers a revalidation of `n` pages.
pub fn revalidated(u: &mut Unstructured<'_>, req: ReqId, count: Option<u32>) -> Result<Message> {
    let count = match count {
        Some(n) => n,
        None => u.int_in_range(0..=(MAX_ENTRIES as u32 * 8))?,
    };
    let valid = (0..count.div_ceil(8))
        .map(|_| u.arbitrary())
        .collect::<Result<Vec<u8>>>()?;
    Ok(Message::Revalidated(Revalidated {
        req,
        count,
        valid: Bytes::from(valid),
    }))
}

/// Any message, client's or server's.
pub fn message(u: &mut Unstructured<'_>) -> Result<Message> {
    if u.arbitrary()? {
        client_message(u)
    } else {
        server_message(u)
    }
}

impl<'a> Arbitrary<'a> for Message {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        message(u)
    }
}
