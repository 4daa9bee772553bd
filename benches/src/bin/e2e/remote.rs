//! One face for both clients, so each workload is written once.
//!
//! Workloads are `async` code generic over [`Transport`]. Over Tokio they run
//! as Tokio tasks on a multi-threaded runtime, as a Tokio application would;
//! over mio each future runs on a plain thread with the blocking client (its
//! futures block inside `poll`), as a threaded application would. Concurrency
//! ([`Transport::join_all`]) is tasks for one and OS threads for the other.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use rmmap_tokio::{Access, ClientConfig, MapOptions};

/// What a workload needs from a client library.
pub(crate) trait Transport: 'static {
    /// A connected client.
    type Client: Clone + Send + Sync + 'static;
    /// A mapped range.
    type Map: Clone + Send + Sync + 'static;

    /// Connects with the default client configuration.
    fn connect(addr: &str) -> impl Future<Output = Result<Self::Client, String>> + Send;
    /// Maps `0..len` of `path` (creating or extending it with `create`).
    fn map(
        c: &Self::Client,
        path: &str,
        len: u64,
        write: bool,
        create: bool,
    ) -> impl Future<Output = Result<Self::Map, String>> + Send;
    /// Writes back, says goodbye, stops.
    fn close(c: Self::Client) -> impl Future<Output = Result<(), String>> + Send;
    /// Fills `buf` from `offset` of the mapping (a cache hit returns at once).
    fn read(
        m: &Self::Map,
        offset: u64,
        buf: &mut [u8],
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Writes `data` at `offset` of the mapping.
    fn write(
        m: &Self::Map,
        offset: u64,
        data: &[u8],
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Makes the mapping's completed writes durable at the server.
    fn sync(m: &Self::Map) -> impl Future<Output = Result<(), String>> + Send;
    /// Runs every task at once, the way this transport's users would, and
    /// returns their outputs in order.
    fn join_all<F>(tasks: Vec<F>) -> impl Future<Output = Vec<F::Output>> + Send
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static;
    /// Runs a workload to completion: over Tokio as a task on the runtime's
    /// workers, over mio on the calling thread.
    fn block_on<F>(f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static;
}

/// How a workload maps its file (both transports take the core's options).
fn options(write: bool, create: bool) -> MapOptions {
    MapOptions {
        access: if write {
            Access::ReadWrite
        } else {
            Access::ReadOnly
        },
        create,
    }
}

/// The client configuration every benchmark uses: the defaults.
fn config() -> ClientConfig {
    ClientConfig::default()
}

/// rmmap-tokio: async client, workloads as Tokio tasks.
pub(crate) struct Tokio;

impl Transport for Tokio {
    type Client = rmmap_tokio::Client;
    type Map = rmmap_tokio::Mapping;

    async fn connect(addr: &str) -> Result<Self::Client, String> {
        rmmap_tokio::Client::connect(addr, config())
            .await
            .map_err(|e| e.to_string())
    }

    async fn map(
        c: &Self::Client,
        path: &str,
        len: u64,
        write: bool,
        create: bool,
    ) -> Result<Self::Map, String> {
        c.map_with(path, 0..len, options(write, create))
            .await
            .map_err(|e| e.to_string())
    }

    async fn close(c: Self::Client) -> Result<(), String> {
        c.close().await.map_err(|e| e.to_string())
    }

    async fn read(m: &Self::Map, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        m.read(offset, buf).await.map_err(|e| e.to_string())
    }

    async fn write(m: &Self::Map, offset: u64, data: &[u8]) -> Result<(), String> {
        m.write(offset, data).await.map_err(|e| e.to_string())
    }

    async fn sync(m: &Self::Map) -> Result<(), String> {
        m.sync().await.map_err(|e| e.to_string())
    }

    async fn join_all<F>(tasks: Vec<F>) -> Vec<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await.expect("a benchmark task panicked"));
        }
        out
    }

    fn block_on<F>(f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // What `#[tokio::main]` builds: one worker per core. The workload
        // runs as a spawned task, as an application's work does (not on the
        // thread blocked in `block_on`, which is outside the workers).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a Tokio runtime");
        rt.block_on(async { tokio::spawn(f).await.expect("the workload task panicked") })
    }
}

/// rmmap-mio: the blocking client, workloads on plain threads.
pub(crate) struct Mio;

impl Transport for Mio {
    type Client = rmmap_mio::Client;
    type Map = rmmap_mio::Mapping;

    async fn connect(addr: &str) -> Result<Self::Client, String> {
        rmmap_mio::Client::connect(addr, config()).map_err(|e| e.to_string())
    }

    async fn map(
        c: &Self::Client,
        path: &str,
        len: u64,
        write: bool,
        create: bool,
    ) -> Result<Self::Map, String> {
        c.map_with(path, 0..len, options(write, create))
            .map_err(|e| e.to_string())
    }

    async fn close(c: Self::Client) -> Result<(), String> {
        c.close().map_err(|e| e.to_string())
    }

    async fn read(m: &Self::Map, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        m.read(offset, buf).map_err(|e| e.to_string())
    }

    async fn write(m: &Self::Map, offset: u64, data: &[u8]) -> Result<(), String> {
        m.write(offset, data).map_err(|e| e.to_string())
    }

    async fn sync(m: &Self::Map) -> Result<(), String> {
        m.sync().map_err(|e| e.to_string())
    }

    async fn join_all<F>(tasks: Vec<F>) -> Vec<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let threads: Vec<_> = tasks
            .into_iter()
            .map(|f| std::thread::spawn(move || park_on(f)))
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a benchmark thread panicked"))
            .collect()
    }

    fn block_on<F>(f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        park_on(f)
    }
}

/// Wakes a parked thread.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// The smallest executor: polls on this thread, parks while pending.
fn park_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
