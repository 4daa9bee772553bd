//! What operations come to: the untyped [`Completion`] that the drive loop
//! carries in [`Event::Completed`](super::Event::Completed), and the typed
//! view of it that each command hands back ([`Pending`], [`Started`]).
//!
//! Every command knows what its operation completes with, so it returns a
//! `Pending<T>` that turns the completion into a `T`
//! ([`Pending::finish`]): an adapter routes completions by [`OpId`] and
//! never inspects them, and no adapter has to say what to do with a
//! completion of the wrong kind.

use std::fmt;

use bytes::Bytes;

use super::{MappingId, OpError, OpId};

/// The result of a completed operation, as the drive loop carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Completion {
    /// [`Client::map`](super::Client::map) succeeded.
    Mapped {
        /// The new mapping.
        mapping: MappingId,
        /// Its length in bytes.
        len: u64,
        /// The file's length when it was mapped.
        file_len: u64,
    },
    /// [`Client::read`](super::Client::read): the bytes.
    Read(Bytes),
    /// [`Client::read_pages`](super::Client::read_pages): the bytes, in
    /// order, as slices of the cached pages (no copy in the core; the
    /// adapter copies once into the caller's buffer).
    ReadPages(Vec<Bytes>),
    /// [`Client::write`](super::Client::write) completed: every later read
    /// anywhere sees it.
    Written,
    /// [`Client::sync`](super::Client::sync): every write completed before
    /// it is on disk.
    Synced,
    /// [`Client::unmap`](super::Client::unmap).
    Unmapped,
    /// [`Client::set_len`](super::Client::set_len).
    LenSet {
        /// The new length.
        len: u64,
    },
    /// [`Client::atomic`](super::Client::atomic).
    Atomic {
        /// The word before the operation.
        previous: u64,
        /// False when a compare-exchange found another value.
        applied: bool,
    },
    /// [`Client::close`](super::Client::close): everything was written back
    /// and the server told.
    Closed,
    /// [`Client::memory_fault`](super::Client::memory_fault): the page is in
    /// memory, in the state needed.
    FaultResolved,
    /// [`Client::wait_connected`](super::Client::wait_connected): a
    /// handshake completed.
    Connected,
    /// [`Client::wait_while`](super::Client::wait_while): the word's new
    /// value, or `None` when the timeout passed first.
    Waited(Option<u64>),
}

/// A new mapping: what [`Client::map`](super::Client::map) completes with.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// The mapping.
    pub mapping: MappingId,
    /// Its length in bytes.
    pub len: u64,
    /// The file's length when it was mapped.
    pub file_len: u64,
}

/// What a read into the caller's buffer came to
/// ([`Client::read_into`](super::Client::read_into)): finish it with
/// [`ReadPages::copy_into`] on the same buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPages(Option<Vec<Bytes>>);

impl ReadPages {
    /// The buffer was filled from the cache already.
    pub(crate) fn filled() -> Self {
        ReadPages(None)
    }

    /// The bytes read, as the pages' own bytes sliced, in order, without a
    /// copy: what a read started with
    /// [`Client::read_pages`](super::Client::read_pages) completes with, for
    /// a caller that writes them out with vectored IO. Empty for a read the
    /// cache already filled.
    pub fn into_slices(self) -> Vec<Bytes> {
        self.0.unwrap_or_default()
    }

    /// Copies the pages' bytes into `buf` (nothing, if the cache already
    /// filled it). `buf` must be the buffer the read was started with.
    pub fn copy_into(self, buf: &mut [u8]) -> Result<(), OpError> {
        let Some(parts) = self.0 else {
            return Ok(());
        };
        let mut at = 0;
        for p in &parts {
            let Some(dst) = buf.get_mut(at..at + p.len()) else {
                break;
            };
            dst.copy_from_slice(p);
            at += p.len();
        }
        if at == buf.len() {
            Ok(())
        } else {
            let got: usize = parts.iter().map(Bytes::len).sum();
            Err(OpError::Internal(format!(
                "a read of {} bytes completed with {got}",
                buf.len()
            )))
        }
    }
}

/// An operation in progress whose result is a `T`: the [`OpId`] its
/// [`Event::Completed`](super::Event::Completed) will carry, and how to read
/// that completion ([`Pending::finish`]).
#[must_use = "an operation's result arrives as an Event::Completed with this id"]
pub struct Pending<T> {
    op: OpId,
    read: fn(Completion) -> Result<T, Completion>,
}

impl<T> Pending<T> {
    fn new(op: OpId, read: fn(Completion) -> Result<T, Completion>) -> Self {
        Pending { op, read }
    }

    /// The operation's id, as its completion event names it.
    pub fn id(&self) -> OpId {
        self.op
    }

    /// The operation's result, from the `result` its
    /// [`Event::Completed`](super::Event::Completed) carried.
    pub fn finish(self, result: Result<Completion, OpError>) -> Result<T, OpError> {
        (self.read)(result?)
            .map_err(|c| OpError::Internal(format!("operation {} completed with {c:?}", self.op.0)))
    }
}

impl<T> Clone for Pending<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Pending<T> {}

impl<T> fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pending").field(&self.op).finish()
    }
}

impl<T> From<Pending<T>> for OpId {
    fn from(p: Pending<T>) -> OpId {
        p.op
    }
}

impl<T> PartialEq<OpId> for Pending<T> {
    fn eq(&self, other: &OpId) -> bool {
        self.op == *other
    }
}

impl<T> PartialEq<Pending<T>> for OpId {
    fn eq(&self, other: &Pending<T>) -> bool {
        *self == other.op
    }
}

/// A function that reads one kind of completion and hands any other back.
macro_rules! reads {
    ($pat:pat => $val:expr) => {
        |c| match c {
            $pat => Ok($val),
            other => Err(other),
        }
    };
}

/// How each command's completion reads.
impl Pending<Mapped> {
    pub(crate) fn mapped(op: OpId) -> Self {
        Pending::new(
            op,
            reads!(Completion::Mapped { mapping, len, file_len } => Mapped { mapping, len, file_len }),
        )
    }
}

impl Pending<Bytes> {
    pub(crate) fn read(op: OpId) -> Self {
        Pending::new(op, reads!(Completion::Read(b) => b))
    }
}

impl Pending<ReadPages> {
    pub(crate) fn read_pages(op: OpId) -> Self {
        Pending::new(
            op,
            reads!(Completion::ReadPages(parts) => ReadPages(Some(parts))),
        )
    }
}

impl Pending<u64> {
    pub(crate) fn len_set(op: OpId) -> Self {
        Pending::new(op, reads!(Completion::LenSet { len } => len))
    }
}

impl Pending<Option<u64>> {
    pub(crate) fn waited(op: OpId) -> Self {
        Pending::new(op, reads!(Completion::Waited(v) => v))
    }
}

impl Pending<(u64, bool)> {
    pub(crate) fn atomic(op: OpId) -> Self {
        Pending::new(
            op,
            reads!(Completion::Atomic { previous, applied } => (previous, applied)),
        )
    }
}

impl Pending<()> {
    pub(crate) fn written(op: OpId) -> Self {
        Pending::new(op, reads!(Completion::Written => ()))
    }

    pub(crate) fn synced(op: OpId) -> Self {
        Pending::new(op, reads!(Completion::Synced => ()))
    }

    pub(crate) fn unmapped(op: OpId) -> Self {
        Pending::new(op, reads!(Completion::Unmapped => ()))
    }

    pub(crate) fn closed(op: OpId) -> Self {
        Pending::new(op, reads!(Completion::Closed => ()))
    }

    pub(crate) fn fault_resolved(op: OpId) -> Self {
        Pending::new(op, reads!(Completion::FaultResolved => ()))
    }

    pub(crate) fn connected(op: OpId) -> Self {
        Pending::new(op, reads!(Completion::Connected => ()))
    }
}

/// A command that may finish on the spot: served from the cache
/// ([`Started::Done`]), or started as an operation that completes later
/// ([`Started::Waiting`]).
#[derive(Debug)]
#[must_use = "a waiting operation's result arrives as an Event::Completed"]
pub enum Started<T> {
    /// Finished without waiting.
    Done(T),
    /// Started; completes as an [`Event::Completed`](super::Event::Completed).
    Waiting(Pending<T>),
}

impl<T> From<Pending<T>> for Started<T> {
    fn from(p: Pending<T>) -> Self {
        Started::Waiting(p)
    }
}

/// A command's immediate outcome, for an adapter that runs every command
/// the same way: [`Pending`] and [`Started`] both convert.
pub trait IntoStarted {
    /// What the operation completes with.
    type Output;
    /// As a [`Started`].
    fn into_started(self) -> Started<Self::Output>;
}

impl<T> IntoStarted for Pending<T> {
    type Output = T;
    fn into_started(self) -> Started<T> {
        Started::Waiting(self)
    }
}

impl<T> IntoStarted for Started<T> {
    type Output = T;
    fn into_started(self) -> Started<T> {
        self
    }
}
