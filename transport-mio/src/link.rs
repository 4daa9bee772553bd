//! The client's link to the server: at most one TCP connection at a time
//! (TLS over it when configured: see [`Wire`]), registered in a mio
//! [`Registry`] under one [`Token`], driven by the core.
//!
//! Both clients are built on it: [`EmbeddedClient`](crate::EmbeddedClient)
//! owns the core and calls it from the user's loop; the blocking
//! [`Client`](crate::Client) calls it from its background thread with the
//! core behind a mutex. Either way the link only moves bytes and acts on the
//! core's events: `Connect` opens a non-blocking connection (its completion
//! arrives as a writable event; over TLS the handshake follows, and only
//! then does the core hear that it is connected), `Disconnect` writes the
//! last bytes the core still has and closes. Every call ends with [`Link::run`], which drains
//! the core until it has nothing more to say.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};

use bytes::Bytes;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rmmap_core::Instant;
use rmmap_core::client::{Client, ClientEvent, Completion, Event, OpError, OpId};
use rmmap_core::protocol::{Outbox, READ_CHUNK, RecvBuffer};
use rmmap_secure::ClientTls;
use rmmap_secure::mismatch::client_handshake_io_error;

use crate::wire::Wire;

/// At most this much unread input is discarded when closing a connection.
const DISCARD_ON_CLOSE: usize = 256 * 1024;

/// What the owner of the link must act on after a call.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Operations that finished.
    pub(crate) completed: Vec<(OpId, Result<Completion, OpError>)>,
    /// Connection events, in order.
    pub(crate) events: Vec<ClientEvent>,
}

enum State {
    Idle,
    /// A non-blocking connect to `stream`'s address; `rest` are the other
    /// addresses the name resolved to, tried in turn.
    Connecting {
        stream: TcpStream,
        rest: VecDeque<SocketAddr>,
    },
    /// Connected; the TLS handshake is under way.
    Handshaking(Wire),
    Open(Wire),
}

/// One client's connection, as the core asks for it.
pub(crate) struct Link {
    addr: String,
    registry: Registry,
    token: Token,
    state: State,
    /// Bytes taken from the core, not yet written.
    out: Outbox,
    /// Bytes read, not yet taken by the core (a partial frame).
    inbuf: RecvBuffer,
    /// Where small reads land before they are appended to `inbuf`
    /// (allocated at the first read).
    scratch: Option<Vec<u8>>,
    /// The socket failed; the core has not been told yet.
    broken: bool,
    /// Connect over TLS with these settings.
    tls: Option<ClientTls>,
}

impl Link {
    /// A link to `addr` (`host:port`, resolved at each connection attempt)
    /// whose sockets are registered in `registry` under `token`.
    pub(crate) fn new(addr: &str, registry: Registry, token: Token) -> Self {
        Link {
            addr: addr.to_owned(),
            registry,
            token,
            state: State::Idle,
            out: Outbox::new(),
            inbuf: RecvBuffer::new(),
            scratch: None,
            broken: false,
            tls: None,
        }
    }

    /// Connects over TLS with `tls` (plain TCP with `None`).
    pub(crate) fn with_tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    pub(crate) fn token(&self) -> Token {
        self.token
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Acts on a readiness event for the link's token.
    pub(crate) fn handle_event(
        &mut self,
        core: &mut Client,
        now: Instant,
        event: &mio::event::Event,
        out: &mut Outcome,
    ) {
        match &mut self.state {
            State::Idle => {}
            State::Connecting { .. } => {
                if event.is_writable() || event.is_error() || event.is_write_closed() {
                    self.check_connected(core, now, out);
                }
            }
            State::Handshaking(_) => self.handshake(core, now, out),
            State::Open(_) => {
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.read(core, now, out);
                }
            }
        }
        self.run(core, now, out);
    }

    /// Drains the core: acts on its events (connect, disconnect, completions)
    /// and writes what it has to send, until it has nothing more.
    pub(crate) fn run(&mut self, core: &mut Client, now: Instant, out: &mut Outcome) {
        loop {
            while let Some(ev) = core.poll_event() {
                match ev {
                    Event::Connect => self.connect(core, now),
                    Event::Disconnect => self.close(core),
                    Event::Completed { op, result } => out.completed.push((op, result)),
                    Event::Connection(ev) => out.events.push(ev),
                    _ => {}
                }
            }
            self.write(core);
            if !self.broken {
                break;
            }
            self.broken = false;
            core.handle_disconnected(now);
        }
    }

    /// Starts a connection attempt (the core asked for one).
    fn connect(&mut self, core: &mut Client, now: Instant) {
        self.drop_socket();
        let addrs: VecDeque<SocketAddr> = match self.addr.to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => return self.attempt_failed(core, now, e),
        };
        self.try_next(core, now, addrs, None);
    }

    /// Connects to the next address in `addrs`; fails the attempt (with the
    /// last error seen) when none is left.
    fn try_next(
        &mut self,
        core: &mut Client,
        now: Instant,
        mut addrs: VecDeque<SocketAddr>,
        mut last: Option<io::Error>,
    ) {
        while let Some(a) = addrs.pop_front() {
            let started = TcpStream::connect(a).and_then(|mut s| {
                self.registry.register(
                    &mut s,
                    self.token,
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(s)
            });
            match started {
                Ok(stream) => {
                    self.state = State::Connecting {
                        stream,
                        rest: addrs,
                    };
                    return;
                }
                Err(e) => last = Some(e),
            }
        }
        let e = last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the address resolved to nothing")
        });
        self.attempt_failed(core, now, e);
    }

    fn attempt_failed(&mut self, core: &mut Client, now: Instant, e: io::Error) {
        tracing::debug!(addr = %self.addr, error = %e, "connection attempt failed");
        self.drop_socket();
        core.handle_connect_failed(now, e);
    }

    /// A connecting socket became writable (or failed): connected yet?
    fn check_connected(&mut self, core: &mut Client, now: Instant, out: &mut Outcome) {
        let State::Connecting { stream, .. } = &mut self.state else {
            return;
        };
        let failed = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => return,
                Err(e) => Some(e),
            },
        };
        match failed {
            None => {
                let _ = stream.set_nodelay(true);
                let State::Connecting { stream, .. } =
                    std::mem::replace(&mut self.state, State::Idle)
                else {
                    unreachable!("checked above")
                };
                self.out.clear();
                self.inbuf.clear();
                match &self.tls {
                    None => {
                        self.state = State::Open(Wire::Plain(stream));
                        core.handle_connected(now);
                    }
                    Some(tls) => {
                        let started = tls
                            .name_for(&self.addr)
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
                            .and_then(|name| Wire::tls_client(stream, tls.config.clone(), name));
                        match started {
                            Ok(wire) => {
                                self.state = State::Handshaking(wire);
                                self.handshake(core, now, out);
                            }
                            Err(e) => self.attempt_failed(core, now, e),
                        }
                    }
                }
            }
            Some(e) => {
                let State::Connecting { mut stream, rest } =
                    std::mem::replace(&mut self.state, State::Idle)
                else {
                    unreachable!("checked above")
                };
                let _ = self.registry.deregister(&mut stream);
                drop(stream);
                self.try_next(core, now, rest, Some(e));
            }
        }
    }

    /// Moves the TLS handshake on; once it is done the core is connected.
    fn handshake(&mut self, core: &mut Client, now: Instant, out: &mut Outcome) {
        let State::Handshaking(wire) = &mut self.state else {
            return;
        };
        match wire.handshake() {
            Ok(false) => {}
            Ok(true) => {
                let State::Handshaking(wire) = std::mem::replace(&mut self.state, State::Idle)
                else {
                    unreachable!("checked above")
                };
                self.state = State::Open(wire);
                core.handle_connected(now);
                // Plaintext that came with the end of the handshake.
                self.read(core, now, out);
            }
            Err(e) => {
                let name = self
                    .tls
                    .as_ref()
                    .and_then(|t| t.name_for(&self.addr).ok())
                    .map(|n| n.to_str().into_owned())
                    .unwrap_or_default();
                let e = client_handshake_io_error(e, &self.addr, &name);
                self.attempt_failed(core, now, e);
            }
        }
    }

    /// Reads until the socket would block, feeding the core after each read.
    fn read(&mut self, core: &mut Client, now: Instant, out: &mut Outcome) {
        loop {
            let State::Open(stream) = &mut self.state else {
                return;
            };
            let large = self.inbuf.filling() || self.inbuf.room_wanted(READ_CHUNK) > READ_CHUNK;
            let r = if large {
                // The rest of a large frame: straight into the buffer, which
                // is zero-filled once for the whole frame (no second copy).
                let r = stream.read(self.inbuf.read_space(READ_CHUNK));
                if let Ok(n) = r {
                    self.inbuf.advance_read(n);
                }
                r
            } else {
                // Small reads go through a reused scratch buffer: zero-filling
                // a fresh 64 KiB of `inbuf` for every 4 KiB reply (the core
                // keeps the pages it decodes, so the buffer is rarely reused)
                // cost more, in memset and page faults, than copying what came.
                let scratch = self.scratch.get_or_insert_with(|| vec![0; READ_CHUNK]);
                let r = stream.read(scratch);
                if let Ok(n) = r {
                    self.inbuf.bytes().extend_from_slice(&scratch[..n]);
                }
                r
            };
            match r {
                Ok(0) => return self.fail(),
                // Nothing to decode before the large frame is whole.
                Ok(_) if self.inbuf.filling() => {}
                Ok(_) => {
                    core.handle_input(now, self.inbuf.bytes());
                    // The core may have closed this connection (a Goodbye, a
                    // bad frame) or asked for another.
                    self.run(core, now, out);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(),
            }
        }
    }

    /// Writes what the core has to send until the socket would block.
    fn write(&mut self, core: &mut Client) {
        let State::Open(stream) = &mut self.state else {
            return;
        };
        while let Some(b) = core.poll_transmit() {
            self.out.push(b);
        }
        while !self.out.is_empty() {
            match stream.write_vectored(&self.out.io_slices()) {
                Ok(0) => return self.fail(),
                Ok(n) => self.out.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(),
            }
        }
        // TLS records still buffered (a writable event brings us back).
        match stream.flush() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => self.fail(),
            _ => {}
        }
    }

    /// The socket failed: drop it and tell the core at the end of this run.
    fn fail(&mut self) {
        self.drop_socket();
        self.broken = true;
    }

    /// Ends the current connection as the core asked: its last bytes (a
    /// `Bye`) are written if the socket takes them without waiting, then
    /// the socket is shut down and closed.
    fn close(&mut self, core: &mut Client) {
        let last: Vec<Bytes> = std::iter::from_fn(|| core.poll_transmit()).collect();
        if let State::Open(stream) = &mut self.state {
            self.out.extend(last);
            while !self.out.is_empty() {
                match stream.write_vectored(&self.out.io_slices()) {
                    Ok(n) if n > 0 => self.out.advance(n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    _ => break,
                }
            }
            stream.shutdown_write();
            // Unread input would make the close a reset, which can destroy
            // the bytes just written before the server reads them.
            let mut sink = [0u8; 4096];
            let mut discarded = 0;
            while discarded < DISCARD_ON_CLOSE {
                match stream.tcp().read(&mut sink) {
                    Ok(n) if n > 0 => discarded += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    _ => break,
                }
            }
        }
        self.drop_socket();
        self.broken = false;
    }

    fn drop_socket(&mut self) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => {}
            State::Connecting { mut stream, .. } => {
                let _ = self.registry.deregister(&mut stream);
            }
            State::Handshaking(mut wire) | State::Open(mut wire) => {
                let _ = self.registry.deregister(&mut wire);
            }
        }
        self.out.clear();
        self.inbuf.clear();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.drop_socket();
    }
}
