//! The scripted server: what it remembers of the client's session and
//! connection, what it answers by itself (handshake, pongs), and the replies
//! the input asks for, proper or not.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use rmmap_core::auth::{ProofRole, proof};
use rmmap_core::protocol::*;

use super::{NAME, SECRET};

/// The scripted server's memory of the current session and connection.
#[derive(Debug, Default)]
pub(super) struct Script {
    pub(super) page_size: u32,
    pub(super) epoch: u64,
    pub(super) session: u64,
    pub(super) token: ResumeToken,
    pub(super) next_mapping: u32,
    pub(super) mappings: BTreeMap<WireMappingId, FileHandle>,
    pub(super) handles: BTreeMap<Bytes, FileHandle>,
    pub(super) next_version: u64,
    pub(super) next_rev: u64,
    pub(super) rev_acked: u64,
    /// Requests received and not yet answered.
    pub(super) pending: BTreeMap<ReqId, Message>,
    pub(super) hello: Option<Hello>,
    /// The handshake on this connection is done.
    pub(super) welcomed: bool,
    pub(super) server_nonce: Option<Nonce>,
    pub(super) ping: Option<u64>,
    /// Bytes from the client not yet framed.
    pub(super) inbox: BytesMut,
}

impl Script {
    pub(super) fn new_connection(&mut self) {
        self.pending.clear();
        self.hello = None;
        self.welcomed = false;
        self.server_nonce = None;
        self.ping = None;
        self.inbox.clear();
    }

    /// Frames what the client sent and remembers it; returns what a good
    /// server answers by itself (handshake, pongs) when told to.
    pub(super) fn read(&mut self, secret: bool, auto_handshake: bool, auto_pong: bool) -> BytesMut {
        let mut out = BytesMut::new();
        loop {
            let msg = match decode_frame(&mut self.inbox, HARD_MAX_FRAME) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => panic!("the client sent bytes that do not decode: {e}"),
            };
            assert!(
                msg.kind() < 0x80,
                "the client sent a server message: {msg:?}"
            );
            if crate::tracing() {
                eprintln!("    client -> {}", crate::server::brief(&msg));
            }
            match msg {
                Message::Hello(h) => {
                    self.hello = Some(h);
                    if auto_handshake {
                        if secret {
                            let nonce = [0x5A; 16];
                            self.server_nonce = Some(nonce);
                            Message::Challenge(Challenge {
                                server_nonce: nonce,
                            })
                            .encode(&mut out);
                        } else {
                            out.extend_from_slice(&self.welcome(0, 0, secret));
                        }
                    }
                }
                Message::Authenticate(_) => {
                    if auto_handshake {
                        out.extend_from_slice(&self.welcome(0, 0, secret));
                    }
                }
                Message::Ping(p) => self.ping = Some(p.nonce),
                Message::InvalidateAck(a) => self.rev_acked = self.rev_acked.max(a.rev.0),
                Message::RecallAck(a) => self.rev_acked = self.rev_acked.max(a.rev.0),
                Message::Release(_) | Message::Bye => {}
                m @ (Message::Map(_)
                | Message::Unmap(_)
                | Message::Fetch(_)
                | Message::WriteBack(_)
                | Message::Sync(_)
                | Message::Revalidate(_)
                | Message::Refresh(_)
                | Message::SetLen(_)
                | Message::Atomic(_)) => {
                    if let Some(req) = request_id(&m)
                        && self.pending.len() < 256
                    {
                        self.pending.insert(req, m);
                    }
                }
                other => panic!("unexpected message from the client: {other:?}"),
            }
        }
        // Like the real server: pongs only after the Welcome, in order.
        if auto_pong
            && self.welcomed
            && let Some(nonce) = self.ping.take()
        {
            Message::Pong(Pong {
                nonce,
                renewed: true,
                rev_acked: RevId(self.rev_acked),
            })
            .encode(&mut out);
        }
        out
    }

    /// A `Welcome` for the last `Hello`: `status` picks what became of the
    /// session, a `tweak` of 248 or more breaks one field.
    pub(super) fn welcome(&mut self, status: u8, tweak: u8, secret: bool) -> Bytes {
        let resume = self.hello.as_ref().and_then(|h| h.resume.clone());
        let status = match &resume {
            Some(_) => [
                ResumeStatus::Resumed,
                ResumeStatus::Resumed,
                ResumeStatus::Expired,
                ResumeStatus::ServerRestarted,
            ][status as usize % 4],
            None if status == 255 => ResumeStatus::Resumed,
            None => ResumeStatus::New,
        };
        match (status, &resume) {
            (ResumeStatus::Resumed, Some(r)) => self.session = r.session.0,
            _ => {
                // A new session: nothing of the old one is known.
                self.session += 1;
                self.token = [self.session as u8; 16];
                self.mappings.clear();
                self.handles.clear();
                self.next_rev = 0;
                self.rev_acked = 0;
                if status == ResumeStatus::ServerRestarted {
                    self.epoch += 1;
                }
            }
        }
        let server_proof = match (secret, &self.hello, self.server_nonce) {
            (true, Some(h), Some(sn)) => proof(
                SECRET,
                ProofRole::Server,
                NAME.as_bytes(),
                &h.client_nonce,
                &sn,
            ),
            _ => [0; 32],
        };
        let mut w = Welcome {
            version: PROTOCOL_VERSION,
            status,
            session: SessionId(self.session),
            token: self.token,
            epoch: self.epoch,
            page_size: self.page_size,
            lease_ms: 1000,
            max_frame: 8 * (self.page_size + 16) + 4096,
            max_pages_per_request: 8,
            max_inflight: 6,
            max_mappings: 6,
            rights: 1,
            rev_acked: RevId(self.rev_acked),
            server_proof,
        };
        match tweak {
            248 => w.version = 2,
            249 => w.page_size = 1000,
            250 => w.lease_ms = 0,
            251 => w.max_pages_per_request = 0,
            252 => w.server_proof[0] ^= 1,
            253 => w.rights = 0,
            254 => w.max_inflight = 0,
            255 => w.max_frame = 64,
            _ => {}
        }
        self.welcomed = true;
        Message::Welcome(w).to_bytes()
    }

    /// A reply to request `req`. `how`: below 192 a proper reply; then an
    /// error; then a reply that does not fit the request; then a proper
    /// reply sent twice.
    pub(super) fn reply(&mut self, req: ReqId, how: u8, seed: u16) -> Bytes {
        let Some(m) = self.pending.remove(&req) else {
            return Bytes::new();
        };
        if (192..232).contains(&how) {
            let e = ErrorMsg {
                req,
                code: ErrorCode::from_u16(how as u16 - 191),
                fatal: how & 1 == 1 && how > 224,
                message: Bytes::from_static(b"scripted failure"),
            };
            return Message::Error(e).to_bytes();
        }
        let wrong = (232..244).contains(&how);
        let ps = self.page_size as usize;
        let reply = match m {
            Message::Map(m) => {
                let handle = match self.handles.get(&m.path) {
                    Some(h) => *h,
                    None => {
                        let h = FileHandle(self.handles.len() as u32 + 1);
                        self.handles.insert(m.path.clone(), h);
                        h
                    }
                };
                self.next_mapping += 1;
                let mapping = WireMappingId(self.next_mapping);
                self.mappings.insert(mapping, handle);
                let end = m.offset.saturating_add(m.len);
                let file_len = if wrong { end / 2 } else { end.max(8192) };
                Message::Mapped(Mapped {
                    req,
                    mapping,
                    file: handle,
                    file_len,
                })
            }
            Message::Unmap(_) => Message::Unmapped(Unmapped { req }),
            Message::Fetch(f) => {
                let file = self
                    .mappings
                    .get(&f.mapping)
                    .copied()
                    .unwrap_or(FileHandle(0));
                let count = f.count.min(64) + wrong as u32;
                let overwrite = f.flags & fetch_flags::OVERWRITE != 0;
                let mut pages = Vec::with_capacity(count as usize);
                for i in 0..count {
                    self.next_version += 1;
                    let current =
                        seed & (1 << (i % 16)) != 0 && f.flags & fetch_flags::WANT_DATA == 0;
                    let data = (!overwrite && !current)
                        .then(|| Bytes::from(vec![(seed as u8) ^ i as u8; ps]));
                    pages.push(PageGrant {
                        version: self.next_version,
                        data,
                    });
                }
                let exclusive = f.flags & fetch_flags::EXCLUSIVE != 0;
                Message::Pages(Pages {
                    req,
                    file,
                    first_page: f.first_page,
                    exclusive,
                    pages,
                })
            }
            Message::WriteBack(w) => {
                let n = w.patches.len() + wrong as usize;
                let versions = (0..n)
                    .map(|_| {
                        self.next_version += 1;
                        self.next_version
                    })
                    .collect();
                Message::WriteAck(WriteAck { req, versions })
            }
            Message::Sync(_) => Message::Synced(Synced { req }),
            // Some copies vouched for (no data), the others sent again.
            Message::Refresh(r) => {
                let file = self
                    .mappings
                    .get(&r.mapping)
                    .copied()
                    .unwrap_or(FileHandle(0));
                let count = r.digests.len() as u32 + wrong as u32;
                let pages = (0..count)
                    .map(|i| {
                        self.next_version += 1;
                        let current = seed & (1 << (i % 16)) != 0;
                        PageGrant {
                            version: self.next_version,
                            data: (!current).then(|| Bytes::from(vec![(seed as u8) ^ i as u8; ps])),
                        }
                    })
                    .collect();
                Message::Pages(Pages {
                    req,
                    file,
                    first_page: r.first_page,
                    exclusive: wrong && seed & 1 == 1,
                    pages,
                })
            }
            Message::Revalidate(r) => {
                let count = r.pages.len() as u32 + wrong as u32;
                let valid = (0..count.div_ceil(8))
                    .map(|i| (seed >> (i % 2 * 8)) as u8)
                    .collect::<Vec<u8>>();
                Message::Revalidated(Revalidated {
                    req,
                    count,
                    valid: Bytes::from(valid),
                })
            }
            Message::SetLen(s) => Message::LenSet(LenSet { req, len: s.len }),
            Message::Atomic(_) => Message::AtomicDone(AtomicDone {
                req,
                previous: seed as u64,
                applied: seed & 1 == 0,
            }),
            _ => return Bytes::new(),
        };
        let reply = if wrong
            && matches!(
                reply,
                Message::Unmapped(_) | Message::Synced(_) | Message::LenSet(_)
            ) {
            // Nothing to get wrong inside: answer with another type.
            Message::AtomicDone(AtomicDone {
                req,
                previous: 0,
                applied: true,
            })
        } else {
            reply
        };
        let bytes = reply.to_bytes();
        if how >= 244 {
            let mut twice = BytesMut::from(&bytes[..]);
            twice.extend_from_slice(&bytes);
            twice.freeze()
        } else {
            bytes
        }
    }
}

/// The request number of a numbered request.
fn request_id(m: &Message) -> Option<ReqId> {
    Some(match m {
        Message::Map(m) => m.req,
        Message::Unmap(m) => m.req,
        Message::Fetch(m) => m.req,
        Message::WriteBack(m) => m.req,
        Message::Sync(m) => m.req,
        Message::Revalidate(m) => m.req,
        Message::Refresh(m) => m.req,
        Message::SetLen(m) => m.req,
        Message::Atomic(m) => m.req,
        _ => return None,
    })
}
