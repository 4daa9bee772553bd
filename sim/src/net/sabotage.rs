//! A deliberate fault outside the model, to prove the network-level
//! checker can fail: a disk that acknowledges writes without making them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use rmmap_core::path::ExportPath;
use rmmap_core::store::{MemStore, OpenOptions, OpenedFile, Store, StoreError, StoreFile};

/// The server's store: a [`MemStore`] that, once `lying` is set, says every
/// write succeeded and drops it.
pub(crate) struct LyingDisk {
    inner: MemStore,
    lying: Arc<AtomicBool>,
}

impl LyingDisk {
    pub(crate) fn new(inner: MemStore, lying: Arc<AtomicBool>) -> Self {
        LyingDisk { inner, lying }
    }
}

impl Store for LyingDisk {
    fn open(&self, path: &ExportPath, opts: OpenOptions) -> Result<OpenedFile, StoreError> {
        self.inner.open(path, opts)
    }

    fn read(&self, file: StoreFile, offset: u64, len: usize) -> Result<Bytes, StoreError> {
        self.inner.read(file, offset, len)
    }

    fn write(&self, file: StoreFile, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        if self.lying.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.inner.write(file, offset, data)
    }

    fn set_len(&self, file: StoreFile, len: u64) -> Result<(), StoreError> {
        self.inner.set_len(file, len)
    }

    fn sync(&self, file: StoreFile) -> Result<(), StoreError> {
        self.inner.sync(file)
    }

    fn close(&self, file: StoreFile) {
        self.inner.close(file)
    }

    fn load_run_state(&self) -> Result<Option<Bytes>, StoreError> {
        self.inner.load_run_state()
    }

    fn save_run_state(&self, state: &[u8]) -> Result<(), StoreError> {
        self.inner.save_run_state(state)
    }
}
