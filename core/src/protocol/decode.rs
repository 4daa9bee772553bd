//! Decoding: total, bounded and copy-free.
//!
//! [`decode_frame`] looks at the length prefix first (too few bytes means
//! "read more", never an error), refuses lengths over the limit before
//! anything is allocated, and only then walks the body with one cursor
//! (`Reader`) that reads each field in order and checks each read against
//! the end of the frame. Payloads (page data, paths) are slices of the
//! received buffer, so page data reaches the cache without a copy. No input
//! can make it panic, loop, or allocate more than the frame it was given.
//!
//! The grammar is a fixed sequence of big-endian fields per message type,
//! with counts checked before anything is allocated for them; the standard
//! library's `split_first_chunk` and `from_be_bytes` read the fields (why no
//! parser-combinator crate: docs/ARCHITECTURE.md, "The wire decoder").

use bytes::{Buf, Bytes, BytesMut};

use super::error_code::ErrorCode;
use super::ids::{FileHandle, ReqId, RevId, SessionId, WireMappingId};
use super::message::*;

/// Why bytes could not be decoded. Every variant ends the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix is over the negotiated maximum.
    #[error("frame of {len} bytes is longer than the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// A length prefix of zero: not even a type byte.
    #[error("empty frame (length prefix 0)")]
    Empty,
    /// A type byte this protocol version does not define.
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    /// The body does not match the layout of its type.
    #[error("malformed {message} frame: {reason}")]
    Malformed {
        /// The message type.
        message: &'static str,
        /// What did not fit.
        reason: &'static str,
    },
}

impl DecodeError {
    /// The error code to report to the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            _ => ErrorCode::Malformed,
        }
    }
}

/// Checks whether `buf` starts with a whole frame no longer than `max_frame`
/// (the length prefix excluded). Returns the whole frame's length including
/// the prefix, or `None` when more bytes are needed.
pub fn check_frame(buf: &[u8], max_frame: u32) -> Result<Option<usize>, DecodeError> {
    let Some((prefix, _)) = buf.split_first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix);
    if len == 0 {
        return Err(DecodeError::Empty);
    }
    if len > max_frame {
        return Err(DecodeError::FrameTooLarge {
            len,
            max: max_frame,
        });
    }
    let total = 4 + len as usize;
    if buf.len() < total {
        Ok(None)
    } else {
        Ok(Some(total))
    }
}

/// Takes one frame off the front of `buf`.
///
/// `Ok(None)`: not a whole frame yet, read more (nothing is consumed).
/// `Ok(Some(m))`: the frame was consumed. `Err`: the stream is broken.
pub fn decode_frame(buf: &mut BytesMut, max_frame: u32) -> Result<Option<Message>, DecodeError> {
    let Some(total) = check_frame(buf, max_frame)? else {
        return Ok(None);
    };
    let mut frame = buf.split_to(total).freeze();
    frame.advance(4);
    decode_body(frame).map(Some)
}

/// Decodes a frame without its length prefix: the type byte and the body.
pub fn decode_body(frame: Bytes) -> Result<Message, DecodeError> {
    let Some(&kind) = frame.first() else {
        return Err(DecodeError::Empty);
    };
    let name = kind_name(kind).ok_or(DecodeError::UnknownType(kind))?;
    let mut r = Reader {
        frame: &frame,
        pos: 1,
        name,
    };
    let msg = r.message(kind)?;
    if r.pos != frame.len() {
        return Err(r.bad("trailing bytes after the message"));
    }
    Ok(msg)
}

fn kind_name(k: u8) -> Option<&'static str> {
    use kind::*;
    Some(match k {
        HELLO => "Hello",
        AUTHENTICATE => "Authenticate",
        PING => "Ping",
        BYE => "Bye",
        MAP => "Map",
        UNMAP => "Unmap",
        FETCH => "Fetch",
        WRITE_BACK => "WriteBack",
        SYNC => "Sync",
        RELEASE => "Release",
        REVALIDATE => "Revalidate",
        SET_LEN => "SetLen",
        ATOMIC => "Atomic",
        REFRESH => "Refresh",
        INVALIDATE_ACK => "InvalidateAck",
        RECALL_ACK => "RecallAck",
        CHALLENGE => "Challenge",
        WELCOME => "Welcome",
        PONG => "Pong",
        GOODBYE => "Goodbye",
        ERROR => "Error",
        MAPPED => "Mapped",
        UNMAPPED => "Unmapped",
        PAGES => "Pages",
        WRITE_ACK => "WriteAck",
        SYNCED => "Synced",
        REVALIDATED => "Revalidated",
        LEN_SET => "LenSet",
        ATOMIC_DONE => "AtomicDone",
        INVALIDATE => "Invalidate",
        RECALL => "Recall",
        _ => return None,
    })
}

/// Walks one frame field by field, keeping the position so that payloads
/// can be cut out of the frame's `Bytes` without copying.
struct Reader<'a> {
    frame: &'a Bytes,
    pos: usize,
    name: &'static str,
}

type Res<T> = Result<T, DecodeError>;

impl Reader<'_> {
    fn bad(&self, reason: &'static str) -> DecodeError {
        DecodeError::Malformed {
            message: self.name,
            reason,
        }
    }

    fn remaining(&self) -> usize {
        self.frame.len() - self.pos
    }

    /// The next `N` bytes, as an array.
    fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        match self.frame[self.pos..].split_first_chunk::<N>() {
            Some((a, _)) => {
                self.pos += N;
                Ok(*a)
            }
            None => Err(self.bad("frame ends inside a field")),
        }
    }

    fn u8(&mut self) -> Res<u8> {
        self.array().map(u8::from_be_bytes)
    }
    fn u16(&mut self) -> Res<u16> {
        self.array().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Res<u32> {
        self.array().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Res<u64> {
        self.array().map(u64::from_be_bytes)
    }

    fn flag(&mut self) -> Res<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.bad("a boolean field is neither 0 nor 1")),
        }
    }

    /// `n` bytes as a slice of the frame.
    fn bytes(&mut self, n: usize) -> Res<Bytes> {
        if n > self.remaining() {
            return Err(self.bad("a length field points past the end of the frame"));
        }
        let b = self.frame.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    fn str16(&mut self) -> Res<Bytes> {
        let n = self.u16()? as usize;
        self.bytes(n)
    }

    /// Refuses counts whose entries cannot fit in what is left of the frame,
    /// before anything is allocated for them.
    fn check_count(&self, count: usize, min_entry: usize) -> Res<()> {
        match count.checked_mul(min_entry) {
            Some(n) if n <= self.remaining() => Ok(()),
            _ => Err(self.bad("entry count larger than the frame can hold")),
        }
    }

    fn patches(&mut self) -> Res<Vec<PagePatch>> {
        let count = self.u16()? as usize;
        self.check_count(count, 16)?;
        let mut v = Vec::with_capacity(count);
        for _ in 0..count {
            let page = self.u64()?;
            let offset = self.u32()?;
            let len = self.u32()? as usize;
            let data = self.bytes(len)?;
            v.push(PagePatch { page, offset, data });
        }
        Ok(v)
    }

    fn message(&mut self, k: u8) -> Res<Message> {
        use kind::*;
        Ok(match k {
            HELLO => {
                let version = self.u16()?;
                let max_frame = self.u32()?;
                let client_nonce = self.array()?;
                let client_name = self.str16()?;
                let resume = if self.flag()? {
                    Some(Resume {
                        session: SessionId(self.u64()?),
                        token: self.array()?,
                        epoch: self.u64()?,
                    })
                } else {
                    None
                };
                Message::Hello(Hello {
                    version,
                    max_frame,
                    client_nonce,
                    client_name,
                    resume,
                })
            }
            AUTHENTICATE => Message::Authenticate(Authenticate {
                proof: self.array()?,
            }),
            PING => Message::Ping(Ping { nonce: self.u64()? }),
            BYE => Message::Bye,
            MAP => Message::Map(Map {
                req: ReqId(self.u64()?),
                flags: self.u8()?,
                offset: self.u64()?,
                len: self.u64()?,
                path: self.str16()?,
            }),
            UNMAP => Message::Unmap(Unmap {
                req: ReqId(self.u64()?),
                mapping: WireMappingId(self.u32()?),
            }),
            FETCH => Message::Fetch(Fetch {
                req: ReqId(self.u64()?),
                mapping: WireMappingId(self.u32()?),
                first_page: self.u64()?,
                count: self.u32()?,
                flags: self.u8()?,
            }),
            WRITE_BACK => Message::WriteBack(WriteBack {
                req: ReqId(self.u64()?),
                mapping: WireMappingId(self.u32()?),
                patches: self.patches()?,
            }),
            SYNC => Message::Sync(Sync {
                req: ReqId(self.u64()?),
                mapping: WireMappingId(self.u32()?),
            }),
            RELEASE => Message::Release(Release {
                file: FileHandle(self.u32()?),
                first_page: self.u64()?,
                count: self.u32()?,
            }),
            REVALIDATE => {
                let req = ReqId(self.u64()?);
                let mapping = WireMappingId(self.u32()?);
                let count = self.u32()? as usize;
                self.check_count(count, 16)?;
                let mut pages = Vec::with_capacity(count);
                for _ in 0..count {
                    pages.push(PageVersion {
                        page: self.u64()?,
                        version: self.u64()?,
                    });
                }
                Message::Revalidate(Revalidate {
                    req,
                    mapping,
                    pages,
                })
            }
            REFRESH => {
                let req = ReqId(self.u64()?);
                let mapping = WireMappingId(self.u32()?);
                let first_page = self.u64()?;
                let count = self.u32()? as usize;
                self.check_count(count, 16)?;
                let mut digests = Vec::with_capacity(count);
                for _ in 0..count {
                    digests.push(PageDigest(self.array()?));
                }
                Message::Refresh(Refresh {
                    req,
                    mapping,
                    first_page,
                    digests,
                })
            }
            SET_LEN => Message::SetLen(SetLen {
                req: ReqId(self.u64()?),
                create: self.flag()?,
                len: self.u64()?,
                path: self.str16()?,
            }),
            ATOMIC => {
                let req = ReqId(self.u64()?);
                let mapping = WireMappingId(self.u32()?);
                let offset = self.u64()?;
                let op = self.u8()?;
                let a = self.u64()?;
                let b = self.u64()?;
                let op = match (op, b) {
                    (1, 0) => AtomicOp::FetchAdd(a),
                    (2, 0) => AtomicOp::Swap(a),
                    (3, expected) => AtomicOp::CompareExchange { expected, new: a },
                    (1 | 2, _) => {
                        return Err(self.bad("unused operand of fetch-add or swap is not zero"));
                    }
                    _ => return Err(self.bad("unknown atomic operation")),
                };
                Message::Atomic(Atomic {
                    req,
                    mapping,
                    offset,
                    op,
                })
            }
            INVALIDATE_ACK => Message::InvalidateAck(InvalidateAck {
                rev: RevId(self.u64()?),
            }),
            RECALL_ACK => Message::RecallAck(RecallAck {
                rev: RevId(self.u64()?),
                patches: self.patches()?,
            }),
            CHALLENGE => Message::Challenge(Challenge {
                server_nonce: self.array()?,
            }),
            WELCOME => {
                let version = self.u16()?;
                let status = ResumeStatus::from_u8(self.u8()?)
                    .ok_or_else(|| self.bad("unknown resume status"))?;
                Message::Welcome(Welcome {
                    version,
                    status,
                    session: SessionId(self.u64()?),
                    token: self.array()?,
                    epoch: self.u64()?,
                    page_size: self.u32()?,
                    lease_ms: self.u32()?,
                    max_frame: self.u32()?,
                    max_pages_per_request: self.u32()?,
                    max_inflight: self.u32()?,
                    max_mappings: self.u32()?,
                    rights: self.u8()?,
                    rev_acked: RevId(self.u64()?),
                    server_proof: self.array()?,
                })
            }
            PONG => Message::Pong(Pong {
                nonce: self.u64()?,
                renewed: self.flag()?,
                rev_acked: RevId(self.u64()?),
            }),
            GOODBYE => Message::Goodbye(Goodbye {
                code: ErrorCode::from_u16(self.u16()?),
                message: self.str16()?,
            }),
            ERROR => Message::Error(ErrorMsg {
                req: ReqId(self.u64()?),
                code: ErrorCode::from_u16(self.u16()?),
                fatal: self.flag()?,
                message: self.str16()?,
            }),
            MAPPED => Message::Mapped(Mapped {
                req: ReqId(self.u64()?),
                mapping: WireMappingId(self.u32()?),
                file: FileHandle(self.u32()?),
                file_len: self.u64()?,
            }),
            UNMAPPED => Message::Unmapped(Unmapped {
                req: ReqId(self.u64()?),
            }),
            PAGES => {
                let req = ReqId(self.u64()?);
                let file = FileHandle(self.u32()?);
                let first_page = self.u64()?;
                let exclusive = self.flag()?;
                let count = self.u32()? as usize;
                self.check_count(count, 9)?;
                let mut heads = Vec::with_capacity(count);
                for _ in 0..count {
                    heads.push((self.u64()?, self.flag()?));
                }
                let page_len = self.u32()? as usize;
                let with_data = heads.iter().filter(|h| h.1).count();
                if with_data == 0 && page_len != 0 {
                    return Err(self.bad("page length set but no page carries data"));
                }
                if with_data.checked_mul(page_len) != Some(self.remaining()) {
                    return Err(self.bad("page data does not match the page count and length"));
                }
                let mut pages = Vec::with_capacity(count);
                for (version, has) in heads {
                    let data = if has {
                        Some(self.bytes(page_len)?)
                    } else {
                        None
                    };
                    pages.push(PageGrant { version, data });
                }
                Message::Pages(Pages {
                    req,
                    file,
                    first_page,
                    exclusive,
                    pages,
                })
            }
            WRITE_ACK => {
                let req = ReqId(self.u64()?);
                let count = self.u16()? as usize;
                self.check_count(count, 8)?;
                let mut versions = Vec::with_capacity(count);
                for _ in 0..count {
                    versions.push(self.u64()?);
                }
                Message::WriteAck(WriteAck { req, versions })
            }
            SYNCED => Message::Synced(Synced {
                req: ReqId(self.u64()?),
            }),
            REVALIDATED => {
                let req = ReqId(self.u64()?);
                let count = self.u32()?;
                let valid = self.bytes(count.div_ceil(8) as usize)?;
                Message::Revalidated(Revalidated { req, count, valid })
            }
            LEN_SET => Message::LenSet(LenSet {
                req: ReqId(self.u64()?),
                len: self.u64()?,
            }),
            ATOMIC_DONE => Message::AtomicDone(AtomicDone {
                req: ReqId(self.u64()?),
                previous: self.u64()?,
                applied: self.flag()?,
            }),
            INVALIDATE => Message::Invalidate(Invalidate {
                rev: RevId(self.u64()?),
                file: FileHandle(self.u32()?),
                first_page: self.u64()?,
                count: self.u32()?,
            }),
            RECALL => Message::Recall(Recall {
                rev: RevId(self.u64()?),
                file: FileHandle(self.u32()?),
                first_page: self.u64()?,
                count: self.u32()?,
                downgrade: self.flag()?,
            }),
            other => return Err(DecodeError::UnknownType(other)),
        })
    }
}
