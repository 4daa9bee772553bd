//! A connection's byte stream: plain TCP, or TLS over it with rustls's own
//! connection object driven over the non-blocking socket.
//!
//! [`Wire`] reads and writes plaintext through `Read` and `Write` with the
//! same non-blocking contract as a `TcpStream`, so the link and the
//! server's connections treat both alike:
//!
//! * `read` hands out plaintext rustls has already decrypted; when there
//!   is none it reads TLS records from the socket, processes them, and
//!   writes whatever rustls wants to answer (handshake messages, alerts).
//!   It returns `WouldBlock` only when the socket did, and `Ok(0)` at the
//!   end of the stream.
//! * `write` gives plaintext to rustls, which encrypts it into a bounded
//!   buffer, then writes records to the socket until it would block. When
//!   the buffer is full and the socket takes nothing, it returns
//!   `WouldBlock`; records still buffered go out on `flush`, which the
//!   owner calls when it has nothing more to write and on every writable
//!   event.
//! * [`Wire::shutdown_write`] sends TLS's `close_notify` before shutting
//!   the socket's write side.
//!
//! On the server, the first byte a client sends tells TLS from plaintext
//! (see [`rmmap_secure::mismatch`]): a plaintext client gets the refusal
//! in plaintext, and from then on its input is discarded until it closes
//! and nothing more is written to it.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rmmap_secure::mismatch::{plaintext_refusal, starts_tls};
use rmmap_secure::rustls;
use rmmap_secure::rustls::pki_types::ServerName;

/// A refused plaintext client is dropped once it has sent this much more:
/// a real rmmap client sends a `Hello` (at most 4 KiB) and perhaps a `Ping`.
const MAX_DISCARD: usize = 64 * 1024;

/// A connection's byte stream.
pub(crate) enum Wire {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<Tls>),
}

/// TLS state over one socket.
pub(crate) struct Tls {
    tcp: TcpStream,
    conn: rustls::Connection,
    /// Server side: the first byte is still to be checked.
    sniff: bool,
    /// A plaintext client was refused: discard its input until it closes.
    refused: bool,
    /// Bytes discarded since the refusal.
    discarded: usize,
}

impl Wire {
    /// A TLS client connection checking the server's certificate for `name`.
    pub(crate) fn tls_client(
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<Wire> {
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        Ok(Wire::Tls(Box::new(Tls {
            tcp,
            conn: conn.into(),
            sniff: false,
            refused: false,
            discarded: 0,
        })))
    }

    /// A TLS server connection (or plain TCP without `config`).
    pub(crate) fn accepted(
        tcp: TcpStream,
        config: Option<&Arc<rustls::ServerConfig>>,
    ) -> io::Result<Wire> {
        let Some(config) = config else {
            return Ok(Wire::Plain(tcp));
        };
        let conn = rustls::ServerConnection::new(config.clone()).map_err(io::Error::other)?;
        Ok(Wire::Tls(Box::new(Tls {
            tcp,
            conn: conn.into(),
            sniff: true,
            refused: false,
            discarded: 0,
        })))
    }

    /// The socket underneath.
    pub(crate) fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Wire::Plain(t) => t,
            Wire::Tls(t) => &mut t.tcp,
        }
    }

    /// Sets `TCP_NODELAY` (the protocol pipelines small frames).
    pub(crate) fn set_nodelay(&mut self, on: bool) -> io::Result<()> {
        self.tcp().set_nodelay(on)
    }

    /// Client side: moves the TLS handshake on as far as the socket allows.
    /// `Ok(true)` once it is complete (at once for plain TCP). A rustls
    /// failure comes back as an `InvalidData` error wrapping it.
    pub(crate) fn handshake(&mut self) -> io::Result<bool> {
        let Wire::Tls(t) = self else { return Ok(true) };
        loop {
            match t.send_records() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
            if !t.conn.is_handshaking() {
                return Ok(true);
            }
            match t.conn.read_tls(&mut t.tcp) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => t.process()?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Ends the write side: `close_notify` first over TLS (best effort,
    /// without blocking), then the socket's shutdown.
    pub(crate) fn shutdown_write(&mut self) {
        if let Wire::Tls(t) = self
            && !t.refused
        {
            t.conn.send_close_notify();
            let _ = t.send_records();
        }
        let _ = self.tcp().shutdown(Shutdown::Write);
    }
}

impl Tls {
    /// Writes buffered TLS records until none is left or the socket would
    /// block.
    fn send_records(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Processes the records read, then sends what rustls answers (an alert
    /// too, when processing failed).
    fn process(&mut self) -> io::Result<()> {
        let r = self.conn.process_new_packets();
        let _ = self.send_records();
        r.map(|_| ())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Server side: looks at the first byte without taking it; refuses a
    /// plaintext client.
    fn sniff(&mut self) -> io::Result<()> {
        let mut first = [0u8; 1];
        if self.tcp.peek(&mut first)? == 1 && !starts_tls(first[0]) {
            self.refused = true;
            // The socket's buffer is empty: the refusal fits at once.
            let _ = self.tcp.write_all(&plaintext_refusal());
            let _ = self.tcp.shutdown(Shutdown::Write);
        }
        self.sniff = false;
        Ok(())
    }

    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.sniff {
            self.sniff()?;
        }
        if self.refused {
            return self.discard();
        }
        let mut eof = false;
        loop {
            match self.conn.reader().read(buf) {
                // Ok(0): the peer's close_notify.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && eof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(&mut self.tcp) {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.process()?;
        }
    }

    /// Discards one chunk of a refused client's input. `Interrupted` after
    /// a chunk, so the server's read loop counts it against the connection's
    /// share of the turn; `Ok(0)` (closing) at the end of the stream or past
    /// [`MAX_DISCARD`].
    fn discard(&mut self) -> io::Result<usize> {
        let mut sink = [0u8; 4096];
        match self.tcp.read(&mut sink)? {
            0 => Ok(0),
            n => {
                self.discarded += n;
                if self.discarded > MAX_DISCARD {
                    return Ok(0);
                }
                Err(io::ErrorKind::Interrupted.into())
            }
        }
    }

    fn write_plain(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if self.refused {
            return Ok(len);
        }
        loop {
            let n = self.conn.writer().write_vectored(bufs)?;
            if n > 0 || len == 0 {
                match self.send_records() {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                    _ => return Ok(n),
                }
            }
            // rustls's buffer is full: make room, or wait for the socket.
            if !self.conn.wants_write() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.send_records()?;
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(t) => t.read(buf),
            Wire::Tls(t) => t.read_plain(buf),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Wire::Plain(t) => t.write_vectored(bufs),
            Wire::Tls(t) => t.write_plain(bufs),
        }
    }

    /// Sends the TLS records still buffered; `WouldBlock` if the socket
    /// cannot take them all yet.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Wire::Plain(_) => Ok(()),
            Wire::Tls(t) if t.refused => Ok(()),
            Wire::Tls(t) => t.send_records(),
        }
    }
}

impl mio::event::Source for Wire {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp().register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.tcp().deregister(registry)
    }
}
