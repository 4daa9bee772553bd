//! The bytes an adapter has taken from a state machine and not yet written
//! to its socket, handed out as vectored writes.
//!
//! Both transports, client and server, write through it, so how much one
//! write takes ([`MAX_IOVECS`]) and how a short write is accounted for are
//! said once.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// One vectored write hands the socket at most this many chunks.
pub const MAX_IOVECS: usize = 64;

/// Bytes waiting to be written, in order.
#[derive(Debug, Default)]
pub struct Outbox {
    chunks: VecDeque<Bytes>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `b` behind what is already waiting.
    pub fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.chunks.push_back(b);
        }
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Forgets everything waiting (the connection is gone).
    pub fn clear(&mut self) {
        self.chunks.clear();
    }

    /// The front of the queue for one vectored write: at most
    /// [`MAX_IOVECS`] chunks.
    pub fn io_slices(&self) -> Vec<IoSlice<'_>> {
        self.chunks
            .iter()
            .take(MAX_IOVECS)
            .map(|b| IoSlice::new(b))
            .collect()
    }

    /// Drops the first `n` bytes: a write took them.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if n >= front.len() {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    /// What is left, in order (for a writer that takes over).
    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks.into()
    }
}

impl Extend<Bytes> for Outbox {
    fn extend<I: IntoIterator<Item = Bytes>>(&mut self, iter: I) {
        for b in iter {
            self.push(b);
        }
    }
}

impl From<Vec<Bytes>> for Outbox {
    fn from(chunks: Vec<Bytes>) -> Self {
        let mut o = Outbox::new();
        o.extend(chunks);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_write_leaves_the_rest_in_order() {
        let mut o = Outbox::from(vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"defg"),
        ]);
        assert_eq!(o.io_slices().len(), 2, "empty chunks are not queued");
        o.advance(4);
        assert_eq!(o.into_chunks(), vec![Bytes::from_static(b"efg")]);
    }

    #[test]
    fn one_write_takes_at_most_max_iovecs_chunks() {
        let o = Outbox::from(vec![Bytes::from_static(b"x"); MAX_IOVECS + 5]);
        assert_eq!(o.io_slices().len(), MAX_IOVECS);
    }
}
