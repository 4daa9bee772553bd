//! The numbers the server gives its own things, and the kinds of
//! revocation: the vocabulary the directory, the operations and the
//! revocations share (so none of them imports another for it).

/// A file known to the server, by the server's own number.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct FileId(pub(crate) u32);

/// An operation, numbered by the server.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct OpId(pub(crate) u64);

/// What a revocation asks of a page's holder.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum RevKind {
    /// Drop a shared copy.
    Invalidate,
    /// Give back ownership (and dirty data); keep a shared copy if `downgrade`.
    Recall { downgrade: bool },
}
