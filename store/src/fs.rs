//! [`FsStore`]: real files under an export root, with positioned IO.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::buffers::BufferPool;
use bytes::Bytes;
use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions as CapOpenOptions, OpenOptionsExt};
use rmmap_core::path::ExportPath;
use rmmap_core::store::{
    FileKey, OpenOptions, OpenedFile, RUN_STATE_NAME, Store, StoreError, StoreFile,
};

/// Why an export root could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootError {
    /// The directory could not be opened (missing, not a directory, no
    /// permission).
    #[error("cannot open the export root {path}: {source}")]
    Open {
        /// The root as given.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
}

/// One open file.
#[derive(Debug)]
struct OpenFile {
    file: std::fs::File,
    writable: bool,
    /// The path, for error messages.
    path: String,
    /// Created by this store and its directory entry not yet made durable:
    /// the first `sync` also syncs the parent directory.
    parent_unsynced: Mutex<Option<PathBuf>>,
}

/// The files beneath an export root.
///
/// Every path is resolved with cap-std beneath a directory handle opened
/// once, so `..`, absolute paths and symlinks that lead outside the root are
/// refused by the operating-system-level resolver rather than by string
/// checks (the core's [`ExportPath`] already refuses the first two; this is
/// the second fence). Symlinks that stay inside the root are followed.
///
/// Reads and writes are positioned (`pread`/`pwrite`), so memory use does
/// not grow with file size. `sync` is `fsync`.
///
/// Creating a file whose parent directories are missing creates them,
/// beneath the root: a client that may create `a/b/c.bin` may as well have
/// created `a/b` first, and `rmmap put` to a new path then just works.
///
/// The calls block on the file system; the adapters run the server's store
/// requests on threads where blocking is allowed, several at once (the
/// handle table is shared; positioned IO needs no lock per file).
#[derive(Debug)]
pub struct FsStore {
    root: Dir,
    root_path: PathBuf,
    read_only: bool,
    files: Mutex<BTreeMap<u64, Arc<OpenFile>>>,
    next: AtomicU64,
    /// Read buffers, used again.
    buffers: Arc<BufferPool>,
}

impl FsStore {
    /// Opens the export root. With `read_only`, every write, create and
    /// length change is refused whatever the file permissions say.
    pub fn open(root: impl AsRef<Path>, read_only: bool) -> Result<Self, RootError> {
        let root_path = root.as_ref().to_path_buf();
        let dir = Dir::open_ambient_dir(&root_path, ambient_authority()).map_err(|source| {
            RootError::Open {
                path: root_path.clone(),
                source,
            }
        })?;
        Ok(FsStore {
            root: dir,
            root_path,
            read_only,
            files: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            buffers: Arc::default(),
        })
    }

    /// The root as given to [`FsStore::open`].
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// Whether the store refuses every write.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Files currently open.
    pub fn open_files(&self) -> usize {
        self.table().len()
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<OpenFile>>> {
        // Plain data behind the lock: a panic elsewhere leaves it usable.
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn options(write: bool) -> CapOpenOptions {
        let mut o = CapOpenOptions::new();
        o.read(true).write(write);
        // Opening a FIFO or a device without O_NONBLOCK could hang the
        // server; on regular files the flag changes nothing.
        o.custom_flags(libc::O_NONBLOCK);
        o
    }

    /// Opens an existing file, read-write if asked and allowed, else
    /// read-only. Returns the file and whether it is writable.
    #[cfg(test)]
    pub(crate) fn open_existing(
        &self,
        path: &str,
        write: bool,
    ) -> io::Result<(std::fs::File, bool)> {
        Self::open_existing_in(&self.root, path, write)
    }

    fn open_existing_in(dir: &Dir, path: &str, write: bool) -> io::Result<(std::fs::File, bool)> {
        if write {
            match dir.open_with(path, &Self::options(true)) {
                Ok(f) => return Ok((f.into_std(), true)),
                Err(e) if is_read_only_error(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let f = dir.open_with(path, &Self::options(false))?;
        Ok((f.into_std(), false))
    }

    /// Creates `path` (and its missing parents). Returns the file and the
    /// parent directory whose entry must be synced.
    fn create_in(dir: &Dir, path: &str) -> io::Result<(std::fs::File, PathBuf)> {
        let parent = Path::new(path)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        if !parent.as_os_str().is_empty() {
            dir.create_dir_all(&parent)?;
        }
        let mut o = Self::options(true);
        o.create_new(true);
        let f = dir.open_with(path, &o)?;
        Ok((f.into_std(), parent))
    }

    /// Opens `path` beneath `dir` (the root, or a client's scope within it).
    fn open_in(
        &self,
        dir: &Dir,
        scope: Option<&ExportPath>,
        path: &ExportPath,
        opts: OpenOptions,
    ) -> Result<OpenedFile, StoreError> {
        let p = path.as_str();
        let write = opts.write && !self.read_only;
        let (file, writable, parent_unsynced) = match Self::open_existing_in(dir, p, write) {
            Ok((f, w)) => (f, w, None),
            Err(e) if e.kind() == io::ErrorKind::NotFound && opts.create => {
                if self.read_only {
                    return Err(StoreError::ReadOnly(format!(
                        "{p}: the export is read-only; cannot create files"
                    )));
                }
                match Self::create_in(dir, p) {
                    // The parent to sync, relative to the root.
                    Ok((f, parent)) => {
                        let parent =
                            scope.map_or(parent.clone(), |s| Path::new(s.as_str()).join(&parent));
                        (f, true, Some(parent))
                    }
                    // Someone else created it meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        let (f, w) =
                            Self::open_existing_in(dir, p, write).map_err(|e| map_err(p, e))?;
                        (f, w, None)
                    }
                    Err(e) => return Err(map_err(p, e)),
                }
            }
            Err(e) => return Err(map_err(p, e)),
        };
        let meta = file.metadata().map_err(|e| map_err(p, e))?;
        if !meta.is_file() {
            return Err(StoreError::NotAFile(p.to_owned()));
        }
        let h = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.table().insert(
            h,
            Arc::new(OpenFile {
                file,
                writable,
                path: p.to_owned(),
                parent_unsynced: Mutex::new(parent_unsynced),
            }),
        );
        Ok(OpenedFile {
            file: StoreFile(h),
            key: FileKey(meta.dev(), meta.ino()),
            len: meta.len(),
            writable,
        })
    }

    fn handle(&self, file: StoreFile) -> Result<Arc<OpenFile>, StoreError> {
        self.table()
            .get(&file.0)
            .cloned()
            .ok_or_else(|| StoreError::Io(format!("stale file handle {}", file.0)))
    }

    fn writable_handle(&self, file: StoreFile) -> Result<Arc<OpenFile>, StoreError> {
        let read_only = self.read_only;
        let f = self.handle(file)?;
        if read_only {
            return Err(StoreError::ReadOnly(format!(
                "{}: the export is read-only",
                f.path
            )));
        }
        if !f.writable {
            return Err(StoreError::ReadOnly(format!(
                "{}: the file is not writable on the server",
                f.path
            )));
        }
        Ok(f)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // A plain read-only descriptor: the directory handles cap-std hands
        // out may not accept fsync.
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let mut o = CapOpenOptions::new();
        o.read(true);
        self.root.open_with(dir, &o)?.into_std().sync_all()
    }
}

impl Store for FsStore {
    fn open(&self, path: &ExportPath, opts: OpenOptions) -> Result<OpenedFile, StoreError> {
        self.open_in(&self.root, None, path, opts)
    }

    fn open_scoped(
        &self,
        scope: &ExportPath,
        path: &ExportPath,
        opts: OpenOptions,
    ) -> Result<OpenedFile, StoreError> {
        // Resolve beneath the scope's own directory handle: a symlink inside
        // it cannot lead elsewhere under the root.
        let dir = self
            .root
            .open_dir(scope.as_str())
            .map_err(|e| map_err(scope.as_str(), e))?;
        self.open_in(&dir, Some(scope), path, opts)
    }

    fn read(&self, file: StoreFile, offset: u64, len: usize) -> Result<Bytes, StoreError> {
        let f = self.handle(file)?;
        let buf = self.buffers.take(len);
        let buf = crate::positioned::read_exact_or_zeros_into(&f.file, offset, len, buf)
            .map_err(|e| map_err(&f.path, e))?;
        Ok(self.buffers.lend(buf))
    }

    fn read_cached(
        &self,
        file: StoreFile,
        offset: u64,
        len: usize,
    ) -> Option<Result<Bytes, StoreError>> {
        let f = self.handle(file).ok()?;
        crate::positioned::read_cached(&f.file, offset, len).map(|b| Ok(Bytes::from(b)))
    }

    fn write(&self, file: StoreFile, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        let f = self.writable_handle(file)?;
        f.file
            .write_all_at(data, offset)
            .map_err(|e| map_err(&f.path, e))
    }

    fn write_vectored(
        &self,
        file: StoreFile,
        offset: u64,
        parts: &[&[u8]],
    ) -> Result<(), StoreError> {
        let f = self.writable_handle(file)?;
        crate::positioned::write_all_vectored_at(&f.file, offset, parts)
            .map_err(|e| map_err(&f.path, e))
    }

    fn set_len(&self, file: StoreFile, len: u64) -> Result<(), StoreError> {
        let f = self.writable_handle(file)?;
        f.file.set_len(len).map_err(|e| map_err(&f.path, e))
    }

    fn sync(&self, file: StoreFile) -> Result<(), StoreError> {
        let f = self.handle(file)?;
        f.file.sync_all().map_err(|e| map_err(&f.path, e))?;
        let mut parent = f.parent_unsynced.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dir) = parent.as_ref() {
            // Kept on failure: tried again on the next sync.
            self.sync_dir(dir).map_err(|e| map_err(&f.path, e))?;
            *parent = None;
        }
        Ok(())
    }

    fn close(&self, file: StoreFile) {
        self.table().remove(&file.0);
    }

    fn load_run_state(&self) -> Result<Option<Bytes>, StoreError> {
        match self.root.read(RUN_STATE_NAME) {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(map_err(RUN_STATE_NAME, e)),
        }
    }

    fn save_run_state(&self, state: &[u8]) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly(format!(
                "{RUN_STATE_NAME}: the export is read-only"
            )));
        }
        // Write aside, make it durable, rename over, make the rename
        // durable: after a crash the file is the old state or the new one.
        let tmp = format!("{RUN_STATE_NAME}.tmp");
        let err = |e| map_err(RUN_STATE_NAME, e);
        let mut o = CapOpenOptions::new();
        o.write(true).create(true).truncate(true);
        let mut f = self.root.open_with(&tmp, &o).map_err(err)?.into_std();
        f.write_all(state).map_err(err)?;
        f.sync_all().map_err(err)?;
        self.root
            .rename(&tmp, &self.root, RUN_STATE_NAME)
            .map_err(err)?;
        self.sync_dir(Path::new("")).map_err(err)
    }
}

fn is_read_only_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
    ) && !is_escape(e)
}

/// cap-std reports a path that leads outside the root as a permission error
/// with this text.
fn is_escape(e: &io::Error) -> bool {
    e.raw_os_error().is_none() && e.to_string().contains("outside of the filesystem")
}

/// Maps an IO error on `path` to what the core can tell the client.
fn map_err(path: &str, e: io::Error) -> StoreError {
    use io::ErrorKind as K;
    if is_escape(&e) {
        return StoreError::Denied(format!("{path} leads outside the export root"));
    }
    match e.kind() {
        K::NotFound => StoreError::NotFound(path.to_owned()),
        K::PermissionDenied => {
            StoreError::Denied(format!("{path}: permission denied on the server"))
        }
        K::IsADirectory => StoreError::NotAFile(format!("{path} is a directory")),
        // A component of the path is a file, not a directory.
        K::NotADirectory => StoreError::NotAFile(format!(
            "{path}: a component of the path is not a directory"
        )),
        K::ReadOnlyFilesystem => {
            StoreError::ReadOnly(format!("{path}: the server's file system is read-only"))
        }
        K::StorageFull | K::QuotaExceeded => {
            StoreError::NoSpace(format!("{path}: no space left on the server's disk ({e})"))
        }
        _ => match e.raw_os_error() {
            Some(libc::ELOOP) => {
                StoreError::Denied(format!("{path}: too many levels of symbolic links"))
            }
            Some(libc::EXDEV) => {
                StoreError::Denied(format!("{path} leads outside the export root"))
            }
            Some(libc::ENOSPC | libc::EDQUOT) => {
                StoreError::NoSpace(format!("{path}: no space left on the server's disk"))
            }
            Some(libc::ENAMETOOLONG) => StoreError::BadName(format!(
                "{path}: the name is too long for the server's file system"
            )),
            _ => StoreError::Io(format!("{path}: {e}")),
        },
    }
}
