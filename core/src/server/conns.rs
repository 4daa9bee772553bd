//! Connections: their handshake state, their output queues, and what
//! happens to a frame once it is decoded.

use bytes::Bytes;

use crate::Instant;
use crate::protocol::{ChunkQueue, ErrorCode, ErrorMsg, Message, Nonce, ReqId, SessionId};

use super::{Server, ServerEvent};

/// A connection, as the server numbers it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

#[derive(Debug)]
pub(crate) enum ConnState {
    AwaitHello,
    AwaitAuth {
        hello: crate::protocol::Hello,
        server_nonce: Nonce,
    },
    /// The handshake is done, but the session waits for this run's state
    /// to be recorded (frames behind the handshake wait too).
    Parked {
        hello: crate::protocol::Hello,
        rights: super::config::Rights,
        server_proof: [u8; 32],
    },
    Established(SessionId),
    Closing,
}

#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) state: ConnState,
    pub(crate) out: ChunkQueue,
    pub(crate) notified: bool,
}

impl Connection {
    pub(crate) fn new() -> Self {
        Connection {
            state: ConnState::AwaitHello,
            out: ChunkQueue::new(),
            notified: false,
        }
    }
}

/// A failed request: what to tell the client.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    pub(crate) fatal: bool,
}

impl Failure {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            fatal: false,
        }
    }

    pub(crate) fn fatal(code: ErrorCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            fatal: true,
        }
    }
}

pub(crate) fn error_msg(req: ReqId, f: &Failure) -> Message {
    let mut end = f.message.len().min(1000);
    while !f.message.is_char_boundary(end) {
        end -= 1;
    }
    let message = Bytes::copy_from_slice(&f.message.as_bytes()[..end]);
    Message::Error(ErrorMsg {
        req,
        code: f.code,
        fatal: f.fatal,
        message,
    })
}

impl Server {
    pub(super) fn push(&mut self, conn: ConnId, msg: &Message) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if matches!(c.state, ConnState::Closing) {
            return;
        }
        c.out.push_message(msg);
        if !c.notified {
            c.notified = true;
            self.events.push_back(ServerEvent::Transmit(conn));
        }
        if c.out.len() > self.config.output_hard_limit {
            // The client stopped reading. Its session lives on (and its lease
            // runs out if it never answers what was queued).
            c.out.clear();
            self.close_conn(conn);
        }
    }

    /// Sends to the session's current connection, if it has one.
    pub(super) fn send(&mut self, sid: SessionId, msg: &Message) {
        if let Some(c) = self.sessions.get(&sid).and_then(|s| s.conn) {
            self.push(c, msg);
        }
    }

    pub(super) fn close_conn(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if matches!(c.state, ConnState::Closing) {
                return;
            }
            let old = std::mem::replace(&mut c.state, ConnState::Closing);
            self.leave(conn, old);
            self.events.push_back(ServerEvent::Close(conn));
        }
    }

    /// The connection leaves `state`: a handshake ends, or its session is
    /// left without a connection (returned).
    pub(super) fn leave(&mut self, conn: ConnId, state: ConnState) -> Option<SessionId> {
        match state {
            ConnState::AwaitHello | ConnState::AwaitAuth { .. } | ConnState::Parked { .. } => {
                self.handshaking -= 1
            }
            ConnState::Established(sid) => {
                if let Some(s) = self.sessions.get_mut(&sid)
                    && s.conn == Some(conn)
                {
                    s.conn = None;
                    // Replies to nowhere need not wait for output room.
                    self.ready.extend(std::mem::take(&mut s.stalled));
                    return Some(sid);
                }
            }
            ConnState::Closing => {}
        }
        None
    }

    /// Sends a fatal error and closes the connection. A session on it loses
    /// its connection; a protocol violation also dooms the session.
    pub(super) fn fail_conn(&mut self, conn: ConnId, f: Failure) {
        self.push(conn, &error_msg(ReqId(0), &f));
        let violation = matches!(
            f.code,
            ErrorCode::Protocol | ErrorCode::Malformed | ErrorCode::FrameTooLarge
        );
        if violation
            && let Some(Connection {
                state: ConnState::Established(sid),
                ..
            }) = self.conns.get(&conn)
            && let Some(s) = self.sessions.get_mut(sid)
        {
            s.doomed = true;
        }
        self.close_conn(conn);
    }

    pub(super) fn on_message(&mut self, now: Instant, conn: ConnId, msg: Message) {
        let state = match self.conns.get(&conn) {
            Some(c) => &c.state,
            None => return,
        };
        match state {
            ConnState::Closing | ConnState::Parked { .. } => {}
            ConnState::AwaitHello => match msg {
                Message::Hello(h) => self.on_hello(now, conn, h),
                other => self.fail_conn(
                    conn,
                    Failure::fatal(
                        ErrorCode::Protocol,
                        format!("expected Hello, got {}", other.name()),
                    ),
                ),
            },
            ConnState::AwaitAuth { .. } => match msg {
                Message::Authenticate(a) => self.on_authenticate(now, conn, a),
                other => self.fail_conn(
                    conn,
                    Failure::fatal(
                        ErrorCode::Protocol,
                        format!("expected Authenticate, got {}", other.name()),
                    ),
                ),
            },
            &ConnState::Established(sid) => {
                if let Some(s) = self.sessions.get_mut(&sid)
                    && s.may_renew()
                {
                    s.lease_expiry = now + self.config.lease;
                }
                self.on_session_message(now, conn, sid, msg);
            }
        }
    }
}
