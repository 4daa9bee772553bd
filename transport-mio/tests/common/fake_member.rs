//! A fake cluster member for the tests of clients that follow `moved`: a
//! loopback listener that speaks just enough of the protocol to welcome a
//! client and answer every `Map` and `SetLen` with the error its script
//! says. Blocking (a thread per connection), so any test can use it; the
//! CLI's tests include this file too.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use rmmap_core::protocol::{
    ErrorCode, ErrorMsg, HARD_MAX_FRAME, Message, Pong, ReqId, ResumeStatus, RevId, SessionId,
    Welcome, decode_frame,
};

type Script = Arc<dyn Fn(usize) -> (ErrorCode, String) + Send + Sync>;

/// A member that owns nothing: answers the `n`th `Map` or `SetLen` (from
/// 0, over every connection) with the error `script(n)`.
pub struct FakeMember {
    pub addr: String,
    asked: Arc<AtomicUsize>,
}

impl FakeMember {
    pub fn start(script: impl Fn(usize) -> (ErrorCode, String) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let asked = Arc::new(AtomicUsize::new(0));
        let (counter, script): (_, Script) = (asked.clone(), Arc::new(script));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (counter, script) = (counter.clone(), script.clone());
                std::thread::spawn(move || serve(stream, &counter, &*script));
            }
        });
        FakeMember { addr, asked }
    }

    pub fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

fn serve(
    mut stream: TcpStream,
    asked: &AtomicUsize,
    script: &dyn Fn(usize) -> (ErrorCode, String),
) {
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        let message = match decode_frame(&mut buf, HARD_MAX_FRAME) {
            Ok(Some(m)) => m,
            Ok(None) => match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    continue;
                }
            },
            Err(_) => return,
        };
        let error = |req: ReqId| {
            let (code, message) = script(asked.fetch_add(1, Ordering::SeqCst));
            Message::Error(ErrorMsg {
                req,
                code,
                fatal: false,
                message: Bytes::from(message),
            })
        };
        let reply = match message {
            Message::Hello(h) => Message::Welcome(Welcome {
                version: h.version,
                status: ResumeStatus::New,
                session: SessionId(1),
                token: [9; 16],
                epoch: 1,
                page_size: 4096,
                lease_ms: 10_000,
                max_frame: 4 << 20,
                max_pages_per_request: 256,
                max_inflight: 64,
                max_mappings: 64,
                rights: 1,
                rev_acked: RevId(0),
                server_proof: [0; 32],
            }),
            Message::Ping(p) => Message::Pong(Pong {
                nonce: p.nonce,
                renewed: true,
                rev_acked: RevId(0),
            }),
            Message::Map(m) => error(m.req),
            Message::SetLen(s) => error(s.req),
            Message::Bye => return,
            _ => continue,
        };
        if stream.write_all(&reply.to_bytes()).is_err() {
            return;
        }
    }
}
