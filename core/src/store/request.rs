//! The store requests the server state machine emits, and their results.

use bytes::Bytes;

use super::{OpenOptions, OpenedFile, Store, StoreError, StoreFile};
use crate::path::ExportPath;

/// A store request, as the server numbers it: its result must come back
/// under the same id.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreId(pub u64);

/// One thing for the adapter to do on the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreRequest {
    /// Give it back with the result.
    pub id: StoreId,
    /// What to do.
    pub op: StoreOp,
}

/// What a [`StoreRequest`] asks for. Every one of them completes, with a
/// [`StoreDone`] or a [`StoreError`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreOp {
    /// [`Store::open`], or [`Store::open_scoped`] when `scope` is given.
    /// Completes with [`StoreDone::Opened`].
    Open {
        /// The path, relative to `scope` if there is one, else to the root.
        path: ExportPath,
        /// A client's sub-directory that the path may not leave.
        scope: Option<ExportPath>,
        /// Create, write.
        options: OpenOptions,
    },
    /// [`Store::read`]. Completes with [`StoreDone::Read`].
    Read {
        /// The file.
        file: StoreFile,
        /// Where.
        offset: u64,
        /// How many bytes (past the end of the file: zeros).
        len: usize,
    },
    /// Writes each run with [`Store::write_vectored`] (or
    /// [`Store::write`] for a run of one part): a write-back's patches, in
    /// order. The runs never overlap.
    Write {
        /// The file.
        file: StoreFile,
        /// The runs, in order.
        runs: Vec<WriteRun>,
    },
    /// [`Store::set_len`].
    SetLen {
        /// The file.
        file: StoreFile,
        /// The new length.
        len: u64,
    },
    /// [`Store::sync`] (fsync).
    Sync {
        /// The file.
        file: StoreFile,
    },
    /// [`Store::close`]; never fails.
    Close {
        /// The file.
        file: StoreFile,
    },
    /// [`Store::save_run_state`].
    SaveRunState {
        /// The encoded state.
        state: Bytes,
    },
}

/// Bytes to write at one offset: `parts` one after another (pages of one
/// write-back that lie apart in the frame they came in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRun {
    /// Where the first part goes.
    pub offset: u64,
    /// The bytes, in order.
    pub parts: Vec<Bytes>,
}

impl WriteRun {
    /// Bytes in the run.
    pub fn len(&self) -> u64 {
        self.parts.iter().map(|p| p.len() as u64).sum()
    }

    /// Whether the run has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A successful result.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreDone {
    /// An [`StoreOp::Open`] result.
    Opened(OpenedFile),
    /// A [`StoreOp::Read`] result: exactly the length asked for.
    Read(Bytes),
    /// Any other request succeeded.
    Done,
}

impl StoreOp {
    /// Runs the request against `store`, blocking. The adapters call this on
    /// a thread (or pool) of their own; the harness and the simulator call it
    /// in virtual time.
    pub fn execute<S: Store + ?Sized>(&self, store: &S) -> Result<StoreDone, StoreError> {
        match self {
            StoreOp::Open {
                path,
                scope,
                options,
            } => match scope {
                Some(scope) => store.open_scoped(scope, path, *options),
                None => store.open(path, *options),
            }
            .map(StoreDone::Opened),
            StoreOp::Read { file, offset, len } => {
                store.read(*file, *offset, *len).map(StoreDone::Read)
            }
            StoreOp::Write { file, runs } => {
                for run in runs {
                    match run.parts.as_slice() {
                        [one] => store.write(*file, run.offset, one)?,
                        many => {
                            let slices: Vec<&[u8]> = many.iter().map(|b| &b[..]).collect();
                            store.write_vectored(*file, run.offset, &slices)?
                        }
                    }
                }
                Ok(StoreDone::Done)
            }
            StoreOp::SetLen { file, len } => store.set_len(*file, *len).map(|()| StoreDone::Done),
            StoreOp::Sync { file } => store.sync(*file).map(|()| StoreDone::Done),
            StoreOp::Close { file } => {
                store.close(*file);
                Ok(StoreDone::Done)
            }
            StoreOp::SaveRunState { state } => {
                store.save_run_state(state).map(|()| StoreDone::Done)
            }
        }
    }

    /// Bytes this request moves to or from the disk (for accounting).
    pub fn bytes(&self) -> u64 {
        match self {
            StoreOp::Read { len, .. } => *len as u64,
            StoreOp::Write { runs, .. } => runs.iter().map(WriteRun::len).sum(),
            _ => 0,
        }
    }
}
