//! [`DiskPool`]: threads that run a server's store requests, for adapters
//! whose event loop must not block on the disk.

use std::io;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rmmap_core::store::{Store, StoreDone, StoreError, StoreId, StoreOp, StoreRequest};

/// What a finished request reports: its id and result.
pub type StoreResult = (StoreId, Result<StoreDone, StoreError>);

/// Reads up to this size are run on the caller's thread when the store can
/// answer them without the disk ([`DiskPool::run_or_submit`]).
pub const CACHED_READ_MAX: usize = 64 << 10;

/// A few threads that run store requests as they come, several at once
/// (the server only hands out requests that commute), and report each
/// result through a callback that the adapter turns into a wake-up of its
/// loop (a channel send, a `mio::Waker`). Dropping the pool lets the threads
/// finish the requests they hold and stop.
pub struct DiskPool {
    queue: Option<Sender<StoreRequest>>,
    threads: Vec<JoinHandle<()>>,
    store: Arc<dyn Store + Send + Sync>,
}

impl std::fmt::Debug for DiskPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskPool")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl DiskPool {
    /// Starts `threads` threads (at least one) running requests against
    /// `store`; `done` is called, on one of them, with every result.
    pub fn new<S, F>(store: Arc<S>, threads: usize, done: F) -> io::Result<Self>
    where
        S: Store + Send + Sync + 'static,
        F: Fn(StoreResult) + Send + Sync + 'static,
    {
        let (tx, rx) = channel::<StoreRequest>();
        let rx = Arc::new(Mutex::new(rx));
        let done = Arc::new(done);
        let mut handles = Vec::new();
        let shared: Arc<dyn Store + Send + Sync> = store.clone();
        for i in 0..threads.max(1) {
            let (rx, store, done) = (rx.clone(), store.clone(), done.clone());
            let h = std::thread::Builder::new()
                .name(format!("rmmap-disk-{i}"))
                .spawn(move || run(&rx, &*store, &*done))?;
            handles.push(h);
        }
        Ok(DiskPool {
            queue: Some(tx),
            threads: handles,
            store: shared,
        })
    }

    /// Runs `req` on this thread if it is a read of at most
    /// [`CACHED_READ_MAX`] bytes that the store answers without waiting for
    /// the disk ([`Store::read_cached`]: the bytes are in the page cache),
    /// and returns its result, saving the hand-over to a disk thread and
    /// back (a cold 4 KiB read of a cached file, issue 14); otherwise
    /// queues it like [`submit`](Self::submit) and returns `None`. Never
    /// waits for the disk.
    pub fn run_or_submit(&self, req: StoreRequest) -> Option<StoreResult> {
        if let StoreOp::Read { file, offset, len } = req.op
            && len <= CACHED_READ_MAX
            && let Some(result) = self.store.read_cached(file, offset, len)
        {
            return Some((req.id, result.map(StoreDone::Read)));
        }
        self.submit(req);
        None
    }

    /// Queues a request.
    pub fn submit(&self, req: StoreRequest) {
        if let Some(q) = &self.queue {
            // The threads live as long as the sender: this cannot fail.
            let _ = q.send(req);
        }
    }
}

fn run<S: Store + ?Sized>(
    rx: &Mutex<Receiver<StoreRequest>>,
    store: &S,
    done: &dyn Fn(StoreResult),
) {
    loop {
        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(req) = next else { return };
        let result = req.op.execute(store);
        done((req.id, result));
    }
}

impl Drop for DiskPool {
    fn drop(&mut self) {
        self.queue = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmmap_core::path::ExportPath;
    use rmmap_core::store::{MemStore, OpenOptions, StoreOp};
    use std::sync::mpsc;

    #[test]
    fn every_request_is_run_and_reported_once() {
        let store = MemStore::new();
        store.insert("f", vec![1u8; 100]);
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let pool = DiskPool::new(Arc::new(store), 3, move |r| {
            tx.lock().unwrap().send(r).unwrap();
        })
        .unwrap();
        for i in 0..20 {
            pool.submit(StoreRequest {
                id: StoreId(i),
                op: StoreOp::Open {
                    path: ExportPath::parse(b"f").unwrap(),
                    scope: None,
                    options: OpenOptions::default(),
                },
            });
        }
        drop(pool);
        let mut ids: Vec<u64> = rx.iter().map(|(id, r)| (id.0, r.unwrap()).0).collect();
        ids.sort();
        assert_eq!(ids, (0..20).collect::<Vec<_>>());
    }
}
