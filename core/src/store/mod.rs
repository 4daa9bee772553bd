//! Where the server's bytes live, behind a small trait the adapters implement,
//! and the requests through which the server state machine uses it.
//!
//! The core never calls the store: the disk is an effect, like the network.
//! The server emits [`StoreRequest`]s (`ServerEvent::Store`); the adapter runs
//! each with [`StoreOp::execute`] on a thread where blocking is allowed,
//! several at once if it likes (the server only has requests outstanding at
//! the same time when they commute: different files, or disjoint byte ranges
//! of one), and hands the result back with `Server::handle_store_done`.
//! `rmmap-store` implements [`Store`] over real files with positioned IO,
//! confined beneath the root; [`MemStore`] keeps files in memory and can
//! simulate a crash that loses everything not synced, and a failing disk.

mod mem;
mod request;

pub use mem::{DiskFault, MEM_STORE_MAX_FILE, MemStore};
pub use request::{StoreDone, StoreId, StoreOp, StoreRequest, WriteRun};

use bytes::Bytes;

use crate::path::ExportPath;

/// The name, at the export root, of the file where a server records what the
/// next run of a server over the same export must know (how long to wait
/// before granting writes, the versions it used). Clients cannot map it.
pub const RUN_STATE_NAME: &str = ".rmmap-state";

/// A file as the store knows it (an index into its open-file table).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreFile(pub u64);

/// The identity of the underlying file (for real files: device and inode),
/// so that two paths to one file share one coherence directory.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileKey(pub u64, pub u64);

/// What [`Store::open`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedFile {
    /// The handle for later calls.
    pub file: StoreFile,
    /// The file's identity.
    pub key: FileKey,
    /// Its length in bytes.
    pub len: u64,
    /// Whether the store could open it for writing.
    pub writable: bool,
}

/// Why a store operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such file (and `create` was not asked for).
    #[error("no such file: {0}")]
    NotFound(String),
    /// The path leads outside the export root (a symlink), or the file
    /// system refused access.
    #[error("access denied: {0}")]
    Denied(String),
    /// The path names a directory or something else that is not a file.
    #[error("not a regular file: {0}")]
    NotAFile(String),
    /// The file system refused the name itself (a component too long, ...).
    #[error("bad name: {0}")]
    BadName(String),
    /// A write to a store or file that is read-only.
    #[error("read-only: {0}")]
    ReadOnly(String),
    /// The file system is full (ENOSPC, EDQUOT).
    #[error("no space left: {0}")]
    NoSpace(String),
    /// Any other failure of the file system (EIO, a failed fsync, ...).
    #[error("I/O error: {0}")]
    Io(String),
}

/// How to open a file.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Create the file (empty) if it does not exist.
    pub create: bool,
    /// Open for writing too (falls back to read-only when the file is not
    /// writable, reported in [`OpenedFile::writable`]).
    pub write: bool,
}

/// The server's file system. Every method may block; an adapter calls them
/// from threads where that is allowed, possibly several at once, which is why
/// they take `&self`.
pub trait Store {
    /// Opens `path` beneath the export root. Implementations must refuse
    /// anything that resolves outside the root, symlinks included.
    fn open(&self, path: &ExportPath, opts: OpenOptions) -> Result<OpenedFile, StoreError>;

    /// Opens `path` beneath the sub-directory `scope` of the export root, for
    /// a client confined to it: nothing outside `scope` may be reached, not
    /// even through a symlink to elsewhere under the root. The default joins
    /// the two paths, which is right for stores without symlinks.
    fn open_scoped(
        &self,
        scope: &ExportPath,
        path: &ExportPath,
        opts: OpenOptions,
    ) -> Result<OpenedFile, StoreError> {
        self.open(&path.within(scope), opts)
    }

    /// Reads exactly `len` bytes at `offset`; bytes past the end of the file
    /// read as zeros.
    fn read(&self, file: StoreFile, offset: u64, len: usize) -> Result<Bytes, StoreError>;

    /// Reads like [`read`](Self::read), but only if that needs no waiting
    /// for the disk (every byte is in the operating system's cache):
    /// `None` when it would wait, failed, or the store cannot tell (then
    /// [`read`](Self::read) does it, and reports any error). An adapter may
    /// call this on the thread that drives the core, for small reads, to
    /// save the hand-over to its disk threads and back; a store that blocks
    /// must not answer. The default: `None`.
    fn read_cached(
        &self,
        _file: StoreFile,
        _offset: u64,
        _len: usize,
    ) -> Option<Result<Bytes, StoreError>> {
        None
    }

    /// Writes `data` at `offset`.
    fn write(&self, file: StoreFile, offset: u64, data: &[u8]) -> Result<(), StoreError>;

    /// Writes `parts`, one after another, at `offset`: a write-back of
    /// consecutive pages, whose data lie apart in the frame they came in.
    /// The default joins them and calls [`write`](Self::write); a store
    /// that can write them as they are (`pwritev`) saves that copy.
    fn write_vectored(
        &self,
        file: StoreFile,
        offset: u64,
        parts: &[&[u8]],
    ) -> Result<(), StoreError> {
        self.write(file, offset, &parts.concat())
    }

    /// Truncates or extends (with zeros) the file.
    fn set_len(&self, file: StoreFile, len: u64) -> Result<(), StoreError>;

    /// Makes every write to the file durable (fsync).
    fn sync(&self, file: StoreFile) -> Result<(), StoreError>;

    /// Forgets the handle.
    fn close(&self, file: StoreFile);

    /// The run state the last server of this export recorded
    /// ([`RUN_STATE_NAME`]), or `None` if no server ever recorded one.
    fn load_run_state(&self) -> Result<Option<Bytes>, StoreError>;

    /// Replaces the run state atomically and durably: after a crash at any
    /// moment the file holds the old state or the new one, whole.
    fn save_run_state(&self, state: &[u8]) -> Result<(), StoreError>;
}

macro_rules! forward_store {
    ($($ty:ty),*) => {$(
        impl<S: Store + ?Sized> Store for $ty {
            fn open(&self, path: &ExportPath, opts: OpenOptions) -> Result<OpenedFile, StoreError> {
                (**self).open(path, opts)
            }
            fn open_scoped(
                &self,
                scope: &ExportPath,
                path: &ExportPath,
                opts: OpenOptions,
            ) -> Result<OpenedFile, StoreError> {
                (**self).open_scoped(scope, path, opts)
            }
            fn read(&self, file: StoreFile, offset: u64, len: usize) -> Result<Bytes, StoreError> {
                (**self).read(file, offset, len)
            }
            fn read_cached(
                &self,
                file: StoreFile,
                offset: u64,
                len: usize,
            ) -> Option<Result<Bytes, StoreError>> {
                (**self).read_cached(file, offset, len)
            }
            fn write(&self, file: StoreFile, offset: u64, data: &[u8]) -> Result<(), StoreError> {
                (**self).write(file, offset, data)
            }
            fn write_vectored(
                &self,
                file: StoreFile,
                offset: u64,
                parts: &[&[u8]],
            ) -> Result<(), StoreError> {
                (**self).write_vectored(file, offset, parts)
            }
            fn set_len(&self, file: StoreFile, len: u64) -> Result<(), StoreError> {
                (**self).set_len(file, len)
            }
            fn sync(&self, file: StoreFile) -> Result<(), StoreError> {
                (**self).sync(file)
            }
            fn close(&self, file: StoreFile) {
                (**self).close(file)
            }
            fn load_run_state(&self) -> Result<Option<Bytes>, StoreError> {
                (**self).load_run_state()
            }
            fn save_run_state(&self, state: &[u8]) -> Result<(), StoreError> {
                (**self).save_run_state(state)
            }
        }
    )*};
}

forward_store!(Box<S>, std::sync::Arc<S>);
