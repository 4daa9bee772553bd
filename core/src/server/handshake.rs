//! The handshake: version check, optional challenge-response, new session or
//! resumption of an old one.

use crate::Instant;
use crate::auth::{ProofRole, proof, proofs_match};
use crate::protocol::{
    Authenticate, Challenge, ErrorCode, Hello, MAX_NAME_LEN, Message, PROTOCOL_VERSION,
    ResumeStatus, SessionId, Welcome,
};

use super::config::Rights;
use super::conns::ConnState;
use super::session::Session;
use super::{ConnId, Failure, Server, ServerEvent, Timer};

/// Used for unknown client names, so a failed login takes the same path
/// whether or not the name exists.
const DUMMY_SECRET: &[u8] = b"rmmap: no such client, but hash anyway";

impl Server {
    pub(super) fn on_hello(&mut self, now: Instant, conn: ConnId, hello: Hello) {
        if hello.version != PROTOCOL_VERSION {
            let f = Failure::fatal(
                ErrorCode::UnsupportedVersion,
                format!(
                    "this server speaks protocol version {PROTOCOL_VERSION}; the client speaks {}",
                    hello.version
                ),
            );
            return self.fail_conn(conn, f);
        }
        if hello.client_name.len() > MAX_NAME_LEN {
            return self.fail_conn(
                conn,
                Failure::fatal(ErrorCode::Malformed, "client name longer than 256 bytes"),
            );
        }
        if self.shutdown.is_some() {
            return self.fail_conn(
                conn,
                Failure::fatal(ErrorCode::ShuttingDown, "the server is shutting down"),
            );
        }
        if self.pages_fitting(hello.max_frame) == 0 {
            let f = Failure::fatal(
                ErrorCode::Protocol,
                format!(
                    "the client accepts frames of {} bytes; one page of {} bytes does not fit",
                    hello.max_frame, self.config.page_size
                ),
            );
            return self.fail_conn(conn, f);
        }
        if self.config.access.is_some() {
            let mut server_nonce = [0u8; 16];
            rand_core::Rng::fill_bytes(&mut self.rng, &mut server_nonce);
            self.push(conn, &Message::Challenge(Challenge { server_nonce }));
            if let Some(c) = self.conns.get_mut(&conn) {
                c.state = ConnState::AwaitAuth {
                    hello,
                    server_nonce,
                };
            }
        } else {
            let rights = Rights {
                write: !self.config.read_only,
                scope: None,
            };
            self.establish_or_park(now, conn, hello, rights, [0; 32]);
        }
    }

    pub(super) fn on_authenticate(&mut self, now: Instant, conn: ConnId, auth: Authenticate) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let ConnState::AwaitAuth {
            hello,
            server_nonce,
        } = std::mem::replace(&mut c.state, ConnState::AwaitHello)
        else {
            return;
        };
        let name = String::from_utf8_lossy(&hello.client_name).into_owned();
        let entry = self
            .config
            .access
            .as_ref()
            .and_then(|a| a.clients.get(&name))
            .cloned();
        let secret = entry.as_ref().map_or(DUMMY_SECRET, |e| &e.secret[..]);
        let expected = proof(
            secret,
            ProofRole::Client,
            &hello.client_name,
            &hello.client_nonce,
            &server_nonce,
        );
        let ok = proofs_match(&expected, &auth.proof);
        match entry {
            Some(e) if ok => {
                let mut rights = e.rights.clone();
                rights.write &= !self.config.read_only;
                let server_proof = proof(
                    &e.secret,
                    ProofRole::Server,
                    &hello.client_name,
                    &hello.client_nonce,
                    &server_nonce,
                );
                self.establish_or_park(now, conn, hello, rights, server_proof);
            }
            _ => self.fail_conn(
                conn,
                Failure::fatal(
                    ErrorCode::Denied,
                    format!("authentication failed for client {name:?}"),
                ),
            ),
        }
    }

    /// Establishes the session, or, until this run's state is recorded,
    /// parks the connection: a session comes with a lease its client may
    /// serve reads under, and a crash before the record would leave the next
    /// run no reason to wait for it.
    fn establish_or_park(
        &mut self,
        now: Instant,
        conn: ConnId,
        hello: Hello,
        rights: Rights,
        server_proof: [u8; 32],
    ) {
        if self.recording.saved {
            return self.establish(now, conn, hello, rights, server_proof);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Parked {
                hello,
                rights,
                server_proof,
            };
        }
    }

    /// The run state is recorded: parked connections get their sessions.
    pub(super) fn unpark(&mut self, now: Instant) {
        let parked: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, ConnState::Parked { .. }))
            .map(|(id, _)| *id)
            .collect();
        for conn in parked {
            let c = self.conns.get_mut(&conn).expect("listed");
            let ConnState::Parked {
                hello,
                rights,
                server_proof,
            } = std::mem::replace(&mut c.state, ConnState::AwaitHello)
            else {
                continue;
            };
            self.establish(now, conn, hello, rights, server_proof);
        }
    }

    fn establish(
        &mut self,
        now: Instant,
        conn: ConnId,
        hello: Hello,
        rights: Rights,
        server_proof: [u8; 32],
    ) {
        let name = String::from_utf8_lossy(&hello.client_name).into_owned();
        let mut status = ResumeStatus::New;
        let mut sid = None;
        if let Some(r) = &hello.resume {
            if r.epoch != self.epoch {
                status = ResumeStatus::ServerRestarted;
            } else {
                match self.sessions.get(&r.session) {
                    Some(s) if s.doomed => status = ResumeStatus::Expired,
                    Some(s) => {
                        if !crate::auth::proofs_match(&pad(&s.token), &pad(&r.token))
                            || s.name != name
                        {
                            return self.fail_conn(
                                conn,
                                Failure::fatal(
                                    ErrorCode::Denied,
                                    "the resume token does not match the session",
                                ),
                            );
                        }
                        status = ResumeStatus::Resumed;
                        sid = Some(r.session);
                    }
                    None => status = ResumeStatus::Expired,
                }
            }
        }
        let sid = match sid {
            Some(sid) => {
                let old = self.sessions.get(&sid).and_then(|s| s.conn);
                if let Some(old) = old {
                    // The session moved: whatever the old connection still
                    // holds is stale.
                    self.close_conn(old);
                }
                sid
            }
            None => {
                if self.sessions.len() >= self.config.max_sessions as usize {
                    return self.fail_conn(
                        conn,
                        Failure::fatal(
                            ErrorCode::TooManySessions,
                            format!("the server already has {} sessions", self.sessions.len()),
                        ),
                    );
                }
                self.next_session += 1;
                let sid = SessionId(self.next_session);
                let token = self.new_token();
                let expiry = now + self.config.lease;
                self.sessions
                    .insert(sid, Session::new(sid, token, name.clone(), rights, expiry));
                self.timers.insert((expiry, Timer::Lease(sid)));
                self.events.push_back(ServerEvent::SessionStarted {
                    session: sid,
                    client: name,
                });
                sid
            }
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            if matches!(c.state, ConnState::AwaitHello | ConnState::AwaitAuth { .. }) {
                self.handshaking -= 1;
            }
            c.state = ConnState::Established(sid);
        }
        let max_pages = self
            .pages_fitting(hello.max_frame)
            .min(self.config.max_pages_per_request);
        let s = self.sessions.get_mut(&sid).expect("just found or made");
        s.conn = Some(conn);
        s.max_pages = max_pages;
        if s.may_renew() {
            s.lease_expiry = s.lease_expiry.max(now + self.config.lease);
        }
        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            status,
            session: sid,
            token: s.token,
            epoch: self.epoch,
            page_size: self.config.page_size,
            lease_ms: u32::try_from(self.config.lease.as_millis()).unwrap_or(u32::MAX),
            max_frame: self.config.max_frame,
            max_pages_per_request: max_pages,
            max_inflight: self.config.max_inflight,
            max_mappings: self.config.max_mappings,
            rights: s.rights.write as u8,
            rev_acked: s.rev_acked,
            server_proof,
        };
        self.push(conn, &Message::Welcome(welcome));
        if status == ResumeStatus::Resumed {
            self.resend_revocations(sid);
        }
    }
}

impl Server {
    /// How many pages fit in one `Pages` reply of at most `max_frame` bytes.
    fn pages_fitting(&self, max_frame: u32) -> u32 {
        let per_page = self.config.page_size as u64 + 9;
        (max_frame.saturating_sub(64) as u64 / per_page).min(u32::MAX as u64) as u32
    }
}

fn pad(t: &[u8; 16]) -> [u8; 32] {
    let mut a = [0u8; 32];
    a[..16].copy_from_slice(t);
    a
}
