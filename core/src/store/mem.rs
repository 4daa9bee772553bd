//! An in-memory store that can crash, and fail like a disk does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};

use super::{FileKey, OpenOptions, OpenedFile, Store, StoreError, StoreFile};
use crate::path::ExportPath;

/// Files in memory. Clones share the same files, so a test can keep a handle
/// while a server owns another, then [`crash`](MemStore::crash) it: every
/// write not followed by a `sync` of its file is lost, and files created but
/// never synced disappear. [`inject`](MemStore::inject) makes it fail the
/// way disks fail ([`DiskFault`]).
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    inner: Arc<Mutex<Inner>>,
}

/// Files in a [`MemStore`] are at most this long by default (1 GiB).
pub const MEM_STORE_MAX_FILE: u64 = 1 << 30;

/// A way for a [`MemStore`] to fail, as real disks do.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiskFault {
    /// Every write and every growing length change fails with "no space"
    /// until [`MemStore::heal`].
    Full,
    /// Every read, write, length change and sync fails with an I/O error
    /// until [`MemStore::heal`].
    Broken,
    /// The next write puts only its first half on the disk, then fails with
    /// "no space".
    ShortWrite,
    /// The next sync fails with an I/O error, and the file's writes since its
    /// last sync are gone from memory too (the kernel dropped the dirty pages
    /// it could not write): reads return the durable bytes.
    FailedSync,
}

#[derive(Debug)]
struct Inner {
    names: BTreeMap<String, u64>,
    files: BTreeMap<u64, MemFile>,
    handles: BTreeMap<u64, u64>,
    next_ino: u64,
    next_handle: u64,
    read_only: bool,
    max_file: u64,
    full: bool,
    broken: bool,
    short_writes: u32,
    failed_syncs: u32,
    faults: u64,
    run_state: Option<Vec<u8>>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            names: BTreeMap::new(),
            files: BTreeMap::new(),
            handles: BTreeMap::new(),
            next_ino: 0,
            next_handle: 0,
            read_only: false,
            max_file: MEM_STORE_MAX_FILE,
            full: false,
            broken: false,
            short_writes: 0,
            failed_syncs: 0,
            faults: 0,
            run_state: None,
        }
    }
}

#[derive(Debug, Default)]
struct MemFile {
    current: Vec<u8>,
    /// `None`: created and never synced, so a crash removes it.
    durable: Option<Vec<u8>>,
    writable: bool,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain data behind.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds (or replaces) a durable file.
    pub fn insert(&self, path: &str, data: impl Into<Vec<u8>>) {
        let mut g = self.lock();
        let data = data.into();
        let ino = match g.names.get(path) {
            Some(&ino) => ino,
            None => {
                g.next_ino += 1;
                let ino = g.next_ino;
                g.names.insert(path.to_owned(), ino);
                ino
            }
        };
        g.files.insert(
            ino,
            MemFile {
                current: data.clone(),
                durable: Some(data),
                writable: true,
            },
        );
    }

    /// Makes a file read-only at the store level.
    pub fn set_writable(&self, path: &str, writable: bool) {
        let mut g = self.lock();
        if let Some(&ino) = g.names.get(path)
            && let Some(f) = g.files.get_mut(&ino)
        {
            f.writable = writable;
        }
    }

    /// Sets the largest file length the store accepts (writes or lengths past
    /// it fail with an I/O error instead of allocating).
    pub fn set_max_file_len(&self, max: u64) {
        self.lock().max_file = max;
    }

    /// Refuses every write, like a read-only export.
    pub fn set_read_only(&self, read_only: bool) {
        self.lock().read_only = read_only;
    }

    /// The current (possibly unsynced) contents of a file.
    pub fn contents(&self, path: &str) -> Option<Vec<u8>> {
        let g = self.lock();
        let ino = g.names.get(path)?;
        g.files.get(ino).map(|f| f.current.clone())
    }

    /// The durable contents of a file: what a crash would leave.
    pub fn durable_contents(&self, path: &str) -> Option<Vec<u8>> {
        let g = self.lock();
        let ino = g.names.get(path)?;
        g.files.get(ino).and_then(|f| f.durable.clone())
    }

    /// Makes the store fail as `fault` says.
    pub fn inject(&self, fault: DiskFault) {
        let mut g = self.lock();
        match fault {
            DiskFault::Full => g.full = true,
            DiskFault::Broken => g.broken = true,
            DiskFault::ShortWrite => g.short_writes += 1,
            DiskFault::FailedSync => g.failed_syncs += 1,
        }
    }

    /// Ends [`DiskFault::Full`] and [`DiskFault::Broken`], and drops pending
    /// one-shot faults.
    pub fn heal(&self) {
        let mut g = self.lock();
        g.full = false;
        g.broken = false;
        g.short_writes = 0;
        g.failed_syncs = 0;
    }

    /// How many operations failed because of an injected fault.
    pub fn faults_seen(&self) -> u64 {
        self.lock().faults
    }

    /// The run state a server saved, if any.
    pub fn run_state(&self) -> Option<Vec<u8>> {
        self.lock().run_state.clone()
    }

    /// Simulates a power loss: unsynced writes vanish, open handles are gone.
    pub fn crash(&self) {
        let mut g = self.lock();
        g.handles.clear();
        let mut gone = Vec::new();
        for (ino, f) in g.files.iter_mut() {
            match &f.durable {
                Some(d) => f.current = d.clone(),
                None => gone.push(*ino),
            }
        }
        for ino in gone {
            g.files.remove(&ino);
            g.names.retain(|_, v| *v != ino);
        }
    }

    fn file(g: &mut Inner, file: StoreFile) -> Result<&mut MemFile, StoreError> {
        let ino = *g
            .handles
            .get(&file.0)
            .ok_or_else(|| StoreError::Io(format!("stale handle {}", file.0)))?;
        g.files
            .get_mut(&ino)
            .ok_or_else(|| StoreError::Io("file vanished".into()))
    }
}

fn too_long(max: u64) -> StoreError {
    StoreError::Io(format!(
        "the in-memory store holds files of at most {max} bytes"
    ))
}

impl Store for MemStore {
    fn open(&self, path: &ExportPath, opts: OpenOptions) -> Result<OpenedFile, StoreError> {
        let mut g = self.lock();
        let ino = match g.names.get(path.as_str()) {
            Some(&ino) => ino,
            None if opts.create => {
                if g.read_only {
                    return Err(StoreError::ReadOnly(path.to_string()));
                }
                // A path under an existing file would need a directory.
                if g.names
                    .keys()
                    .any(|n| path.as_str().starts_with(&format!("{n}/")))
                {
                    return Err(StoreError::NotAFile(path.to_string()));
                }
                g.next_ino += 1;
                let ino = g.next_ino;
                g.names.insert(path.to_string(), ino);
                g.files.insert(
                    ino,
                    MemFile {
                        current: Vec::new(),
                        durable: None,
                        writable: true,
                    },
                );
                ino
            }
            None => return Err(StoreError::NotFound(path.to_string())),
        };
        let read_only = g.read_only;
        let f = &g.files[&ino];
        let len = f.current.len() as u64;
        let writable = f.writable && !read_only && opts.write;
        g.next_handle += 1;
        let h = g.next_handle;
        g.handles.insert(h, ino);
        Ok(OpenedFile {
            file: StoreFile(h),
            key: FileKey(0, ino),
            len,
            writable,
        })
    }

    fn read(&self, file: StoreFile, offset: u64, len: usize) -> Result<Bytes, StoreError> {
        let mut g = self.lock();
        if g.broken {
            g.faults += 1;
            return Err(StoreError::Io("read failed (injected EIO)".into()));
        }
        let f = Self::file(&mut g, file)?;
        let mut out = BytesMut::zeroed(len);
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(f.current.len());
        let end = start.saturating_add(len).min(f.current.len());
        out[..end - start].copy_from_slice(&f.current[start..end]);
        Ok(out.freeze())
    }

    fn write(&self, file: StoreFile, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        let mut g = self.lock();
        if g.broken {
            g.faults += 1;
            return Err(StoreError::Io("write failed (injected EIO)".into()));
        }
        if g.full {
            g.faults += 1;
            return Err(StoreError::NoSpace("the disk is full (injected)".into()));
        }
        let short = g.short_writes > 0;
        if short {
            g.short_writes -= 1;
            g.faults += 1;
        }
        let (read_only, max) = (g.read_only, g.max_file);
        let f = Self::file(&mut g, file)?;
        if read_only || !f.writable {
            return Err(StoreError::ReadOnly("file".into()));
        }
        let data = if short { &data[..data.len() / 2] } else { data };
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= max)
            .ok_or_else(|| too_long(max))?;
        let (start, end) = (offset as usize, end as usize);
        if f.current.len() < end {
            f.current.resize(end, 0);
        }
        f.current[start..end].copy_from_slice(data);
        if short {
            return Err(StoreError::NoSpace(
                "the disk filled up during the write (injected short write)".into(),
            ));
        }
        Ok(())
    }

    fn set_len(&self, file: StoreFile, len: u64) -> Result<(), StoreError> {
        let mut g = self.lock();
        if g.broken {
            g.faults += 1;
            return Err(StoreError::Io("truncate failed (injected EIO)".into()));
        }
        let (read_only, max, full) = (g.read_only, g.max_file, g.full);
        let current = Self::file(&mut g, file)?.current.len() as u64;
        if full && len > current {
            g.faults += 1;
            return Err(StoreError::NoSpace("the disk is full (injected)".into()));
        }
        let f = Self::file(&mut g, file)?;
        if read_only || !f.writable {
            return Err(StoreError::ReadOnly("file".into()));
        }
        if len > max {
            return Err(too_long(max));
        }
        f.current.resize(len as usize, 0);
        Ok(())
    }

    fn sync(&self, file: StoreFile) -> Result<(), StoreError> {
        let mut g = self.lock();
        let failed = g.broken || g.failed_syncs > 0;
        if failed {
            g.faults += 1;
            g.failed_syncs = g.failed_syncs.saturating_sub(1);
        }
        let f = Self::file(&mut g, file)?;
        if failed {
            // Like Linux after a failed writeback: the dirty pages are
            // dropped, and what can be read is what is on the disk.
            match &f.durable {
                Some(d) => f.current = d.clone(),
                None => f.current.clear(),
            }
            return Err(StoreError::Io("fsync failed (injected EIO)".into()));
        }
        f.durable = Some(f.current.clone());
        Ok(())
    }

    fn close(&self, file: StoreFile) {
        self.lock().handles.remove(&file.0);
    }

    fn load_run_state(&self) -> Result<Option<Bytes>, StoreError> {
        Ok(self.lock().run_state.clone().map(Bytes::from))
    }

    fn save_run_state(&self, state: &[u8]) -> Result<(), StoreError> {
        let mut g = self.lock();
        if g.broken {
            g.faults += 1;
            return Err(StoreError::Io(
                "saving the run state failed (injected EIO)".into(),
            ));
        }
        g.run_state = Some(state.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ExportPath {
        ExportPath::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn a_crash_keeps_only_what_was_synced() {
        let s = MemStore::new();
        s.insert("a", b"hello".to_vec());
        let f = s
            .open(
                &p("a"),
                OpenOptions {
                    write: true,
                    create: false,
                },
            )
            .unwrap();
        s.write(f.file, 0, b"J").unwrap();
        s.sync(f.file).unwrap();
        s.write(f.file, 1, b"E").unwrap();
        let n = s
            .open(
                &p("new"),
                OpenOptions {
                    write: true,
                    create: true,
                },
            )
            .unwrap();
        s.write(n.file, 0, b"x").unwrap();
        assert_eq!(s.contents("a").unwrap(), b"JEllo");
        s.crash();
        assert_eq!(s.contents("a").unwrap(), b"Jello");
        assert_eq!(s.contents("new"), None);
    }

    #[test]
    fn reads_past_the_end_are_zeros() {
        let s = MemStore::new();
        s.insert("a", b"ab".to_vec());
        let f = s.open(&p("a"), OpenOptions::default()).unwrap();
        assert_eq!(&s.read(f.file, 1, 4).unwrap()[..], b"b\0\0\0");
        assert_eq!(&s.read(f.file, 100, 2).unwrap()[..], b"\0\0");
    }
}
