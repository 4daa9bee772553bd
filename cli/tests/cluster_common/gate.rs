//! A TCP forwarder to etcd, on plain threads, that can stand for a
//! partition: [`Gate::cut`] stops forwarding (open connections go silent,
//! new ones are accepted and held silent), [`Gate::heal`] drops every
//! connection (their streams lost bytes) and forwards again.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Forwards connections to an etcd; a member given [`Gate::url`] as its
/// `--cluster` reaches etcd only through it.
pub struct Gate {
    /// `http://127.0.0.1:PORT`, for `--cluster`.
    pub url: String,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    open: AtomicBool,
    stop: AtomicBool,
    /// One end of every connection, to drop them all.
    live: Mutex<Vec<TcpStream>>,
}

impl Gate {
    /// Forwards to `upstream`, an `http://HOST:PORT` URL.
    pub fn start(upstream: &str) -> Gate {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        shared.open.store(true, Ordering::SeqCst);
        let s = shared.clone();
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
                let mut live = s.live.lock().unwrap();
                live.push(inbound.try_clone().unwrap());
                live.push(outbound.try_clone().unwrap());
                drop(live);
                pump(&inbound, &outbound, s.clone());
                pump(&outbound, &inbound, s.clone());
            }
        });
        Gate { url, shared }
    }

    /// Stops forwarding, both ways, on every connection, old and new.
    pub fn cut(&self) {
        self.shared.open.store(false, Ordering::SeqCst);
    }

    /// Drops every connection made so far and forwards again.
    pub fn heal(&self) {
        let mut live = self.shared.live.lock().unwrap();
        for s in live.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.shared.open.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` on a thread while the gate is open, swallows
/// while it is cut, and ends both when either ends.
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

impl Drop for Gate {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
