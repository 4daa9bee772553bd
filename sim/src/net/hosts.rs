//! The software of the simulated hosts: the real `rmmap-tokio` server over
//! a [`MemStore`](rmmap_core::store::MemStore), and client processes that
//! keep their files mapped and run the operations the controller posts.
//!
//! A client host runs four kinds of task on its turmoil runtime: the main
//! task (connects, then starts the operations posted to its inbox), an event
//! watcher (records connection events as they are published), a mapping
//! maintainer (maps what is not mapped, unmaps what lost writes) and one
//! task per operation.

use std::time::Duration;

use rmmap_core::server::ServerConfig;
use rmmap_tokio::{
    Access, AtomicOp, Client, ClientConfig, ConnectError, OpError, ServeOptions, Server,
};
use tokio::task::spawn_local;

use super::lab::{Done, LabRef, Posted, Slot, host_now};
use super::sabotage::LyingDisk;
use super::sockets::{SimConnector, SimListener};
use crate::workload::{Layout, Planned};

/// The port the server listens on.
pub(crate) const PORT: u16 = 7411;

/// A 32-byte seed for rmmap's cores, from the run's seed and a purpose.
pub(crate) fn core_seed(seed: u64, purpose: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut rng = crate::rng::SimRng::new(seed, 0x5EED_0000 + purpose);
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&rng.below(u64::MAX).to_le_bytes());
    }
    out
}

/// The server host: serves the shared store until the host crashes.
pub(crate) async fn server_host(lab: LabRef, cfg: ServerConfig, seed: [u8; 32]) -> turmoil::Result {
    let store = {
        let l = lab.borrow();
        LyingDisk::new(l.store.clone(), l.lying.clone())
    };
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    let options = ServeOptions {
        // Everything must run on the host's turmoil runtime, the disk too,
        // so that a seed replays exactly.
        dedicated_thread: false,
        disk_threads: 0,
        seed: Some(seed),
        ..ServeOptions::default()
    };
    let server = Server::serve(SimListener(listener), cfg, store, options)?;
    lab.borrow_mut().line(host_now(), "server up");
    // Keeps the server until the host crashes: dropping it would shut down
    // gracefully, which a crash never does.
    std::future::pending::<()>().await;
    drop(server);
    Ok(())
}

/// A client host: one client process, from boot until the host crashes.
pub(crate) async fn client_host(
    lab: LabRef,
    host: usize,
    cfg: ClientConfig,
    seed: u64,
) -> turmoil::Result {
    let cid = lab.borrow_mut().boot_client(host, host_now());
    let addr = format!("server:{PORT}");
    let mut attempt = 0u64;
    let client = loop {
        attempt += 1;
        let core = core_seed(seed, ((cid as u64) << 16) | attempt);
        match Client::connect_seeded(SimConnector, &addr, cfg.clone(), core).await {
            Ok(c) => break c,
            Err(e) => {
                {
                    let mut l = lab.borrow_mut();
                    if let ConnectError::Handshake { .. } = e {
                        l.stats.handshakes_cut += 1;
                    }
                    l.line(host_now(), format!("client {cid} cannot connect: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(100 * attempt.min(10))).await;
            }
        }
    };
    let wake = client.events();
    lab.borrow_mut()
        .client_ready(host, client.clone(), client.events(), host_now());
    spawn_local(watch_events(lab.clone(), host, wake));
    spawn_local(maintain_mappings(lab.clone(), host, client));
    let work = lab.borrow().hosts[host].work.clone();
    loop {
        work.notified().await;
        loop {
            let next = lab.borrow_mut().hosts[host].inbox.pop_front();
            let Some(posted) = next else { break };
            spawn_local(run_op(lab.clone(), host, posted));
        }
    }
}

/// Records connection events as soon as they are published. `wake` is a
/// second subscription used only to learn that something was published;
/// the lab's own receiver is read, so every path records events in order.
async fn watch_events(
    lab: LabRef,
    host: usize,
    mut wake: tokio::sync::broadcast::Receiver<rmmap_tokio::ClientEvent>,
) {
    loop {
        match wake.recv().await {
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                lab.borrow_mut().pump(host, host_now());
            }
            Err(_) => return,
        }
    }
}

/// Maps every file that is not mapped and unmaps every mapping that lost
/// writes, whenever woken (and every quarter second, to retry failures).
async fn maintain_mappings(lab: LabRef, host: usize, client: Client) {
    let maint = lab.borrow().hosts[host].maint.clone();
    loop {
        let (to_map, to_unmap) = {
            let mut l = lab.borrow_mut();
            let (mut map, mut unmap) = (Vec::new(), Vec::new());
            for f in 0..l.hosts[host].slots.len() {
                match &l.hosts[host].slots[f] {
                    Slot::Idle => {
                        map.push((f, l.layout.len(f)));
                        l.hosts[host].slots[f] = Slot::Opening;
                    }
                    Slot::Lost(m) => {
                        unmap.push((f, m.clone()));
                        l.hosts[host].slots[f] = Slot::Unmapping;
                    }
                    _ => {}
                }
            }
            (map, unmap)
        };
        for (f, len) in to_map {
            spawn_local(map_file(lab.clone(), host, client.clone(), f, len));
        }
        for (f, m) in to_unmap {
            spawn_local(unmap_file(lab.clone(), host, f, m));
        }
        tokio::select! {
            biased;
            _ = maint.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

async fn map_file(lab: LabRef, host: usize, client: Client, file: usize, len: u64) {
    let r = client
        .map(&Layout::path(file), 0..len, Access::ReadWrite)
        .await;
    let failed = r.is_err();
    {
        let mut l = lab.borrow_mut();
        let now = host_now();
        l.pump(host, now);
        let cid = l.hosts[host].cid.map_or("-".into(), |c| c.to_string());
        match r {
            Ok(m) => {
                l.line(now, format!("client {cid} mapped f{file} as {:?}", m.id()));
                l.hosts[host].slots[file] = Slot::Ready(m);
                return;
            }
            Err(e) => l.line(now, format!("client {cid} map f{file} failed: {e}")),
        }
    }
    if failed {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut l = lab.borrow_mut();
        l.hosts[host].slots[file] = Slot::Idle;
        l.hosts[host].maint.notify_one();
    }
}

async fn unmap_file(lab: LabRef, host: usize, file: usize, m: rmmap_tokio::Mapping) {
    let id = m.id();
    let r = m.unmap().await;
    let mut l = lab.borrow_mut();
    let now = host_now();
    l.pump(host, now);
    let cid = l.hosts[host].cid.map_or("-".into(), |c| c.to_string());
    l.line(
        now,
        format!(
            "client {cid} unmapped f{file} ({id:?}): {:?}",
            r.map_err(|e| e.kind())
        ),
    );
    l.hosts[host].slots[file] = Slot::Idle;
    l.hosts[host].maint.notify_one();
}

/// Runs one posted operation and records it.
async fn run_op(lab: LabRef, host: usize, posted: Posted) {
    let Some((id, m)) = lab.borrow_mut().invoke(host, &posted, host_now()) else {
        return;
    };
    let result: Result<Done, OpError> = match posted.op {
        Planned::Read { offset, len, .. } => m.read_bytes(offset, len).await.map(Done::Read),
        Planned::Write { offset, data, .. } => {
            m.write_bytes(offset, data).await.map(|()| Done::Unit)
        }
        Planned::Sync { .. } => m.sync().await.map(|()| Done::Unit),
        Planned::Swap { cell, new } => m
            .atomic(cell.offset, AtomicOp::Swap(new))
            .await
            .map(|(p, a)| Done::Atomic(p, a)),
        Planned::Cas {
            cell,
            expected,
            new,
        } => m
            .atomic(cell.offset, AtomicOp::CompareExchange { expected, new })
            .await
            .map(|(p, a)| Done::Atomic(p, a)),
        // The word's new value, as a read of it; a timeout observed nothing.
        Planned::Wait {
            cell,
            current,
            timeout,
        } => m
            .wait_while(cell.offset, current, timeout)
            .await
            .map(|v| match v {
                Some(v) => Done::Read(bytes::Bytes::copy_from_slice(&v.to_le_bytes())),
                None => Done::TimedOut,
            }),
    };
    lab.borrow_mut().complete(host, id, result, host_now());
}
