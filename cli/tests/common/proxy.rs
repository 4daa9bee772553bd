//! A TCP forwarder on plain threads that can cut every connection through
//! it at once ([`Proxy::cut`]), or stand for a partition: [`Proxy::mute`]
//! stops forwarding (open connections go silent, new ones are accepted and
//! held silent) until [`Proxy::heal`] drops every connection (their streams
//! lost bytes) and forwards again.

// Shared by path with other crates' tests, which use only part of it.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Forwards connections to `upstream` (`HOST:PORT`).
pub struct Proxy {
    pub addr: String,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Bytes are forwarded (not swallowed).
    open: AtomicBool,
    stop: AtomicBool,
    /// Both sockets of every live connection.
    live: Mutex<Vec<(TcpStream, TcpStream)>>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared::default());
        shared.open.store(true, Ordering::SeqCst);
        let (s, upstream) = (shared.clone(), upstream.to_owned());
        std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                let inbound = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    Err(_) => continue,
                };
                let _ = inbound.set_nonblocking(false);
                let Ok(outbound) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                // Registered before anything flows, so that a heal drops
                // every connection that may have swallowed bytes.
                s.live
                    .lock()
                    .unwrap()
                    .push((inbound.try_clone().unwrap(), outbound.try_clone().unwrap()));
                pump(&inbound, &outbound, s.clone());
                pump(&outbound, &inbound, s.clone());
            }
        });
        Proxy { addr, shared }
    }

    /// Breaks every connection through the proxy: both ends see it close,
    /// whatever was in flight is lost. Returns how many were cut.
    pub fn cut(&self) -> usize {
        let conns = std::mem::take(&mut *self.shared.live.lock().unwrap());
        for (a, b) in &conns {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
        conns.len()
    }

    /// Stops forwarding, both ways, on every connection, old and new:
    /// what is sent is swallowed, nobody sees a close.
    pub fn mute(&self) {
        self.shared.open.store(false, Ordering::SeqCst);
    }

    /// Drops every connection made so far and forwards again.
    pub fn heal(&self) {
        self.cut();
        self.shared.open.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` on a thread (swallowing while muted) until either
/// ends, then ends both.
fn pump(from: &TcpStream, to: &TcpStream, shared: Arc<Shared>) {
    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if shared.open.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}
