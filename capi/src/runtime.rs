//! The process's Tokio runtime: the clients' drivers run on its workers,
//! and every C call waits on its own thread with `block_on`.
//!
//! A multi-thread runtime, because a memory mapping's page fault blocks
//! the faulting thread until a driver task brings the page: the C threads
//! that touch the memory are never the workers. A forked child gets a
//! runtime of its own (the parent's threads are not in it); what the parent
//! had is kept reachable, never used and never freed.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::runtime::Runtime;

use crate::error::{Failure, rmmap_error};

struct ProcessRuntime {
    pid: u32,
    runtime: Arc<Runtime>,
}

static CURRENT: Mutex<Option<ProcessRuntime>> = Mutex::new(None);
/// Runtimes of the parent processes of a forked child: their worker
/// threads do not exist here, so they can neither run nor be shut down.
static INHERITED: Mutex<Vec<Arc<Runtime>>> = Mutex::new(Vec::new());

/// The runtime of this process, started on first use.
pub(crate) fn runtime() -> Result<Arc<Runtime>, Failure> {
    let pid = std::process::id();
    let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = current.as_ref()
        && p.pid == pid
    {
        return Ok(p.runtime.clone());
    }
    if let Some(old) = current.take() {
        INHERITED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(old.runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rmmap-io")
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|e| {
            Failure::new(
                rmmap_error::RMMAP_INTERNAL,
                format!("cannot start librmmap's IO threads: {e}"),
            )
        })?;
    *current = Some(ProcessRuntime {
        pid,
        runtime: runtime.clone(),
    });
    Ok(runtime)
}

/// Runs `f` to completion on the calling thread, the clients' drivers
/// running on the runtime's workers. Every operation of the client ends by
/// itself (at the latest after its give-up time), so this never waits
/// forever.
pub(crate) fn block_on<F: Future>(f: F) -> Result<F::Output, Failure> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Failure::invalid(
            "librmmap was called from a thread of a Tokio runtime, where it cannot wait: \
             call it from another thread (or use rmmap-tokio from Rust)",
        ));
    }
    Ok(runtime()?.block_on(f))
}

/// Fails when a handle made in another process (before a `fork`) is used:
/// its connection and threads belong to the parent.
pub(crate) fn check_same_process(pid: u32) -> Result<(), Failure> {
    if pid == std::process::id() {
        Ok(())
    } else {
        Err(Failure::invalid(
            "this handle was made by the parent process before fork(): connections and \
             mappings do not survive fork; connect and map again in the child",
        ))
    }
}
