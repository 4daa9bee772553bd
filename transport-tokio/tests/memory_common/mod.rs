//! Shared setup for the memory-mapping tests: a server over a fresh
//! directory, a gate that can cut and hold off connections, skipping where
//! userfaultfd is missing, and child processes.

#![allow(dead_code, unreachable_pub)]

// The server, client settings and timeout of the loopback tests.
#[path = "../common/mod.rs"]
mod common;
#[allow(unused_imports)] // each test file uses a part
pub use common::{TestServer, client_config, within};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Whether memory mappings work here; says why not on stderr.
pub fn supported() -> bool {
    match rmmap_tokio::memory_support() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIPPED: memory mappings are not supported here: {e}");
            false
        }
    }
}

/// Runs memory accesses off the runtime's scheduling: a fault blocks the
/// thread until the driver brings the page.
pub fn touch<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A TCP forwarder that can cut every connection through it and refuse
/// new ones while closed.
pub struct Gate {
    pub addr: String,
    live: Arc<Mutex<Vec<AbortHandle>>>,
    closed: Arc<AtomicBool>,
    accept: AbortHandle,
}

impl Gate {
    pub async fn start(upstream: String) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let live: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (l, c) = (live.clone(), closed.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let task = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                l.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Gate {
            addr,
            live,
            closed,
            accept,
        }
    }

    /// Cuts every connection and refuses new ones until [`Gate::open`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for c in std::mem::take(&mut *self.live.lock().unwrap()) {
            c.abort();
        }
    }

    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.accept.abort();
        self.close();
    }
}
