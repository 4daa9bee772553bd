//! The delaying relay: a long fat pipe between two processes on one machine.
//!
//! `e2e role relay --to ADDR --one-way-us N` listens on a free loopback
//! port and relays every connection it accepts to ADDR, each byte held for
//! N µs in each direction. It behaves like a link, not like a queue:
//!
//! - Each direction is a *line* that holds at most [`LINK_BYTES_PER_S`] ×
//!   the one-way delay (the bytes on the wire of a link of that rate:
//!   2 MiB per direction at 1 ms RTT, 41 MiB at 20 ms), shared by every
//!   connection relayed, as two hosts' connections share the link between
//!   them.
//! - A byte enters the line once the relay has read it and there is room,
//!   and is written on after it has been in the line for the delay. Order
//!   within a connection is kept (one FIFO per connection and direction).
//! - When the line is full the relay stops reading, so the sender's socket
//!   buffers fill and its writes block, as a closed TCP window would block
//!   them: back-pressure, no loss, no unbounded buffer.
//!
//! What it does not model: loss, TCP's congestion control over the long
//! path (each endpoint's connection ends at the relay, on loopback), and a
//! link slower than the relay itself (the zero-delay relay's ceiling is
//! measured in the same run and reported).
//!
//! When its stdin closes it prints a `result` line: per direction the mean
//! bytes in the line while it held any (what the endpoints kept in flight,
//! one way), the peak, the bytes moved, and the relay's own CPU seconds.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::proc::{Child, proc_cpu};
use crate::stats::{Metrics, result_line};

/// The link's rate: each direction holds this × the one-way delay. Above
/// what the relay itself moves (its zero-delay ceiling is reported), so the
/// line's size only limits a sender that keeps more than a link's worth of
/// bytes in flight, and the measurements show what the endpoints keep.
pub(crate) const LINK_BYTES_PER_S: f64 = 4.0 * (1u64 << 30) as f64;
/// The line of a zero-delay relay (it must hold at least one read).
const MIN_LINE: u64 = 1 << 20;
/// Most bytes taken from a socket at once.
const READ_MAX: usize = 256 << 10;
/// Reads land in slabs of this size; a segment in the line is a slice of
/// its slab (no copy between the read and the write).
const SLAB: usize = 4 << 20;

/// Bytes one direction holds for a one-way delay.
pub(crate) fn line_bytes(one_way: Duration) -> u64 {
    ((LINK_BYTES_PER_S * one_way.as_secs_f64()) as u64).max(MIN_LINE)
}

/// One direction of the link, shared by every relayed connection.
struct Line {
    flow: Mutex<Flow>,
    room: Condvar,
    cap: u64,
}

/// What is in a line, and its history.
#[derive(Default)]
struct Flow {
    held: u64,
    peak: u64,
    moved: u64,
    changed: Option<Instant>,
    /// ∫ held dt, over the time the line held anything.
    byte_secs: f64,
    busy_secs: f64,
}

impl Flow {
    /// Accounts for the time since the last change, at the level held then.
    fn tick(&mut self, now: Instant) {
        if let Some(t) = self.changed
            && self.held > 0
        {
            let dt = now.saturating_duration_since(t).as_secs_f64();
            self.byte_secs += self.held as f64 * dt;
            self.busy_secs += dt;
        }
        self.changed = Some(now);
    }
}

impl Line {
    fn new(cap: u64) -> Self {
        Line {
            flow: Mutex::new(Flow::default()),
            room: Condvar::new(),
            cap,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Flow> {
        self.flow.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `n` more bytes fit (an empty line takes any read), then
    /// counts them in.
    fn enter(&self, n: u64) {
        let mut f = self.lock();
        while f.held > 0 && f.held + n > self.cap {
            f = self.room.wait(f).unwrap_or_else(|e| e.into_inner());
        }
        f.tick(Instant::now());
        f.held += n;
        f.moved += n;
        f.peak = f.peak.max(f.held);
    }

    /// `n` bytes have been written on.
    fn leave(&self, n: u64) {
        let mut f = self.lock();
        f.tick(Instant::now());
        f.held -= n;
        drop(f);
        self.room.notify_all();
    }

    fn report(&self, name: &str, m: &mut Metrics) {
        let f = self.lock();
        let mib = |b: f64| b / (1u64 << 20) as f64;
        let mean = if f.busy_secs > 0.0 {
            f.byte_secs / f.busy_secs
        } else {
            0.0
        };
        m.insert(format!("{name}_mean_mib"), mib(mean));
        m.insert(format!("{name}_peak_mib"), mib(f.peak as f64));
        m.insert(format!("{name}_moved_mib"), mib(f.moved as f64));
    }
}

/// Bytes read at one instant, due to be written at `due`.
struct Segment {
    due: Instant,
    bytes: Bytes,
}

/// The relay role: relays to `to` until stdin closes, then reports.
pub(crate) fn serve(to: &str, one_way: Duration) -> Result<(), String> {
    let cap = line_bytes(one_way);
    let to_server = Arc::new(Line::new(cap));
    let to_client = Arc::new(Line::new(cap));
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    println!(
        "ready {}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let _ = std::io::stdout().flush();
    let (up, down, target) = (to_server.clone(), to_client.clone(), to.to_owned());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let relayed = TcpStream::connect(&target)
                .and_then(|server| connection(client, server, one_way, &up, &down));
            if let Err(e) = relayed {
                eprintln!("e2e relay: cannot relay to {target}: {e}");
            }
        }
    });
    crate::roles::wait_for_stdin_eof();
    let mut m = Metrics::new();
    to_server.report("to_server", &mut m);
    to_client.report("to_client", &mut m);
    m.insert("line_mib".into(), cap as f64 / (1u64 << 20) as f64);
    m.insert(
        "relay_cpu_s".into(),
        proc_cpu("self").map_or(f64::NAN, |c| c.own),
    );
    println!("{}", result_line(&m));
    Ok(())
}

/// Relays one connection: a reader and a writer thread per direction.
fn connection(
    client: TcpStream,
    server: TcpStream,
    one_way: Duration,
    to_server: &Arc<Line>,
    to_client: &Arc<Line>,
) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    direction(client.try_clone()?, server.try_clone()?, one_way, to_server)?;
    direction(server, client, one_way, to_client)
}

fn direction(
    from: TcpStream,
    to: TcpStream,
    one_way: Duration,
    line: &Arc<Line>,
) -> std::io::Result<()> {
    let (tx, rx) = channel();
    let from_for_writer = from.try_clone()?;
    let (l1, l2) = (line.clone(), line.clone());
    std::thread::spawn(move || read_into_line(from, &tx, one_way, &l1));
    std::thread::spawn(move || write_out(&rx, to, &from_for_writer, &l2));
    Ok(())
}

/// Reads what arrives, stamps it with its due time once the line has room.
fn read_into_line(mut from: TcpStream, tx: &Sender<Segment>, one_way: Duration, line: &Line) {
    let mut slab = BytesMut::new();
    loop {
        if slab.len() < READ_MAX {
            // The old slab is freed once the last of its segments is written.
            slab = BytesMut::zeroed(SLAB);
        }
        let n = match from.read(&mut slab[..READ_MAX]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let bytes = slab.split_to(n).freeze();
        line.enter(n as u64);
        let due = Instant::now() + one_way;
        if tx.send(Segment { due, bytes }).is_err() {
            line.leave(n as u64);
            break;
        }
    }
    // Dropping `tx` ends the writer once the line is empty; it then closes
    // its side for writing, passing the end of the stream on.
}

/// Writes each segment on when it is due. After a failed write (the other
/// end closed) the rest is dropped, and the reading side is shut so its
/// reader stops too.
fn write_out(rx: &Receiver<Segment>, mut to: TcpStream, from: &TcpStream, line: &Line) {
    let mut failed = false;
    for seg in rx {
        if !failed {
            let now = Instant::now();
            if seg.due > now {
                std::thread::sleep(seg.due - now);
            }
            if to.write_all(&seg.bytes).is_err() {
                failed = true;
                let _ = from.shutdown(Shutdown::Both);
            }
        }
        line.leave(seg.bytes.len() as u64);
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A relay process, as the orchestrator sees it.
pub(crate) struct Relay {
    child: Child,
    /// Where clients connect instead of the server.
    pub(crate) addr: String,
}

impl Relay {
    /// A relay in front of `to`, holding bytes `one_way` each way.
    pub(crate) fn start(to: &str, one_way: Duration) -> Result<Relay, String> {
        let mut child = Child::role(&[
            "relay".into(),
            "--to".into(),
            to.to_owned(),
            "--one-way-us".into(),
            one_way.as_micros().to_string(),
        ])?;
        let addr = child.ready()?;
        Ok(Relay { child, addr })
    }

    /// Stops it; what went through it (keys prefixed `pipe_`).
    pub(crate) fn stop(self) -> Result<Metrics, String> {
        let m = self.child.stop()?;
        Ok(m.into_iter()
            .map(|(k, v)| (format!("pipe_{k}"), v))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_holds_a_link_rate_times_the_delay() {
        assert_eq!(line_bytes(Duration::ZERO), MIN_LINE);
        assert_eq!(line_bytes(Duration::from_millis(10)), (4u64 << 30) / 100);
        assert_eq!(
            line_bytes(Duration::from_micros(500)),
            ((4u64 << 30) as f64 * 0.0005) as u64
        );
    }

    #[test]
    fn a_full_line_blocks_the_reader_until_bytes_leave() {
        let line = Arc::new(Line::new(100));
        line.enter(60);
        line.enter(40);
        let (l, entered) = (line.clone(), Arc::new(Mutex::new(false)));
        let e = entered.clone();
        let t = std::thread::spawn(move || {
            l.enter(10);
            *e.lock().unwrap() = true;
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!*entered.lock().unwrap(), "entered a full line");
        line.leave(60);
        t.join().unwrap();
        assert!(*entered.lock().unwrap());
        let mut m = Metrics::new();
        line.report("x", &mut m);
        assert_eq!(m["x_peak_mib"], 100.0 / (1u64 << 20) as f64);
        assert_eq!(m["x_moved_mib"], 110.0 / (1u64 << 20) as f64);
    }

    /// The relay delays each direction by the one-way time, keeps the
    /// bytes and their order, and passes the end of the stream on.
    #[test]
    fn bytes_arrive_in_order_after_the_delay() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => s.write_all(&buf[..n]).unwrap(),
                }
            }
        });
        let one_way = Duration::from_millis(20);
        let cap = line_bytes(one_way);
        let (up, down) = (Arc::new(Line::new(cap)), Arc::new(Line::new(cap)));
        let relay = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay_addr = relay.local_addr().unwrap();
        let (u, d) = (up.clone(), down.clone());
        std::thread::spawn(move || {
            let (c, _) = relay.accept().unwrap();
            let s = TcpStream::connect(echo_addr).unwrap();
            connection(c, s, one_way, &u, &d).unwrap();
        });
        let mut c = TcpStream::connect(relay_addr).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let start = Instant::now();
        let mut w = c.try_clone().unwrap();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(&sent).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        let took = start.elapsed();
        writer.join().unwrap();
        assert!(back == data, "bytes changed or reordered");
        assert!(took >= 2 * one_way, "a round trip took {took:?}");
        let mut m = Metrics::new();
        down.report("down", &mut m);
        assert_eq!(m["down_moved_mib"], 3_000_000.0 / (1u64 << 20) as f64);
    }
}
