//! The `client` target: one [`Client`] facing a scripted server that the
//! input controls, with application commands and time in between.
//!
//! The scripted server can behave: it answers the handshake with a realistic
//! `Welcome` (and, when the client has a secret, a `Challenge` and a correct
//! proof), renews the lease, and replies to the requests the client really
//! sent with well-formed `Mapped`, `Pages`, `WriteAck`, ... frames, so the
//! client reaches its deep states (a warm cache, exclusive pages, write-backs
//! in flight, recalls, resumption). It can also misbehave in every way: wrong
//! replies, replies twice, errors, revocations for pages it never granted,
//! arbitrary frames, junk, disconnects.
//!
//! Checked after every action: nothing panicked, and every byte the client
//! wrote decodes as a client-to-server frame.

use std::collections::BTreeMap;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use rmmap_core::Instant;
use rmmap_core::auth::{ProofRole, proof};
use rmmap_core::client::{Client, ClientConfig, Completion, Event, MapOptions, MappingId};
use rmmap_core::protocol::*;

use crate::recipe::{Unparse, input, variant};

/// Paths the application maps.
const PATHS: &[&str] = &["a", "b", "dir/c", "a", "", "../x"];

/// The client's name and secret when the setup asks for authentication.
const NAME: &str = "alice";
const SECRET: &[u8] = &[0xA1; 16];

/// The whole input: how things are set up, then what happens.
#[derive(Arbitrary, Debug)]
pub struct ClientInput {
    /// Bit 0: the client has a secret (the server must authenticate).
    /// Bits 1-3 not all set: the server answers handshakes by itself.
    /// Bits 4-6 not all set: the server answers pings by itself.
    /// Bit 7: 4 KiB pages (else 512 B).
    setup: u8,
    /// What happens, in order.
    actions: Vec<Action>,
}

/// One step.
#[derive(Arbitrary, Debug, PartialEq)]
enum Action {
    /// Answer the handshake on the current connection.
    Welcome { status: u8, tweak: u8 },
    /// Reply to one request in flight: properly, with an error, wrongly, or
    /// twice, as `how` says.
    Reply { which: u8, how: u8, seed: u16 },
    /// Reply properly to every request in flight.
    ReplyAll { seed: u16 },
    /// Push an invalidation or recall of pages of a file the client mapped.
    Revoke {
        recall: bool,
        file: u8,
        first: u8,
        count: u8,
        downgrade: bool,
    },
    /// Answer the client's ping.
    Pong { renewed: bool },
    /// Any frame at all.
    Frame { message: Message },
    /// Raw bytes.
    Junk { bytes: Vec<u8> },
    /// An application command.
    Command(Command),
    /// Time passes by this many milliseconds.
    Advance { ms: u16 },
    /// Time passes to the client's next timeout.
    AdvanceToTimeout,
    /// The connection breaks.
    Disconnect,
    /// Whether the next connection attempts succeed.
    Reachable { on: bool },
}

/// What the application asks of the client.
#[derive(Arbitrary, Debug, Clone, PartialEq)]
enum Command {
    Map {
        path: u8,
        offset: u16,
        len: u16,
        write: bool,
        create: bool,
    },
    Read {
        mapping: u8,
        offset: u16,
        len: u16,
    },
    Write {
        mapping: u8,
        offset: u16,
        len: u16,
        fill: u8,
    },
    TryRead {
        mapping: u8,
        offset: u16,
        len: u16,
    },
    TryWrite {
        mapping: u8,
        offset: u16,
        len: u16,
        fill: u8,
    },
    Sync {
        mapping: u8,
    },
    Unmap {
        mapping: u8,
    },
    SetLen {
        path: u8,
        len: u16,
        create: bool,
    },
    Atomic {
        mapping: u8,
        offset: u16,
        op: AtomicOp,
    },
    Close,
}

/// The scripted server's memory of the current session and connection.
#[derive(Debug, Default)]
struct Script {
    page_size: u32,
    epoch: u64,
    session: u64,
    token: ResumeToken,
    next_mapping: u32,
    mappings: BTreeMap<WireMappingId, FileHandle>,
    handles: BTreeMap<Bytes, FileHandle>,
    next_version: u64,
    next_rev: u64,
    rev_acked: u64,
    /// Requests received and not yet answered.
    pending: BTreeMap<ReqId, Message>,
    hello: Option<Hello>,
    /// The handshake on this connection is done.
    welcomed: bool,
    server_nonce: Option<Nonce>,
    ping: Option<u64>,
    /// Bytes from the client not yet framed.
    inbox: BytesMut,
}

struct Harness {
    client: Client,
    now: Instant,
    script: Script,
    secret: bool,
    auto_handshake: bool,
    auto_pong: bool,
    reachable: bool,
    open: bool,
    /// Bytes to the client not yet taken (a partial frame).
    to_client: BytesMut,
    mappings: Vec<MappingId>,
}

/// Runs one input; panics on any finding.
pub fn run(data: &[u8]) {
    let Ok(input) = ClientInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut h = Harness::new(input.setup);
    h.pump();
    for action in &input.actions {
        if crate::tracing() {
            eprintln!("[{:?}] {action:?}", h.now);
        }
        h.act(action);
        h.pump();
    }
}

impl Harness {
    fn new(setup: u8) -> Self {
        let secret = setup & 1 != 0;
        let config = ClientConfig {
            name: if secret { NAME.into() } else { String::new() },
            secret: secret.then(|| SECRET.to_vec()),
            max_cached_pages: 24,
            readahead_pages: 4,
            max_pending_ops: 32,
            max_inflight: 8,
            give_up_after: Some(Duration::from_secs(5)),
            ..ClientConfig::default()
        };
        let now = Instant::ZERO;
        let script = Script {
            page_size: if setup & 0x80 != 0 { 4096 } else { 512 },
            epoch: 0x5EED,
            ..Default::default()
        };
        Harness {
            client: Client::new(config, [setup; 32], now),
            now,
            script,
            secret,
            auto_handshake: setup & 0x0e != 0x0e,
            auto_pong: setup & 0x70 != 0x70,
            reachable: true,
            open: false,
            to_client: BytesMut::new(),
            mappings: Vec::new(),
        }
    }

    fn act(&mut self, action: &Action) {
        match *action {
            Action::Welcome { status, tweak } => {
                let m = self.script.welcome(status, tweak, self.secret);
                self.deliver(&m);
            }
            Action::Reply { which, how, seed } => {
                let pending: Vec<ReqId> = self.script.pending.keys().copied().collect();
                if !pending.is_empty() {
                    let req = pending[which as usize % pending.len()];
                    let m = self.script.reply(req, how, seed);
                    self.deliver(&m);
                }
            }
            Action::ReplyAll { seed } => {
                let pending: Vec<ReqId> = self.script.pending.keys().copied().collect();
                let mut out = BytesMut::new();
                for req in pending {
                    out.extend_from_slice(&self.script.reply(req, 0, seed));
                }
                self.deliver(&out);
            }
            Action::Revoke {
                recall,
                file,
                first,
                count,
                downgrade,
            } => {
                let handles: Vec<FileHandle> = self.script.handles.values().copied().collect();
                let file = if handles.is_empty() {
                    FileHandle(file as u32)
                } else {
                    handles[file as usize % handles.len()]
                };
                self.script.next_rev += 1;
                let rev = RevId(self.script.next_rev);
                let (first_page, count) = (first as u64 % 24, 1 + count as u32 % 8);
                let m = if recall {
                    Message::Recall(Recall {
                        rev,
                        file,
                        first_page,
                        count,
                        downgrade,
                    })
                } else {
                    Message::Invalidate(Invalidate {
                        rev,
                        file,
                        first_page,
                        count,
                    })
                };
                self.deliver(&m.to_bytes());
            }
            Action::Pong { renewed } => {
                let nonce = self.script.ping.take().unwrap_or(0);
                let m = Message::Pong(Pong {
                    nonce,
                    renewed,
                    rev_acked: RevId(self.script.rev_acked),
                });
                self.deliver(&m.to_bytes());
            }
            Action::Frame { ref message } => self.deliver(&message.to_bytes()),
            Action::Junk { ref bytes } => self.deliver(bytes),
            Action::Command(ref c) => self.command(c),
            Action::Advance { ms } => self.advance(self.now + Duration::from_millis(ms as u64)),
            Action::AdvanceToTimeout => {
                if let Some(t) = self.client.poll_timeout() {
                    self.advance(t.max(self.now));
                }
            }
            Action::Disconnect => {
                if self.open {
                    self.open = false;
                    self.client.handle_disconnected(self.now);
                }
            }
            Action::Reachable { on } => self.reachable = on,
        }
    }

    fn advance(&mut self, to: Instant) {
        self.now = to;
        if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
            self.client.handle_timeout(self.now);
        }
    }

    /// Bytes from the server arrive.
    fn deliver(&mut self, bytes: &[u8]) {
        if crate::tracing() {
            let mut b = BytesMut::from(bytes);
            while let Ok(Some(m)) = decode_frame(&mut b, HARD_MAX_FRAME) {
                eprintln!("    client <- {}", crate::server::brief(&m));
            }
            if !b.is_empty() {
                eprintln!("    client <- {} more bytes", b.len());
            }
        }
        self.to_client.extend_from_slice(bytes);
        self.client.handle_input(self.now, &mut self.to_client);
    }

    fn mapping(&self, i: u8) -> MappingId {
        if self.mappings.is_empty() {
            MappingId(i as u64)
        } else {
            self.mappings[i as usize % self.mappings.len()]
        }
    }

    /// An `(offset, len)` inside the mapping, unless `offset` has its top
    /// bits set (then out of range on purpose).
    fn range(&self, m: MappingId, offset: u16, len: u16) -> (u64, u64) {
        match self.client.mapping_len(m) {
            Some(ml) if offset < 0xF000 => {
                let off = offset as u64 % (ml + 1);
                (off, len as u64 % (ml - off + 1))
            }
            _ => (offset as u64, len as u64),
        }
    }

    fn command(&mut self, c: &Command) {
        let now = self.now;
        // Errors are answers too: the client refused a bad command.
        let _ = match *c {
            Command::Map {
                path,
                offset,
                len,
                write,
                create,
            } => {
                let access = if write {
                    rmmap_core::client::Access::ReadWrite
                } else {
                    rmmap_core::client::Access::ReadOnly
                };
                let path = PATHS[path as usize % PATHS.len()];
                let offset = offset as u64 % 9000;
                let range = offset..offset + len as u64 % 9000;
                self.client
                    .map(now, path, range, MapOptions { access, create })
                    .map(|p| p.id())
            }
            Command::Read {
                mapping,
                offset,
                len,
            } => {
                let m = self.mapping(mapping);
                let (o, n) = self.range(m, offset, len);
                self.client.read(now, m, o, n).map(|p| p.id())
            }
            Command::Write {
                mapping,
                offset,
                len,
                fill,
            } => {
                let m = self.mapping(mapping);
                let (o, n) = self.range(m, offset, len);
                self.client
                    .write(now, m, o, Bytes::from(vec![fill; n as usize]))
                    .map(|p| p.id())
            }
            Command::TryRead {
                mapping,
                offset,
                len,
            } => {
                let m = self.mapping(mapping);
                let (o, n) = self.range(m, offset, len);
                let mut buf = vec![0u8; n as usize];
                let _ = self.client.try_read(now, m, o, &mut buf);
                return;
            }
            Command::TryWrite {
                mapping,
                offset,
                len,
                fill,
            } => {
                let m = self.mapping(mapping);
                let (o, n) = self.range(m, offset, len);
                let _ = self.client.try_write(now, m, o, &vec![fill; n as usize]);
                return;
            }
            Command::Sync { mapping } => {
                self.client.sync(now, self.mapping(mapping)).map(|p| p.id())
            }
            Command::Unmap { mapping } => {
                self.client.unmap(now, self.mapping(mapping)).map(|p| p.id())
            }
            Command::SetLen { path, len, create } => {
                self.client
                    .set_len(now, PATHS[path as usize % PATHS.len()], len as u64, create)
                    .map(|p| p.id())
            }
            Command::Atomic {
                mapping,
                offset,
                op,
            } => {
                let m = self.mapping(mapping);
                let (o, _) = self.range(m, offset, 0);
                self.client.atomic(now, m, o & !7, op).map(|p| p.id())
            }
            Command::Close => self.client.close(now).map(|p| p.id()),
        };
    }

    /// The drive loop: drain events and bytes, let the scripted server
    /// answer what it answers by itself, until nothing moves.
    fn pump(&mut self) {
        for _ in 0..64 {
            let mut progress = false;
            while let Some(ev) = self.client.poll_event() {
                progress = true;
                if crate::tracing() {
                    eprintln!("    event {ev:?}");
                }
                match ev {
                    Event::Connect => {
                        if self.reachable {
                            self.open = true;
                            self.to_client.clear();
                            self.script.new_connection();
                            self.client.handle_connected(self.now);
                        } else {
                            let refused = std::io::ErrorKind::ConnectionRefused.into();
                            self.client.handle_connect_failed(self.now, refused);
                        }
                    }
                    Event::Disconnect => {
                        // What the client queued before it goes out first.
                        while let Some(b) = self.client.poll_transmit() {
                            if self.open {
                                self.script.inbox.extend_from_slice(&b);
                            }
                        }
                        self.open = false;
                    }
                    Event::Completed {
                        result: Ok(Completion::Mapped { mapping, .. }),
                        ..
                    } if self.mappings.len() < 32 => self.mappings.push(mapping),
                    _ => {}
                }
            }
            while let Some(b) = self.client.poll_transmit() {
                progress = true;
                if self.open {
                    self.script.inbox.extend_from_slice(&b);
                }
            }
            let answers = self
                .script
                .read(self.secret, self.auto_handshake, self.auto_pong);
            if !answers.is_empty() && self.open {
                progress = true;
                self.deliver(&answers);
            }
            if !progress {
                break;
            }
        }
    }
}

impl Script {
    fn new_connection(&mut self) {
        self.pending.clear();
        self.hello = None;
        self.welcomed = false;
        self.server_nonce = None;
        self.ping = None;
        self.inbox.clear();
    }

    /// Frames what the client sent and remembers it; returns what a good
    /// server answers by itself (handshake, pongs) when told to.
    fn read(&mut self, secret: bool, auto_handshake: bool, auto_pong: bool) -> BytesMut {
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
    fn welcome(&mut self, status: u8, tweak: u8, secret: bool) -> Bytes {
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
    fn reply(&mut self, req: ReqId, how: u8, seed: u16) -> Bytes {
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
        Message::SetLen(m) => m.req,
        Message::Atomic(m) => m.req,
        _ => return None,
    })
}

impl Unparse for Action {
    fn unparse(&self, out: &mut Vec<u8>) {
        const N: u32 = 12;
        match self {
            Action::Welcome { status, tweak } => {
                variant(out, 0, N);
                (*status, *tweak).unparse(out);
            }
            Action::Reply { which, how, seed } => {
                variant(out, 1, N);
                (*which, (*how, *seed)).unparse(out);
            }
            Action::ReplyAll { seed } => {
                variant(out, 2, N);
                seed.unparse(out);
            }
            Action::Revoke {
                recall,
                file,
                first,
                count,
                downgrade,
            } => {
                variant(out, 3, N);
                ((*recall, *file), (*first, (*count, *downgrade))).unparse(out);
            }
            Action::Pong { renewed } => {
                variant(out, 4, N);
                renewed.unparse(out);
            }
            Action::Frame { .. } => panic!("seeds are written without arbitrary messages"),
            Action::Junk { bytes } => {
                variant(out, 6, N);
                bytes.unparse(out);
            }
            Action::Command(c) => {
                variant(out, 7, N);
                c.unparse(out);
            }
            Action::Advance { ms } => {
                variant(out, 8, N);
                ms.unparse(out);
            }
            Action::AdvanceToTimeout => variant(out, 9, N),
            Action::Disconnect => variant(out, 10, N),
            Action::Reachable { on } => {
                variant(out, 11, N);
                on.unparse(out);
            }
        }
    }
}

impl Unparse for Command {
    fn unparse(&self, out: &mut Vec<u8>) {
        const N: u32 = 10;
        match self {
            Command::Map {
                path,
                offset,
                len,
                write,
                create,
            } => {
                variant(out, 0, N);
                ((*path, *offset), (*len, (*write, *create))).unparse(out);
            }
            Command::Read {
                mapping,
                offset,
                len,
            } => {
                variant(out, 1, N);
                (*mapping, (*offset, *len)).unparse(out);
            }
            Command::Write {
                mapping,
                offset,
                len,
                fill,
            } => {
                variant(out, 2, N);
                ((*mapping, *offset), (*len, *fill)).unparse(out);
            }
            Command::TryRead {
                mapping,
                offset,
                len,
            } => {
                variant(out, 3, N);
                (*mapping, (*offset, *len)).unparse(out);
            }
            Command::TryWrite {
                mapping,
                offset,
                len,
                fill,
            } => {
                variant(out, 4, N);
                ((*mapping, *offset), (*len, *fill)).unparse(out);
            }
            Command::Sync { mapping } => {
                variant(out, 5, N);
                mapping.unparse(out);
            }
            Command::Unmap { mapping } => {
                variant(out, 6, N);
                mapping.unparse(out);
            }
            Command::SetLen { path, len, create } => {
                variant(out, 7, N);
                (*path, (*len, *create)).unparse(out);
            }
            Command::Atomic {
                mapping,
                offset,
                op,
            } => {
                variant(out, 8, N);
                (*mapping, *offset).unparse(out);
                op.unparse(out);
            }
            Command::Close => variant(out, 9, N),
        }
    }
}

/// Seed inputs, each a story that reaches somewhere deep: `(file name,
/// setup byte, actions)`.
fn seed_inputs() -> Vec<(&'static str, u8, Vec<Action>)> {
    use crate::client::Command as C;
    use Action::*;
    // Path 0 is "a"; with 512-byte pages 4096 bytes are 8 pages.
    let map_rw = || {
        Command(C::Map {
            path: 0,
            offset: 0,
            len: 4096,
            write: true,
            create: false,
        })
    };
    let read = |offset, len| {
        Command(C::Read {
            mapping: 0,
            offset,
            len,
        })
    };
    let write = |offset, len, fill| {
        Command(C::Write {
            mapping: 0,
            offset,
            len,
            fill,
        })
    };
    vec![
        (
            "map_read_write_sync_close",
            0,
            vec![
                map_rw(),
                ReplyAll { seed: 0 },
                read(0, 600),
                ReplyAll { seed: 0 },
                Command(C::TryRead {
                    mapping: 0,
                    offset: 10,
                    len: 100,
                }),
                write(100, 50, 0xAB),
                ReplyAll { seed: 0 },
                Command(C::TryWrite {
                    mapping: 0,
                    offset: 120,
                    len: 8,
                    fill: 0xCD,
                }),
                Command(C::Sync { mapping: 0 }),
                ReplyAll { seed: 0 },
                ReplyAll { seed: 0 },
                Command(C::Atomic {
                    mapping: 0,
                    offset: 64,
                    op: AtomicOp::Swap(3),
                }),
                ReplyAll { seed: 1 },
                Command(C::Close),
                ReplyAll { seed: 0 },
                ReplyAll { seed: 0 },
            ],
        ),
        (
            "recalls_and_invalidations",
            0,
            vec![
                map_rw(),
                ReplyAll { seed: 0 },
                read(0, 1500),
                ReplyAll { seed: 0 },
                write(0, 700, 0x11),
                ReplyAll { seed: 0 },
                Revoke {
                    recall: true,
                    file: 0,
                    first: 0,
                    count: 2,
                    downgrade: true,
                },
                Revoke {
                    recall: false,
                    file: 0,
                    first: 2,
                    count: 2,
                    downgrade: false,
                },
                read(0, 1500),
                ReplyAll { seed: 0 },
                Advance { ms: 300 },
                Revoke {
                    recall: true,
                    file: 0,
                    first: 0,
                    count: 8,
                    downgrade: false,
                },
            ],
        ),
        (
            "reconnect_and_resume",
            0,
            vec![
                map_rw(),
                ReplyAll { seed: 0 },
                read(0, 1000),
                ReplyAll { seed: 0 },
                write(0, 10, 0x22),
                Disconnect,
                AdvanceToTimeout,
                ReplyAll { seed: 0 },
                ReplyAll { seed: 0 },
                read(0, 1000),
            ],
        ),
        (
            "session_lost_and_revalidated",
            0x0e,
            vec![
                Welcome {
                    status: 0,
                    tweak: 0,
                },
                Pong { renewed: true },
                map_rw(),
                ReplyAll { seed: 0 },
                read(0, 2000),
                ReplyAll { seed: 0xFFFF },
                write(600, 10, 0x33),
                Disconnect,
                AdvanceToTimeout,
                Welcome {
                    status: 2,
                    tweak: 0,
                },
                ReplyAll { seed: 0x00FF },
                ReplyAll { seed: 0 },
                read(0, 2000),
            ],
        ),
        (
            "authenticated_handshake",
            1,
            vec![
                Command(C::Map {
                    path: 1,
                    offset: 512,
                    len: 1024,
                    write: false,
                    create: true,
                }),
                ReplyAll { seed: 0 },
                read(0, 100),
                ReplyAll { seed: 0 },
                Command(C::SetLen {
                    path: 2,
                    len: 4096,
                    create: true,
                }),
                ReplyAll { seed: 0 },
            ],
        ),
        (
            "wrong_and_duplicate_replies",
            0,
            vec![
                map_rw(),
                Reply {
                    which: 0,
                    how: 250,
                    seed: 0,
                },
                read(0, 100),
                Reply {
                    which: 0,
                    how: 240,
                    seed: 0,
                },
                AdvanceToTimeout,
                read(0, 100),
                Reply {
                    which: 0,
                    how: 200,
                    seed: 0,
                },
                Junk {
                    bytes: vec![0, 0, 0, 5, 0x92, 1, 2],
                },
                Reachable { on: false },
                Disconnect,
                AdvanceToTimeout,
                Reachable { on: true },
                AdvanceToTimeout,
                Welcome {
                    status: 1,
                    tweak: 252,
                },
            ],
        ),
    ]
}

/// The seed corpus of the `client` target: `(file name, input)`.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    seed_inputs()
        .into_iter()
        .map(|(name, setup, actions)| (name.to_string(), input(setup, &actions)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_back_to_their_stories() {
        for (name, setup, actions) in seed_inputs() {
            let bytes = input(setup, &actions);
            let parsed = ClientInput::arbitrary_take_rest(Unstructured::new(&bytes)).unwrap();
            assert_eq!(parsed.setup, setup, "{name}");
            assert_eq!(parsed.actions, actions, "{name}");
        }
    }
}
