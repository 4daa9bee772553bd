//! A TCP forwarder on plain threads that can cut every connection through
//! it at once (the same as cli/tests/common/proxy.rs).

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Forwards connections to `upstream`; [`Proxy::cut`] breaks them all.
pub struct Proxy {
    pub addr: String,
    /// Both sockets of every live connection.
    live: Arc<Mutex<Vec<(TcpStream, TcpStream)>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let live: Arc<Mutex<Vec<(TcpStream, TcpStream)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s, upstream) = (live.clone(), stop.clone(), upstream.to_owned());
        std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
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
                pump(&inbound, &outbound);
                pump(&outbound, &inbound);
                l.lock().unwrap().push((inbound, outbound));
            }
        });
        Proxy { addr, live, stop }
    }

    /// Breaks every connection through the proxy: both ends see it close,
    /// whatever was in flight is lost. Returns how many were cut.
    pub fn cut(&self) -> usize {
        let conns = std::mem::take(&mut *self.live.lock().unwrap());
        for (a, b) in &conns {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
        conns.len()
    }
}

/// Copies `from` to `to` on a thread until either ends, then ends both.
fn pump(from: &TcpStream, to: &TcpStream) {
    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.cut();
    }
}
