//! Where a client connection's incoming bytes land, and how its buffers
//! are reused.
//!
//! The client keeps the pages it decodes without copying them: a page in
//! the cache is a slice of the buffer its `Pages` frame was read into. So
//! a buffer cannot be reused while any of its pages is cached, and a
//! streaming reader would take fresh memory from the allocator for every
//! frame and give it back when the cache drops the pages behind it. Fresh
//! memory costs a page fault per 4 KiB (and, in a virtual machine, a fault
//! in the host too): on the 2-core benchmark machine that churn was about a
//! tenth of the client's CPU time in a sequential read.
//!
//! [`RecvBuffer`] keeps the buffers it has read into (up to
//! [`RETAIN_LIMIT`] bytes of them) and, when it needs room for a large
//! frame, reuses the oldest one that nothing points into any more.

use bytes::BytesMut;

pub use super::recycle::RETAIN_LIMIT;
use super::recycle::Recycler;

/// How much an adapter reads from a socket at once (the `chunk` of
/// [`RecvBuffer::make_room`] and [`RecvBuffer::read_space`]): 64 KiB.
pub const READ_CHUNK: usize = 64 * 1024;

/// The largest frame [`RecvBuffer::make_room`] makes room for at once; a
/// larger one (which the core refuses anyway) grows by reads.
const ROOM_MAX: usize = 16 << 20;

/// The most an adapter reserves at once for the rest of a frame arriving in
/// pieces ([`frame_rest`]): frames are at most the negotiated `max_frame`,
/// 2 MiB by default.
pub const FRAME_RESERVE_MAX: usize = 4 << 20;

/// How many bytes the frame at the front of `received` still lacks (its
/// 4-byte length prefix included; 0 while the prefix itself is incomplete),
/// for an adapter that reserves the rest of a frame arriving in pieces at
/// once instead of growing its buffer piece by piece. The length is the
/// peer's claim: reserve for it only once the core has accepted it (it
/// refuses a frame over `max_frame` as soon as it sees the prefix), and
/// bound it.
pub fn frame_rest(received: &[u8]) -> usize {
    match received.first_chunk::<4>() {
        Some(p) => (u32::from_be_bytes(*p) as usize + 4).saturating_sub(received.len()),
        None => 0,
    }
}

/// Where a stream of frames stands: how much of the frame under way has
/// arrived and how much is still to come. An adapter whose reader hands
/// pieces of the stream to another thread keeps one beside its read
/// buffer, so that a frame arriving in pieces can be read into one
/// allocation sized for all of it, and the pieces joined again without a
/// copy ([`BytesMut::unsplit`]).
#[derive(Debug, Default, Clone)]
pub struct FrameCursor {
    /// The length prefix as far as it has arrived.
    prefix: [u8; 4],
    /// Bytes of the frame under way received, its prefix included.
    got: usize,
    /// The frame's whole length, prefix included, once the prefix is in.
    total: Option<usize>,
}

impl FrameCursor {
    /// Moves past `data`, the next bytes of the stream.
    pub fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = match self.total {
                None => {
                    let k = (4 - self.got).min(data.len());
                    self.prefix[self.got..self.got + k].copy_from_slice(&data[..k]);
                    if self.got + k == 4 {
                        self.total = Some(u32::from_be_bytes(self.prefix) as usize + 4);
                    }
                    k
                }
                Some(total) => (total - self.got).min(data.len()),
            };
            self.got += take;
            data = &data[take..];
            if self.total == Some(self.got) {
                *self = Self::default();
            }
        }
    }

    /// How many bytes of the frame under way have arrived (0 between
    /// frames).
    pub fn received(&self) -> usize {
        self.got
    }

    /// How many bytes of the frame under way are still to come: 0 between
    /// frames and while its length prefix is incomplete. The length is the
    /// peer's claim, to be bounded by what the core accepts.
    pub fn rest(&self) -> usize {
        self.total.map_or(0, |t| t - self.got)
    }
}

/// A connection's receive buffer.
///
/// The drive loop calls [`make_room`](Self::make_room) before each read,
/// reads into the spare capacity of [`bytes`](Self::bytes), and hands
/// `bytes()` to the core, which takes whole frames off its front.
#[derive(Debug, Default)]
pub struct RecvBuffer {
    buf: BytesMut,
    /// Buffers read into before; the core may still hold pages that
    /// point into them.
    retired: Recycler,
    /// The allocation size of `buf` (0 until the first read).
    buf_size: usize,
    /// While a large frame is read in place ([`read_space`](Self::read_space)):
    /// how much of `buf` is received; the rest, up to `buf.len()`, is
    /// zero-filled room.
    fill: Option<usize>,
}

impl RecvBuffer {
    /// An empty buffer; nothing is allocated until the first read.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes received and not yet taken by the core.
    pub fn bytes(&mut self) -> &mut BytesMut {
        if let Some(f) = self.fill.take() {
            self.buf.truncate(f);
        }
        &mut self.buf
    }

    /// For a reader that can only read into initialised memory
    /// (`std::io::Read`): where the next read of a large frame goes, the
    /// rest of the frame, zero-filled once for the whole frame rather than
    /// once per read. Report what was read with
    /// [`advance_read`](Self::advance_read); the frame is whole when
    /// [`filling`](Self::filling) turns false.
    pub fn read_space(&mut self, chunk: usize) -> &mut [u8] {
        let f = match self.fill {
            Some(f) => f,
            None => {
                let room = self.make_room(chunk);
                let start = self.buf.len();
                self.buf.resize(start + room, 0);
                self.fill = Some(start);
                start
            }
        };
        &mut self.buf[f..]
    }

    /// `n` bytes were read into [`read_space`](Self::read_space).
    pub fn advance_read(&mut self, n: usize) {
        if let Some(f) = &mut self.fill {
            *f = (*f + n).min(self.buf.len());
            if *f == self.buf.len() {
                self.fill = None;
            }
        }
    }

    /// Whether a large frame is being read in place and is not whole yet
    /// (the core has nothing to decode until it is).
    pub fn filling(&self) -> bool {
        self.fill.is_some()
    }

    /// Forgets what was received (the connection is gone), and the
    /// retired buffers with it.
    pub fn clear(&mut self) {
        self.fill = None;
        self.buf.clear();
        self.retired.clear();
    }

    /// Memory kept in retired buffers, whether or not the core still holds
    /// pages in them.
    pub fn retired_bytes(&self) -> usize {
        self.retired.retired_bytes()
    }

    /// How much room the next read wants: at least `chunk`, and, when the
    /// buffer starts with a frame's length prefix, all of that frame. (The
    /// core takes whole frames off the front, so the buffer always starts
    /// at a frame boundary.)
    pub fn room_wanted(&self, chunk: usize) -> usize {
        self.rest_of_frame().max(chunk)
    }

    fn rest_of_frame(&self) -> usize {
        match self.buf.get(..4) {
            Some(h) => {
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                (len.min(ROOM_MAX) + 4).saturating_sub(self.buf.len())
            }
            None => 0,
        }
    }

    /// Makes room for the next read (see [`room_wanted`](Self::room_wanted))
    /// and returns how much it made. Sizing the buffer for the whole frame
    /// reads a large frame into one allocation instead of copying the
    /// partial frame into a bigger one after every read.
    pub fn make_room(&mut self, chunk: usize) -> usize {
        if let Some(f) = self.fill.take() {
            self.buf.truncate(f);
        }
        let rest = self.rest_of_frame();
        let room = rest.max(chunk);
        let spare = self.buf.capacity() - self.buf.len();
        if spare >= rest && spare >= chunk / 4 {
            return room;
        }
        // Nothing else points into this buffer: it is reused in place.
        if self.buf.try_reclaim(room) {
            return room;
        }
        let need = self.buf.len() + room;
        let (mut next, size) = self.retired.take(need);
        next.extend_from_slice(&self.buf);
        let old = std::mem::replace(&mut self.buf, next);
        let old_size = std::mem::replace(&mut self.buf_size, size);
        self.retired.retire(old, old_size);
        room
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_header(len: u32) -> [u8; 4] {
        len.to_be_bytes()
    }

    #[test]
    fn room_for_a_whole_frame_is_made_at_once() {
        let mut r = RecvBuffer::new();
        r.bytes().extend_from_slice(&frame_header(1 << 20));
        r.bytes().extend_from_slice(&[0; 100]);
        let room = r.make_room(64 * 1024);
        assert_eq!(room, (1 << 20) + 4 - 104);
        assert!(r.bytes().capacity() - r.bytes().len() >= room);
        assert_eq!(&r.bytes()[..4], &frame_header(1 << 20));
        // A small frame: a chunk.
        let mut r = RecvBuffer::new();
        r.bytes().extend_from_slice(&frame_header(8));
        assert_eq!(r.room_wanted(64 * 1024), 64 * 1024);
        // No length prefix yet: a chunk.
        let mut r = RecvBuffer::new();
        assert_eq!(r.make_room(64 * 1024), 64 * 1024);
        assert!(r.bytes().capacity() >= 64 * 1024);
    }

    /// Receives one 1 MiB frame and takes it off, as a drive loop and the
    /// core do: room for a read, the length prefix arrives, room for the
    /// rest of the frame, the rest arrives, the core takes the frame.
    fn receive_frame(r: &mut RecvBuffer) -> bytes::Bytes {
        r.make_room(64 * 1024);
        r.bytes().extend_from_slice(&frame_header(1 << 20));
        r.make_room(64 * 1024);
        let spare = r.bytes().capacity() - r.bytes().len();
        assert!(spare >= 1 << 20, "room for the whole frame");
        r.bytes().resize(4 + (1 << 20), 7);
        r.bytes().split_to(4 + (1 << 20)).freeze()
    }

    #[test]
    fn a_buffer_is_reused_once_nothing_points_into_it() {
        let mut r = RecvBuffer::new();
        let first = receive_frame(&mut r);
        let first_ptr = first.as_ptr();
        let second = receive_frame(&mut r);
        assert_ne!(second.as_ptr(), first_ptr, "the first is still held");
        drop(first);
        let third = receive_frame(&mut r);
        let fourth = receive_frame(&mut r);
        // One of the later frames landed in the first frame's memory.
        assert!(
            [third.as_ptr(), fourth.as_ptr()].contains(&first_ptr),
            "the released buffer was not reused"
        );
        drop((second, third, fourth));
    }

    #[test]
    fn a_large_frame_is_read_in_place_by_a_std_reader() {
        let mut r = RecvBuffer::new();
        let mut wire = frame_header(100_000).to_vec();
        wire.extend((0..100_000u32).map(|i| i as u8));
        let mut src = &wire[..];
        // The length prefix arrives first, through a small read.
        r.bytes().extend_from_slice(&src[..4]);
        src = &src[4..];
        assert!(r.room_wanted(64 * 1024) > 64 * 1024);
        // Then the rest, in reads of 30,000 bytes.
        let mut reads = 0;
        while !src.is_empty() {
            let space = r.read_space(64 * 1024);
            assert_eq!(space.len(), src.len(), "room for exactly the frame");
            let n = src.len().min(30_000);
            space[..n].copy_from_slice(&src[..n]);
            src = &src[n..];
            r.advance_read(n);
            reads += 1;
            assert_eq!(r.filling(), !src.is_empty());
        }
        assert_eq!(reads, 4);
        assert_eq!(&r.bytes()[..], &wire[..]);
        // Taking the bytes before the frame is whole hands over only what
        // was received.
        let mut r = RecvBuffer::new();
        r.bytes().extend_from_slice(&frame_header(100_000));
        r.read_space(64 * 1024)[..10].copy_from_slice(&[9; 10]);
        r.advance_read(10);
        assert!(r.filling());
        assert_eq!(r.bytes().len(), 14);
        assert!(!r.filling());
    }

    #[test]
    fn frame_rest_counts_what_the_front_frame_lacks() {
        assert_eq!(frame_rest(&[]), 0);
        assert_eq!(frame_rest(&[0, 0, 1]), 0, "the prefix is not whole");
        assert_eq!(frame_rest(&[0, 0, 0, 10]), 10);
        assert_eq!(frame_rest(&[0, 0, 0, 10, 1, 2, 3]), 7);
        let whole_and_more = [0, 0, 0, 2, 1, 2, 9, 9, 9];
        assert_eq!(frame_rest(&whole_and_more), 0);
        assert_eq!(frame_rest(&[0xff; 4]), u32::MAX as usize + 4 - 4);
    }

    #[test]
    fn retired_memory_stays_under_the_limit() {
        let mut r = RecvBuffer::new();
        // Every frame is kept, so nothing can be reused.
        let held: Vec<_> = (0..100).map(|_| receive_frame(&mut r)).collect();
        assert!(r.retired_bytes() <= RETAIN_LIMIT);
        assert!(held.iter().all(|f| f.len() == 4 + (1 << 20)));
        r.clear();
        assert_eq!(r.retired_bytes(), 0);
    }

    #[test]
    fn frame_cursor_follows_frames_split_anywhere() {
        // Three frames (bodies of 0, 5 and 70,000 bytes), fed in every
        // split of a few sizes: the cursor's view after each piece matches
        // the frames' boundaries.
        let mut stream = Vec::new();
        for len in [0usize, 5, 70_000] {
            stream.extend_from_slice(&(len as u32).to_be_bytes());
            stream.extend(std::iter::repeat_n(7u8, len));
        }
        let bounds = [4usize, 13, 13 + 70_004];
        for piece in [1usize, 3, 4, 1000, 65_536, stream.len()] {
            let mut c = FrameCursor::default();
            let mut at = 0;
            for chunk in stream.chunks(piece) {
                c.advance(chunk);
                at += chunk.len();
                let start = bounds
                    .iter()
                    .rev()
                    .find(|b| **b <= at)
                    .copied()
                    .unwrap_or(0);
                let end = bounds.iter().find(|b| **b > at).copied();
                assert_eq!(c.received(), at - start, "piece {piece} at {at}");
                let prefix_in = at - start >= 4;
                let want_rest = match end {
                    Some(e) if prefix_in => e - at,
                    _ => 0,
                };
                assert_eq!(c.rest(), want_rest, "piece {piece} at {at}");
            }
        }
    }
}
