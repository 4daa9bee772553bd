//! Encoding: every message goes straight into the caller's buffer.
//!
//! A frame is `len: u32` (big-endian, the number of bytes after it), then the
//! type byte, then the body. Page data is never copied when encoding into a
//! [`ChunkQueue`]: large payloads are queued as their own `Bytes`, so a page
//! read from disk reaches the socket as the same allocation.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use super::message::*;

/// Payloads at least this long are queued as their own chunk instead of
/// being copied next to the header.
const ZERO_COPY_MIN: usize = 256;

/// Something an encoder writes into.
trait Out {
    fn u8(&mut self, v: u8);
    fn u16(&mut self, v: u16);
    fn u32(&mut self, v: u32);
    fn u64(&mut self, v: u64);
    fn slice(&mut self, v: &[u8]);
    fn payload(&mut self, v: &Bytes);
}

/// Counts bytes, to fill in the length prefix before writing.
struct Counter(usize);

impl Out for Counter {
    fn u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn u16(&mut self, _: u16) {
        self.0 += 2;
    }
    fn u32(&mut self, _: u32) {
        self.0 += 4;
    }
    fn u64(&mut self, _: u64) {
        self.0 += 8;
    }
    fn slice(&mut self, v: &[u8]) {
        self.0 += v.len();
    }
    fn payload(&mut self, v: &Bytes) {
        self.0 += v.len();
    }
}

impl<B: BufMut> Out for B {
    fn u8(&mut self, v: u8) {
        self.put_u8(v)
    }
    fn u16(&mut self, v: u16) {
        self.put_u16(v)
    }
    fn u32(&mut self, v: u32) {
        self.put_u32(v)
    }
    fn u64(&mut self, v: u64) {
        self.put_u64(v)
    }
    fn slice(&mut self, v: &[u8]) {
        self.put_slice(v)
    }
    fn payload(&mut self, v: &Bytes) {
        self.put_slice(v)
    }
}

/// An outgoing byte stream kept as a queue of chunks: small fields are
/// gathered in one scratch buffer, large payloads are queued by reference.
#[derive(Debug, Default)]
pub struct ChunkQueue {
    scratch: BytesMut,
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl ChunkQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one encoded frame.
    pub fn push_message(&mut self, msg: &Message) {
        let mut w = ChunkWriter { q: self };
        write_frame(msg, &mut w);
        self.flush_scratch();
    }

    /// Appends raw bytes (an already-encoded frame).
    pub fn push_bytes(&mut self, b: Bytes) {
        self.flush_scratch();
        if !b.is_empty() {
            self.len += b.len();
            self.chunks.push_back(b);
        }
    }

    /// The next chunk to write.
    pub fn pop(&mut self) -> Option<Bytes> {
        self.flush_scratch();
        let c = self.chunks.pop_front()?;
        self.len -= c.len();
        Some(c)
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len + self.scratch.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.scratch.clear();
        self.chunks.clear();
        self.len = 0;
    }

    fn flush_scratch(&mut self) {
        if !self.scratch.is_empty() {
            let b = self.scratch.split().freeze();
            self.len += b.len();
            self.chunks.push_back(b);
        }
    }
}

struct ChunkWriter<'a> {
    q: &'a mut ChunkQueue,
}

impl Out for ChunkWriter<'_> {
    fn u8(&mut self, v: u8) {
        self.q.scratch.put_u8(v)
    }
    fn u16(&mut self, v: u16) {
        self.q.scratch.put_u16(v)
    }
    fn u32(&mut self, v: u32) {
        self.q.scratch.put_u32(v)
    }
    fn u64(&mut self, v: u64) {
        self.q.scratch.put_u64(v)
    }
    fn slice(&mut self, v: &[u8]) {
        self.q.scratch.put_slice(v)
    }
    fn payload(&mut self, v: &Bytes) {
        if v.len() >= ZERO_COPY_MIN {
            self.q.flush_scratch();
            self.q.len += v.len();
            self.q.chunks.push_back(v.clone());
        } else {
            self.q.scratch.put_slice(v)
        }
    }
}

impl Message {
    /// Encodes the whole frame (length prefix included) into `dst`.
    pub fn encode<B: BufMut>(&self, dst: &mut B) {
        write_frame(self, dst);
    }

    /// Encodes the whole frame into a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.frame_len());
        self.encode(&mut b);
        b.freeze()
    }

    /// The length of the whole frame, length prefix included.
    pub fn frame_len(&self) -> usize {
        let mut c = Counter(0);
        write_body(self, &mut c);
        4 + 1 + c.0
    }
}

fn write_frame(msg: &Message, out: &mut impl Out) {
    let mut c = Counter(0);
    write_body(msg, &mut c);
    // Frames longer than u32::MAX cannot be built from the bounded messages
    // the state machines create; saturate rather than wrap just in case.
    out.u32(u32::try_from(1 + c.0).unwrap_or(u32::MAX));
    out.u8(msg.kind());
    write_body(msg, out);
}

fn str16(out: &mut impl Out, s: &Bytes) {
    // Lengths are validated by the senders (paths at most 4096 bytes,
    // messages truncated); cut defensively so the length always matches.
    let n = s.len().min(u16::MAX as usize);
    out.u16(n as u16);
    out.slice(&s[..n]);
}

fn patches(out: &mut impl Out, ps: &[PagePatch]) {
    out.u16(ps.len().min(u16::MAX as usize) as u16);
    for p in ps.iter().take(u16::MAX as usize) {
        out.u64(p.page);
        out.u32(p.offset);
        out.u32(p.data.len() as u32);
        out.payload(&p.data);
    }
}

fn write_body(msg: &Message, out: &mut impl Out) {
    match msg {
        Message::Hello(m) => {
            out.u16(m.version);
            out.u32(m.max_frame);
            out.slice(&m.client_nonce);
            str16(out, &m.client_name);
            match &m.resume {
                None => out.u8(0),
                Some(r) => {
                    out.u8(1);
                    out.u64(r.session.0);
                    out.slice(&r.token);
                    out.u64(r.epoch);
                }
            }
        }
        Message::Authenticate(m) => out.slice(&m.proof),
        Message::Ping(m) => out.u64(m.nonce),
        Message::Bye => {}
        Message::Map(m) => {
            out.u64(m.req.0);
            out.u8(m.flags);
            out.u64(m.offset);
            out.u64(m.len);
            str16(out, &m.path);
        }
        Message::Unmap(m) => {
            out.u64(m.req.0);
            out.u32(m.mapping.0);
        }
        Message::Fetch(m) => {
            out.u64(m.req.0);
            out.u32(m.mapping.0);
            out.u64(m.first_page);
            out.u32(m.count);
            out.u8(m.flags);
        }
        Message::WriteBack(m) => {
            out.u64(m.req.0);
            out.u32(m.mapping.0);
            patches(out, &m.patches);
        }
        Message::Sync(m) => {
            out.u64(m.req.0);
            out.u32(m.mapping.0);
        }
        Message::Release(m) => {
            out.u32(m.file.0);
            out.u64(m.first_page);
            out.u32(m.count);
        }
        Message::Revalidate(m) => {
            out.u64(m.req.0);
            out.u32(m.mapping.0);
            out.u32(m.pages.len() as u32);
            for p in &m.pages {
                out.u64(p.page);
                out.u64(p.version);
            }
        }
        Message::Refresh(m) => {
            out.u64(m.req.0);
            out.u32(m.mapping.0);
            out.u64(m.first_page);
            out.u32(m.digests.len() as u32);
            for d in &m.digests {
                out.slice(&d.0);
            }
        }
        Message::SetLen(m) => {
            out.u64(m.req.0);
            out.u8(m.create as u8);
            out.u64(m.len);
            str16(out, &m.path);
        }
        Message::Atomic(m) => {
            out.u64(m.req.0);
            out.u32(m.mapping.0);
            out.u64(m.offset);
            let (op, a, b) = match m.op {
                AtomicOp::FetchAdd(v) => (1, v, 0),
                AtomicOp::Swap(v) => (2, v, 0),
                AtomicOp::CompareExchange { expected, new } => (3, new, expected),
            };
            out.u8(op);
            out.u64(a);
            out.u64(b);
        }
        Message::InvalidateAck(m) => out.u64(m.rev.0),
        Message::RecallAck(m) => {
            out.u64(m.rev.0);
            patches(out, &m.patches);
        }
        Message::Challenge(m) => out.slice(&m.server_nonce),
        Message::Welcome(m) => {
            out.u16(m.version);
            out.u8(m.status.to_u8());
            out.u64(m.session.0);
            out.slice(&m.token);
            out.u64(m.epoch);
            out.u32(m.page_size);
            out.u32(m.lease_ms);
            out.u32(m.max_frame);
            out.u32(m.max_pages_per_request);
            out.u32(m.max_inflight);
            out.u32(m.max_mappings);
            out.u8(m.rights);
            out.u64(m.rev_acked.0);
            out.slice(&m.server_proof);
        }
        Message::Pong(m) => {
            out.u64(m.nonce);
            out.u8(m.renewed as u8);
            out.u64(m.rev_acked.0);
        }
        Message::Goodbye(m) => {
            out.u16(m.code.to_u16());
            str16(out, &m.message);
        }
        Message::Error(m) => {
            out.u64(m.req.0);
            out.u16(m.code.to_u16());
            out.u8(m.fatal as u8);
            str16(out, &m.message);
        }
        Message::Mapped(m) => {
            out.u64(m.req.0);
            out.u32(m.mapping.0);
            out.u32(m.file.0);
            out.u64(m.file_len);
        }
        Message::Unmapped(m) => out.u64(m.req.0),
        Message::Pages(m) => {
            out.u64(m.req.0);
            out.u32(m.file.0);
            out.u64(m.first_page);
            out.u8(m.exclusive as u8);
            out.u32(m.pages.len() as u32);
            for p in &m.pages {
                out.u64(p.version);
                out.u8(p.data.is_some() as u8);
            }
            let page_len = m
                .pages
                .iter()
                .find_map(|p| p.data.as_ref().map(|d| d.len()));
            out.u32(page_len.unwrap_or(0) as u32);
            for p in &m.pages {
                if let Some(d) = &p.data {
                    out.payload(d);
                }
            }
        }
        Message::WriteAck(m) => {
            out.u64(m.req.0);
            out.u16(m.versions.len() as u16);
            for v in &m.versions {
                out.u64(*v);
            }
        }
        Message::Synced(m) => out.u64(m.req.0),
        Message::Revalidated(m) => {
            out.u64(m.req.0);
            out.u32(m.count);
            out.slice(&m.valid);
        }
        Message::LenSet(m) => {
            out.u64(m.req.0);
            out.u64(m.len);
        }
        Message::AtomicDone(m) => {
            out.u64(m.req.0);
            out.u64(m.previous);
            out.u8(m.applied as u8);
        }
        Message::Invalidate(m) => {
            out.u64(m.rev.0);
            out.u32(m.file.0);
            out.u64(m.first_page);
            out.u32(m.count);
        }
        Message::Recall(m) => {
            out.u64(m.rev.0);
            out.u32(m.file.0);
            out.u64(m.first_page);
            out.u32(m.count);
            out.u8(m.downgrade as u8);
        }
    }
}
