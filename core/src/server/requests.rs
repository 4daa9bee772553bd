//! Everything a session may send after the handshake.

use bytes::Bytes;

use crate::Instant;
use crate::path::ExportPath;
use crate::protocol::{ErrorCode, Message, Pong, ReqId, SessionId};
use crate::store::{RUN_STATE_NAME, StoreError};

use super::cluster::ShardUse;
use super::session::MappingEntry;
use super::{ConnId, Failure, Server, error_msg};

/// A request's outcome: a reply now (and whether to remember it for
/// retransmissions), or later (an operation was started).
pub(super) type Outcome = Result<Option<(Message, bool)>, Failure>;

impl Server {
    pub(super) fn on_session_message(
        &mut self,
        now: Instant,
        conn: ConnId,
        sid: SessionId,
        msg: Message,
    ) {
        let r = match msg {
            Message::Ping(p) => {
                let s = &self.sessions[&sid];
                let pong = Pong {
                    nonce: p.nonce,
                    renewed: s.may_renew(),
                    rev_acked: s.rev_acked,
                };
                self.push(conn, &Message::Pong(pong));
                Ok(())
            }
            Message::Bye => {
                self.end_session_quietly(now, sid);
                Ok(())
            }
            Message::InvalidateAck(a) => self.on_revocation_ack(now, sid, a.rev, &[], false),
            Message::RecallAck(a) => self.on_revocation_ack(now, sid, a.rev, &a.patches, true),
            Message::Release(r) => {
                self.on_release(sid, &r);
                Ok(())
            }
            Message::Map(m) => {
                self.on_request(now, sid, m.req, false, |s, now| s.do_map(now, sid, m))
            }
            Message::Unmap(m) => {
                self.on_request(now, sid, m.req, false, |s, now| s.do_unmap(now, sid, m))
            }
            Message::Fetch(m) => self.on_request(now, sid, m.req, true, |s, now| {
                s.mapping_served(now, sid, m.mapping, ShardUse::Grant)?;
                s.do_fetch(now, sid, m)
            }),
            // While its shard drains, an owner's write-back still lands:
            // it crossed the drain's recall, which waits for it.
            Message::WriteBack(m) => self.on_request(now, sid, m.req, false, |s, now| {
                s.mapping_served(now, sid, m.mapping, ShardUse::Land)?;
                s.do_write_back(sid, m)
            }),
            // A sync writes nothing new: after a drain it finds this
            // member's part durable; after a loss its session is gone.
            Message::Sync(m) => self.on_request(now, sid, m.req, true, |s, _| s.do_sync(sid, m)),
            Message::Revalidate(m) => self.on_request(now, sid, m.req, true, |s, now| {
                s.mapping_served(now, sid, m.mapping, ShardUse::Grant)?;
                s.do_revalidate(sid, m)
            }),
            Message::Refresh(m) => self.on_request(now, sid, m.req, true, |s, now| {
                s.mapping_served(now, sid, m.mapping, ShardUse::Grant)?;
                s.do_refresh(now, sid, m)
            }),
            Message::SetLen(m) => {
                self.on_request(now, sid, m.req, false, |s, now| s.do_set_len(now, sid, m))
            }
            Message::Atomic(m) => self.on_request(now, sid, m.req, false, |s, now| {
                s.mapping_served(now, sid, m.mapping, ShardUse::Grant)?;
                s.do_atomic(now, sid, m)
            }),
            other => Err(Failure::fatal(
                ErrorCode::Protocol,
                format!(
                    "{} is not a message a client may send after the handshake",
                    other.name()
                ),
            )),
        };
        if let Err(f) = r {
            self.fail_conn(conn, f);
        }
    }

    /// Exactly-once handling of numbered requests. `idempotent` requests are
    /// run again when retransmitted; the others get their remembered reply.
    fn on_request(
        &mut self,
        now: Instant,
        sid: SessionId,
        req: ReqId,
        idempotent: bool,
        run: impl FnOnce(&mut Self, Instant) -> Outcome,
    ) -> Result<(), Failure> {
        if req.0 == 0 {
            return Err(Failure::fatal(
                ErrorCode::Protocol,
                "request number 0 is reserved",
            ));
        }
        let max = self.config.max_inflight as usize;
        let s = self
            .sessions
            .get_mut(&sid)
            .expect("established sessions exist");
        if req <= s.highest_req {
            if s.conn.is_some() && s.answered.get(&req) == s.conn.as_ref() {
                // Answered on this connection: the answer is on its way.
                return Ok(());
            }
            if let Some(reply) = s.replies.get(&req).cloned() {
                self.reply(sid, req, &reply);
                return Ok(());
            }
            if s.in_progress.contains_key(&req) {
                return Ok(());
            }
            if !idempotent {
                return Err(Failure::fatal(
                    ErrorCode::Protocol,
                    format!(
                        "request {req} was sent again after its reply was forgotten \
                         (more than {max} requests were outstanding)"
                    ),
                ));
            }
        } else {
            s.highest_req = req;
        }
        if s.in_progress.len() >= max {
            let f = Failure::new(
                ErrorCode::TooManyRequests,
                format!("more than {max} requests in flight"),
            );
            self.reply(sid, req, &error_msg(req, &f));
            return Ok(());
        }
        match run(self, now) {
            Ok(Some((reply, cache))) => {
                if cache {
                    self.remember(sid, req, reply.clone());
                }
                self.reply(sid, req, &reply);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(f) if f.fatal => Err(f),
            Err(f) => {
                let m = error_msg(req, &f);
                if !idempotent {
                    self.remember(sid, req, m.clone());
                }
                self.reply(sid, req, &m);
                Ok(())
            }
        }
    }

    /// Sends the answer to request `req` and notes the connection it went out on.
    pub(super) fn reply(&mut self, sid: SessionId, req: ReqId, msg: &Message) {
        let max = self.config.max_inflight as usize;
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.note_answered(req, 2 * max);
        }
        self.send(sid, msg);
    }

    pub(super) fn remember(&mut self, sid: SessionId, req: ReqId, reply: Message) {
        let max = self.config.max_inflight as usize;
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.remember_reply(req, reply, max);
        }
    }

    pub(super) fn mapping(
        &self,
        sid: SessionId,
        id: crate::protocol::WireMappingId,
    ) -> Result<MappingEntry, Failure> {
        self.sessions[&sid]
            .mappings
            .get(&id)
            .cloned()
            .ok_or_else(|| {
                Failure::new(
                    ErrorCode::UnknownMapping,
                    format!("mapping {id} does not exist in this session"),
                )
            })
    }

    /// In a cluster: whether a request on `mapping` may be served here now
    /// (its file's shard is, as `use_` needs it); an unknown mapping is for
    /// the request to refuse.
    fn mapping_served(
        &self,
        now: Instant,
        sid: SessionId,
        mapping: crate::protocol::WireMappingId,
        use_: ShardUse,
    ) -> Result<(), Failure> {
        match self.sessions[&sid].mappings.get(&mapping) {
            Some(m) => self.shard_check_file(now, m.file, use_),
            None => Ok(()),
        }
    }

    pub(super) fn require_write(&self, sid: SessionId, what: &str) -> Result<(), Failure> {
        if self.sessions[&sid].rights.write {
            Ok(())
        } else if self.config.read_only {
            Err(Failure::new(
                ErrorCode::ReadOnly,
                format!("the server exports read-only; cannot {what}"),
            ))
        } else {
            Err(Failure::new(
                ErrorCode::ReadOnly,
                format!("this client may only read; cannot {what}"),
            ))
        }
    }

    /// Validates a path from the wire (relative to the session's scope, if
    /// it has one: see `open_for`).
    pub(super) fn resolve(&self, sid: SessionId, raw: &Bytes) -> Result<ExportPath, Failure> {
        let path =
            ExportPath::parse(raw).map_err(|e| Failure::new(ErrorCode::BadPath, e.to_string()))?;
        let full = match &self.sessions[&sid].rights.scope {
            Some(s) => path.within(s),
            None => path.clone(),
        };
        if full.as_str() == RUN_STATE_NAME
            || full
                .as_str()
                .strip_prefix(RUN_STATE_NAME)
                .is_some_and(|rest| rest.starts_with('.'))
        {
            return Err(Failure::new(
                ErrorCode::BadPath,
                format!("{full} is where the server records its own state; it cannot be mapped"),
            ));
        }
        Ok(path)
    }

    /// The client said goodbye after writing back everything: release what it
    /// holds at once.
    fn end_session_quietly(&mut self, now: Instant, sid: SessionId) {
        let conn = self.sessions.get_mut(&sid).and_then(|s| s.conn.take());
        self.end_session(now, sid, "the client said goodbye");
        if let Some(c) = conn {
            self.close_conn(c);
        }
        self.farewell_check(now);
    }
}

pub(super) fn store_failure(path: &ExportPath, e: StoreError) -> Failure {
    let code = match e {
        StoreError::NotFound(_) => ErrorCode::NotFound,
        StoreError::BadName(_) => ErrorCode::BadPath,
        StoreError::Denied(_) => ErrorCode::Denied,
        StoreError::NotAFile(_) => ErrorCode::NotAFile,
        StoreError::ReadOnly(_) => ErrorCode::ReadOnly,
        StoreError::NoSpace(_) => ErrorCode::NoSpace,
        StoreError::Io(_) => ErrorCode::Io,
    };
    let detail = match &e {
        StoreError::NotFound(_) => format!("no such file: {path}"),
        StoreError::BadName(d) => d.clone(),
        other => format!("{path}: {other}"),
    };
    Failure::new(code, detail)
}
