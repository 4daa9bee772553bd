//! The hostile side: a raw TCP connection that sends whatever frames (or
//! bytes) a case makes with `rmmap_core::protocol`, and reads the server's
//! frames back one by one.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rmmap_core::protocol::{
    ErrorCode, ErrorMsg, Fetch, HARD_MAX_FRAME, Hello, Map, Message, PROTOCOL_VERSION, Ping, ReqId,
    Resume, Welcome, WireMappingId, check_frame, decode_frame,
};

use super::PATIENCE;

/// What the next read brought.
#[derive(Debug)]
pub enum Recv {
    Frame(Message),
    /// The server closed the connection (EOF or reset).
    Closed,
}

pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

/// A Hello without authentication or resumption.
pub fn hello() -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        max_frame: 4 << 20,
        client_nonce: [7; 16],
        client_name: Bytes::new(),
        resume: None,
    }
}

/// A Hello that resumes the session `w` began.
pub fn resume_hello(w: &Welcome) -> Hello {
    Hello {
        resume: Some(Resume {
            session: w.session,
            token: w.token,
            epoch: w.epoch,
        }),
        ..hello()
    }
}

pub fn map_msg(req: u64, path: &[u8], flags: u8, offset: u64, len: u64) -> Message {
    Message::Map(Map {
        req: ReqId(req),
        flags,
        offset,
        len,
        path: Bytes::copy_from_slice(path),
    })
}

pub fn fetch_msg(req: u64, mapping: WireMappingId, first: u64, count: u32, flags: u8) -> Message {
    Message::Fetch(Fetch {
        req: ReqId(req),
        mapping,
        first_page: first,
        count,
        flags,
    })
}

impl Raw {
    pub fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Connects and completes a plain handshake.
    pub fn handshake(addr: &str) -> (Raw, Welcome) {
        let mut r = Raw::connect(addr);
        r.send(&Message::Hello(hello()));
        match r.recv() {
            Recv::Frame(Message::Welcome(w)) => (r, w),
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    /// Sends one frame; the server may already have closed (errors ignored:
    /// what it answered is what the case checks).
    pub fn send(&mut self, m: &Message) {
        let _ = self.stream.write_all(&m.to_bytes());
    }

    pub fn send_raw(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(b)
    }

    /// No more bytes from us (the server sees EOF).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// The next frame, or the close, within `within`; `None` if neither.
    pub fn try_recv(&mut self, within: Duration) -> Option<Recv> {
        let start = Instant::now();
        loop {
            match decode_frame(&mut self.buf, HARD_MAX_FRAME) {
                Ok(Some(m)) => return Some(Recv::Frame(m)),
                Ok(None) => {}
                Err(e) => panic!("the server sent an undecodable frame: {e}"),
            }
            if start.elapsed() > within {
                return None;
            }
            if !self.read_some() {
                return Some(Recv::Closed);
            }
        }
    }

    /// Reads what the socket has (waiting at most its read timeout); false
    /// once the server has closed.
    fn read_some(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => true,
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            // Reset: the server closed with our input unread.
            Err(_) => false,
        }
    }

    /// The next frame as it came on the wire, without its length prefix
    /// (the type byte, then the body), undecoded; `None` if the server
    /// closed. Panics after [`PATIENCE`].
    pub fn recv_bytes(&mut self) -> Option<Bytes> {
        let start = Instant::now();
        loop {
            match check_frame(&self.buf, HARD_MAX_FRAME) {
                Ok(Some(total)) => {
                    let mut frame = self.buf.split_to(total).freeze();
                    let _ = frame.split_to(4);
                    return Some(frame);
                }
                Ok(None) => {}
                Err(e) => panic!("the server sent an impossible length prefix: {e}"),
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the server sent nothing for {PATIENCE:?}"
            );
            if !self.read_some() {
                return None;
            }
        }
    }

    /// Sends a Ping and returns every frame the server sent before its
    /// Pong: what it had to say up to that point.
    pub fn until_pong(&mut self, nonce: u64) -> Vec<Message> {
        self.send(&Message::Ping(Ping { nonce }));
        let mut frames = Vec::new();
        loop {
            match self.recv() {
                Recv::Frame(Message::Pong(p)) if p.nonce == nonce => return frames,
                Recv::Frame(m) => frames.push(m),
                Recv::Closed => panic!("closed before the pong; got {frames:?}"),
            }
        }
    }

    /// The next frame or the close; panics after [`PATIENCE`].
    pub fn recv(&mut self) -> Recv {
        self.try_recv(PATIENCE)
            .unwrap_or_else(|| panic!("the server sent nothing for {PATIENCE:?}"))
    }

    /// Reads until the server closes; returns every frame it sent.
    pub fn until_closed(&mut self) -> Vec<Message> {
        let mut frames = Vec::new();
        loop {
            match self.recv() {
                Recv::Frame(m) => frames.push(m),
                Recv::Closed => return frames,
            }
        }
    }

    /// The server must end the connection with a fatal `Error(code)` for the
    /// connection (req 0) that says something, then close. Frames before it
    /// (replies, pongs) are skipped. Returns the message.
    pub fn expect_fatal(&mut self, code: ErrorCode) -> String {
        let frames = self.until_closed();
        let err = frames.iter().find_map(|m| match m {
            Message::Error(e) if e.fatal => Some(e.clone()),
            _ => None,
        });
        let Some(e) = err else {
            panic!("expected a fatal {code} error before the close, got {frames:?}");
        };
        check_error(&e, code, true);
        assert_eq!(e.req, ReqId(0), "a connection error names no request");
        String::from_utf8_lossy(&e.message).into_owned()
    }

    /// The reply to request `req`, skipping anything else (pongs).
    pub fn reply(&mut self, req: u64) -> Message {
        loop {
            match self.recv() {
                Recv::Frame(m) if reply_req(&m) == Some(ReqId(req)) => return m,
                Recv::Frame(Message::Error(e)) if e.fatal => {
                    panic!("fatal error while waiting for reply {req}: {e:?}")
                }
                Recv::Frame(_) => {}
                Recv::Closed => panic!("closed while waiting for the reply to {req}"),
            }
        }
    }

    /// Maps and returns the mapping, panicking on an error.
    pub fn map(&mut self, req: u64, path: &str, flags: u8, offset: u64, len: u64) -> WireMappingId {
        self.send(&map_msg(req, path.as_bytes(), flags, offset, len));
        match self.reply(req) {
            Message::Mapped(m) => m.mapping,
            other => panic!("map {path}: {other:?}"),
        }
    }
}

/// Checks an error's code, fatality, and that its message says something.
pub fn check_error(e: &ErrorMsg, code: ErrorCode, fatal: bool) {
    let text = String::from_utf8_lossy(&e.message);
    assert_eq!(e.code, code, "wrong error code; message {text:?}");
    assert_eq!(e.fatal, fatal, "fatal flag of {code} ({text:?})");
    assert!(
        text.len() >= 10,
        "the {code} error should say what was wrong: {text:?}"
    );
}

/// The request a server frame answers, if any.
pub fn reply_req(m: &Message) -> Option<ReqId> {
    Some(match m {
        Message::Error(e) if e.req != ReqId(0) => e.req,
        Message::Mapped(x) => x.req,
        Message::Unmapped(x) => x.req,
        Message::Pages(x) => x.req,
        Message::WriteAck(x) => x.req,
        Message::Synced(x) => x.req,
        Message::Revalidated(x) => x.req,
        Message::LenSet(x) => x.req,
        Message::AtomicDone(x) => x.req,
        _ => return None,
    })
}
