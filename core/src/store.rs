//! Where the server's bytes live, behind a small trait the adapters implement.
//!
//! The core calls the store synchronously from its state machine: opening a
//! path under the export root, and reading, writing, sizing and syncing a file
//! at an offset. `rmmap-store` implements it over real files with positioned
//! IO, confined beneath the root; [`MemStore`] keeps files in memory and can
//! simulate a crash that loses everything not synced.

mod mem;

pub use mem::{MEM_STORE_MAX_FILE, MemStore};

use bytes::Bytes;

use crate::path::ExportPath;

/// A file as the store knows it (an index into its open-file table).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreFile(pub u64);

/// The identity of the underlying file (for real files: device and inode),
/// so that two paths to one file share one coherence directory.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileKey(pub u64, pub u64);

/// What [`Store::open`] found.
#[derive(Clone, Debug)]
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
    /// Any other failure of the file system.
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

/// The server's file system, as the core sees it.
pub trait Store {
    /// Opens `path` beneath the export root. Implementations must refuse
    /// anything that resolves outside the root, symlinks included.
    fn open(&mut self, path: &ExportPath, opts: OpenOptions) -> Result<OpenedFile, StoreError>;

    /// Opens `path` beneath the sub-directory `scope` of the export root, for
    /// a client confined to it: nothing outside `scope` may be reached, not
    /// even through a symlink to elsewhere under the root. The default joins
    /// the two paths, which is right for stores without symlinks.
    fn open_scoped(
        &mut self,
        scope: &ExportPath,
        path: &ExportPath,
        opts: OpenOptions,
    ) -> Result<OpenedFile, StoreError> {
        self.open(&path.within(scope), opts)
    }

    /// Reads exactly `len` bytes at `offset`; bytes past the end of the file
    /// read as zeros.
    fn read(&mut self, file: StoreFile, offset: u64, len: usize) -> Result<Bytes, StoreError>;

    /// Writes `data` at `offset`.
    fn write(&mut self, file: StoreFile, offset: u64, data: &[u8]) -> Result<(), StoreError>;

    /// Writes `parts`, one after another, at `offset`: a write-back of
    /// consecutive pages, whose data lie apart in the frame they came in.
    /// The default joins them and calls [`write`](Self::write); a store
    /// that can write them as they are (`pwritev`) saves that copy.
    fn write_vectored(
        &mut self,
        file: StoreFile,
        offset: u64,
        parts: &[&[u8]],
    ) -> Result<(), StoreError> {
        self.write(file, offset, &parts.concat())
    }

    /// Truncates or extends (with zeros) the file.
    fn set_len(&mut self, file: StoreFile, len: u64) -> Result<(), StoreError>;

    /// Makes every write to the file durable (fsync).
    fn sync(&mut self, file: StoreFile) -> Result<(), StoreError>;

    /// Forgets the handle.
    fn close(&mut self, file: StoreFile);
}

impl<S: Store + ?Sized> Store for Box<S> {
    fn open(&mut self, path: &ExportPath, opts: OpenOptions) -> Result<OpenedFile, StoreError> {
        (**self).open(path, opts)
    }
    fn open_scoped(
        &mut self,
        scope: &ExportPath,
        path: &ExportPath,
        opts: OpenOptions,
    ) -> Result<OpenedFile, StoreError> {
        (**self).open_scoped(scope, path, opts)
    }
    fn read(&mut self, file: StoreFile, offset: u64, len: usize) -> Result<Bytes, StoreError> {
        (**self).read(file, offset, len)
    }
    fn write(&mut self, file: StoreFile, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        (**self).write(file, offset, data)
    }
    fn write_vectored(
        &mut self,
        file: StoreFile,
        offset: u64,
        parts: &[&[u8]],
    ) -> Result<(), StoreError> {
        (**self).write_vectored(file, offset, parts)
    }
    fn set_len(&mut self, file: StoreFile, len: u64) -> Result<(), StoreError> {
        (**self).set_len(file, len)
    }
    fn sync(&mut self, file: StoreFile) -> Result<(), StoreError> {
        (**self).sync(file)
    }
    fn close(&mut self, file: StoreFile) {
        (**self).close(file)
    }
}
