//! The harness: one server, up to [`SLOTS`] client connections played by
//! the fuzz input, and the drive loop between them.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rmmap_core::Instant;
use rmmap_core::auth::{ProofRole, proof};
use rmmap_core::protocol::*;
use rmmap_core::server::{ConnId, InputStatus, Server, ServerEvent};
use rmmap_core::store::MemStore;

use super::view::{Pending, SessionView};
use super::{Action, MAX_FILE_LEN, NAMES, PATHS, Request, SLOTS, config};

/// One connection, client side.
#[derive(Debug)]
struct Slot {
    conn: ConnId,
    /// Index into `Harness::sessions` once welcomed.
    session: Option<usize>,
    name: Vec<u8>,
    client_nonce: Nonce,
    /// Bytes from the server not yet framed.
    inbox: BytesMut,
    /// Bytes to the server not yet taken (a partial frame, or input the
    /// server paused).
    outbox: BytesMut,
    /// The tail of a frame sent in part, to go before the next send.
    held_back: Bytes,
    reading: bool,
    answers_revocations: bool,
    closed: bool,
}

pub(super) struct Harness {
    pub(super) server: Server,
    store: MemStore,
    pub(super) now: Instant,
    page_size: u64,
    slots: [Option<Slot>; SLOTS],
    sessions: Vec<SessionView>,
}

impl Harness {
    pub(super) fn new(setup: u8) -> Self {
        let store = MemStore::new();
        store.insert("a", (0..16 * 512).map(|i| i as u8).collect::<Vec<u8>>());
        store.insert("dir/b", vec![0xBB; 3000]);
        store.insert("ro", vec![0x52; 2048]);
        store.set_writable("ro", false);
        store.set_max_file_len(MAX_FILE_LEN);
        let config = config(setup);
        let page_size = config.page_size as u64;
        let server = Server::new(config, [setup; 32], Instant::ZERO, None)
            .expect("the fuzz configuration is valid");
        Harness {
            server,
            store,
            now: Instant::ZERO,
            page_size,
            slots: Default::default(),
            sessions: Vec::new(),
        }
    }

    pub(super) fn act(&mut self, action: &Action) {
        match *action {
            Action::Connect {
                slot,
                hello,
                name,
                answers_revocations,
            } => self.connect(slot, hello, name, answers_revocations),
            Action::Send {
                slot,
                req,
                ref request,
            } => {
                if let Some(frame) = self.request(slot, req, request) {
                    self.send(slot, &frame);
                }
            }
            Action::SendPart {
                slot,
                req,
                ref request,
                keep,
            } => {
                if let Some(frame) = self.request(slot, req, request) {
                    let cut = frame
                        .len()
                        .saturating_sub(keep as usize % frame.len().max(1));
                    self.send(slot, &frame[..cut]);
                    if let Some(s) = self.slot_mut(slot) {
                        s.held_back = frame.slice(cut..);
                    }
                }
            }
            Action::Answer { slot } => {
                let i = slot as usize % SLOTS;
                let frames = self.answer_all(i);
                for f in frames {
                    self.send(slot, &f);
                }
            }
            Action::Message { slot, ref message } => self.send(slot, &message.to_bytes()),
            Action::Junk { slot, ref bytes } => self.send(slot, bytes),
            Action::Reading { slot, on } => {
                if let Some(s) = self.slot_mut(slot) {
                    s.reading = on;
                }
            }
            Action::Disconnect { slot } => {
                if let Some(s) = self.slots[slot as usize % SLOTS].take() {
                    self.server.handle_disconnect(self.now, s.conn);
                }
            }
            Action::Advance { ms } => self.advance(self.now + Duration::from_millis(ms as u64)),
            Action::AdvanceToTimeout => {
                if let Some(t) = self.server.poll_timeout() {
                    self.advance(t.max(self.now));
                }
            }
            Action::Shutdown => self.server.begin_shutdown(self.now),
        }
    }

    fn advance(&mut self, to: Instant) {
        self.now = to;
        if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
            self.server.handle_timeout(self.now);
        }
    }

    fn slot_mut(&mut self, slot: u8) -> Option<&mut Slot> {
        self.slots[slot as usize % SLOTS].as_mut()
    }

    fn connect(&mut self, slot: u8, kind: u8, name: u8, answers_revocations: bool) {
        let i = slot as usize % SLOTS;
        if self.slots[i].is_some() {
            return;
        }
        let conn = self.server.handle_connect(self.now);
        let name = NAMES[name as usize % NAMES.len()].0.as_bytes().to_vec();
        let client_nonce = [kind ^ slot; 16];
        let mut s = Slot {
            conn,
            session: None,
            name: name.clone(),
            client_nonce,
            inbox: BytesMut::new(),
            outbox: BytesMut::new(),
            held_back: Bytes::new(),
            reading: true,
            answers_revocations,
            closed: false,
        };
        let fresh = |name: Vec<u8>| Hello {
            version: PROTOCOL_VERSION,
            max_frame: 4 << 20,
            client_nonce,
            client_name: Bytes::from(name),
            resume: None,
        };
        let hello = match kind {
            0..=179 => Some(fresh(name)),
            180..=239 if !self.sessions.is_empty() => {
                let v = &self.sessions[kind as usize % self.sessions.len()];
                s.name = v.name.clone();
                let mut token = v.token;
                if kind >= 232 {
                    token[0] ^= 1;
                }
                let resume = Some(Resume {
                    session: v.id,
                    token,
                    epoch: v.epoch,
                });
                Some(Hello {
                    resume,
                    ..fresh(v.name.clone())
                })
            }
            180..=239 => Some(fresh(name)),
            240..=247 => Some(Hello {
                version: kind as u16,
                ..fresh(name)
            }),
            _ => None,
        };
        self.slots[i] = Some(s);
        if let Some(h) = hello {
            self.send(slot, &Message::Hello(h).to_bytes());
        }
    }

    /// Appends bytes to the slot's stream and lets the server read.
    fn send(&mut self, slot: u8, bytes: &[u8]) {
        let i = slot as usize % SLOTS;
        let Some(s) = self.slots[i].as_mut() else {
            return;
        };
        if crate::tracing() {
            let mut b = BytesMut::from(bytes);
            match decode_frame(&mut b, HARD_MAX_FRAME) {
                Ok(Some(m)) => eprintln!("    slot {i} -> {}", brief(&m)),
                _ => eprintln!("    slot {i} -> {} raw bytes", bytes.len()),
            }
        }
        let held = std::mem::take(&mut s.held_back);
        s.outbox.extend_from_slice(&held);
        s.outbox.extend_from_slice(bytes);
        self.feed(i);
    }

    fn feed(&mut self, i: usize) {
        let Some(s) = self.slots[i].as_mut() else {
            return;
        };
        if s.closed || s.outbox.is_empty() {
            return;
        }
        let conn = s.conn;
        if self.server.handle_input(self.now, conn, &mut s.outbox) == InputStatus::Closing {
            s.closed = true;
        }
    }

    /// The drive loop: drain events and bytes, let the clients react, until
    /// nothing moves.
    pub(super) fn pump(&mut self) {
        for _ in 0..64 {
            let mut progress = false;
            while let Some(ev) = self.server.poll_event() {
                progress = true;
                match ev {
                    ServerEvent::Transmit(c) => {
                        if let Some(i) = self.slot_of(c)
                            && self.slots[i].as_ref().is_some_and(|s| s.reading)
                        {
                            self.drain(i);
                        }
                    }
                    ServerEvent::Close(c) => match self.slot_of(c) {
                        Some(i) => {
                            // Send what is queued, then close.
                            self.drain(i);
                            self.react(i);
                            if crate::tracing() {
                                eprintln!("    slot {i} closed by the server");
                            }
                            self.slots[i] = None;
                            self.server.handle_disconnect(self.now, c);
                        }
                        None => self.server.handle_disconnect(self.now, c),
                    },
                    ServerEvent::Store(req) => {
                        let result = req.op.execute(&self.store);
                        self.server.handle_store_done(self.now, req.id, result);
                    }
                    _ => {}
                }
            }
            for i in 0..SLOTS {
                if self.slots[i].as_ref().is_some_and(|s| s.reading) && self.drain(i) {
                    progress = true;
                }
            }
            for i in 0..SLOTS {
                let replies = self.react(i);
                if !replies.is_empty() {
                    progress = true;
                }
                if let Some(s) = self.slots[i].as_mut() {
                    if !replies.is_empty() {
                        // A client finishes the frame it was writing first.
                        let held = std::mem::take(&mut s.held_back);
                        s.outbox.extend_from_slice(&held);
                    }
                    for r in replies {
                        if crate::tracing() {
                            let mut b = BytesMut::from(&r[..]);
                            if let Ok(Some(m)) = decode_frame(&mut b, HARD_MAX_FRAME) {
                                eprintln!("    slot {i} -> {} (answer)", brief(&m));
                            }
                        }
                        s.outbox.extend_from_slice(&r);
                    }
                }
                let before = self.slots[i].as_ref().map_or(0, |s| s.outbox.len());
                self.feed(i);
                if self.slots[i]
                    .as_ref()
                    .is_some_and(|s| s.outbox.len() != before)
                {
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
    }

    fn slot_of(&self, c: ConnId) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.conn == c))
    }

    /// Takes the server's output for slot `i` into its inbox.
    fn drain(&mut self, i: usize) -> bool {
        let Some(s) = self.slots[i].as_mut() else {
            return false;
        };
        let mut any = false;
        while let Some(b) = self.server.poll_transmit(s.conn) {
            s.inbox.extend_from_slice(&b);
            any = true;
        }
        any
    }

    /// Frames the slot's inbox and learns from it; returns what a client
    /// answers at once (authentication, revocation acknowledgements).
    fn react(&mut self, i: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        loop {
            let Some(s) = self.slots[i].as_mut() else {
                return out;
            };
            let msg = match decode_frame(&mut s.inbox, HARD_MAX_FRAME) {
                Ok(Some(m)) => m,
                Ok(None) => return out,
                Err(e) => panic!("the server sent bytes that do not decode: {e}"),
            };
            assert!(
                msg.kind() >= 0x80,
                "the server sent a client message: {msg:?}"
            );
            if crate::tracing() {
                eprintln!("    slot {i} <- {}", brief(&msg));
            }
            self.learn(i, msg, &mut out);
        }
    }

    fn learn(&mut self, i: usize, msg: Message, out: &mut Vec<Bytes>) {
        let ps = self.page_size;
        let Some(slot) = self.slots[i].as_ref() else {
            return;
        };
        let (name, client_nonce, answers, session) = (
            slot.name.clone(),
            slot.client_nonce,
            slot.answers_revocations,
            slot.session,
        );
        match msg {
            Message::Challenge(c) => {
                let secret = NAMES
                    .iter()
                    .find(|(n, _)| n.as_bytes() == &name[..])
                    .map_or(&[][..], |(_, s)| *s);
                let p = proof(
                    secret,
                    ProofRole::Client,
                    &name,
                    &client_nonce,
                    &c.server_nonce,
                );
                out.push(Message::Authenticate(Authenticate { proof: p }).to_bytes());
            }
            Message::Welcome(w) => {
                let known = self
                    .sessions
                    .iter()
                    .position(|v| v.id == w.session && v.epoch == w.epoch);
                let idx = match (w.status, known) {
                    (ResumeStatus::Resumed, Some(k)) => k,
                    _ => {
                        if self.sessions.len() >= 16 {
                            self.sessions.remove(0);
                            for s in self.slots.iter_mut().flatten() {
                                s.session = s.session.and_then(|x| x.checked_sub(1));
                            }
                        }
                        self.sessions.push(SessionView {
                            id: w.session,
                            token: w.token,
                            epoch: w.epoch,
                            name,
                            next_req: 1,
                            ..Default::default()
                        });
                        self.sessions.len() - 1
                    }
                };
                if let Some(s) = self.slots[i].as_mut() {
                    s.session = Some(idx);
                }
            }
            other => {
                let Some(v) = session.and_then(|k| self.sessions.get_mut(k)) else {
                    return;
                };
                v.learn(other, ps, answers, out);
            }
        }
    }

    /// Acknowledgements for every revocation outstanding on slot `i`.
    fn answer_all(&mut self, i: usize) -> Vec<Bytes> {
        let ps = self.page_size;
        let Some(v) = self.slots[i]
            .as_ref()
            .and_then(|s| s.session)
            .and_then(|k| self.sessions.get_mut(k))
        else {
            return Vec::new();
        };
        let revs: Vec<RevId> = v.revs.keys().copied().collect();
        revs.into_iter().filter_map(|r| v.answer(r, ps)).collect()
    }

    /// Builds the frame for a structure-aware request, or `None` without a
    /// connection.
    fn request(&mut self, slot: u8, req_mode: u8, r: &Request) -> Option<Bytes> {
        let ps = self.page_size;
        let s = self.slots[slot as usize % SLOTS].as_ref()?;
        let mut scratch = SessionView::default();
        let v = match s.session.and_then(|k| self.sessions.get_mut(k)) {
            Some(v) => v,
            None => &mut scratch,
        };
        let req = v.req_id(req_mode);
        let path = |p: u8| Bytes::from_static(PATHS[p as usize % PATHS.len()]);
        let msg = match *r {
            Request::Map {
                path: p,
                offset,
                len,
                flags,
            } => {
                let flags = match flags {
                    0..=239 => [
                        0,
                        map_flags::WRITE,
                        map_flags::WRITE | map_flags::CREATE,
                        map_flags::CREATE,
                    ][flags as usize % 4],
                    f => f,
                };
                let (offset, len) = (offset as u64 % 9000, len as u64 % 9000);
                let writable = flags & map_flags::WRITE != 0;
                v.pending.insert(
                    req,
                    Pending::Map {
                        offset,
                        len,
                        writable,
                    },
                );
                Message::Map(Map {
                    req,
                    flags,
                    offset,
                    len,
                    path: path(p),
                })
            }
            Request::Unmap { mapping } => {
                let id = v
                    .mapping(mapping)
                    .map_or(WireMappingId(mapping as u32), |m| m.id);
                v.pending.insert(req, Pending::Unmap(id));
                Message::Unmap(Unmap { req, mapping: id })
            }
            // The top flag values are a `Refresh` of the same pages: the
            // digests are those of file "a" as the store first had it when
            // the low bit is set (so mappings of "a" meet matching copies),
            // of nothing otherwise.
            Request::Fetch {
                mapping,
                first,
                count,
                flags: flags @ 0xF0..,
            } => {
                let (id, first_page) = match v.mapping(mapping) {
                    Some(m) => {
                        let (a, b) = m.pages(ps);
                        (m.id, a + first as u64 % (b - a).max(1))
                    }
                    None => (WireMappingId(mapping as u32), first as u64),
                };
                let original = |p: u64| -> Vec<u8> {
                    (p * ps..(p + 1) * ps)
                        .map(|i| if i < 16 * 512 { i as u8 } else { 0 })
                        .collect()
                };
                let digests = (first_page..first_page + 1 + count as u64 % 9)
                    .map(|p| {
                        if flags & 1 == 1 {
                            PageDigest::of(&original(p))
                        } else {
                            PageDigest([flags; 16])
                        }
                    })
                    .collect();
                Message::Refresh(Refresh {
                    req,
                    mapping: id,
                    first_page,
                    digests,
                })
            }
            Request::Fetch {
                mapping,
                first,
                count,
                flags,
            } => {
                let flags = match flags {
                    0..=223 => {
                        use fetch_flags::*;
                        [
                            0,
                            EXCLUSIVE,
                            WANT_DATA,
                            EXCLUSIVE | WANT_DATA,
                            EXCLUSIVE | OVERWRITE,
                        ][flags as usize % 5]
                    }
                    f => f & 0x0f,
                };
                let (id, first_page) = match v.mapping(mapping) {
                    Some(m) => {
                        let (a, b) = m.pages(ps);
                        (m.id, a + first as u64 % (b - a).max(1))
                    }
                    None => (WireMappingId(mapping as u32), first as u64),
                };
                Message::Fetch(Fetch {
                    req,
                    mapping: id,
                    first_page,
                    count: 1 + count as u32 % 9,
                    flags,
                })
            }
            Request::WriteBack {
                mapping,
                ref patches,
            } => {
                let m = v.mapping(mapping).cloned();
                let id = m.as_ref().map_or(WireMappingId(mapping as u32), |m| m.id);
                let owned: Vec<PageNo> = match &m {
                    Some(m) => v
                        .owned
                        .iter()
                        .filter(|(h, _)| *h == m.file)
                        .map(|(_, p)| *p)
                        .collect(),
                    None => Vec::new(),
                };
                let mut pages = Vec::new();
                let patches: Vec<PagePatch> = patches
                    .iter()
                    .take(8)
                    .map(|p| {
                        let page = if owned.is_empty() {
                            p.page as u64
                        } else {
                            owned[p.page as usize % owned.len()]
                        };
                        let offset = p.offset as u64 % ps;
                        let len = p.len as u64 % (ps - offset + 1);
                        pages.push(page);
                        PagePatch {
                            page,
                            offset: offset as u32,
                            data: Bytes::from(vec![p.fill; len as usize]),
                        }
                    })
                    .collect();
                if let Some(m) = &m {
                    v.pending.insert(req, Pending::WriteBack(m.file, pages));
                }
                Message::WriteBack(WriteBack {
                    req,
                    mapping: id,
                    patches,
                })
            }
            Request::Sync { mapping } => {
                let id = v
                    .mapping(mapping)
                    .map_or(WireMappingId(mapping as u32), |m| m.id);
                Message::Sync(Sync { req, mapping: id })
            }
            Request::Release { file, first, count } => {
                let handles: Vec<_> = v.handles.iter().copied().collect();
                let file = if handles.is_empty() {
                    FileHandle(file as u32)
                } else {
                    handles[file as usize % handles.len()]
                };
                v.owned.retain(|(h, p)| {
                    *h != file || *p < first as u64 || *p >= first as u64 + count as u64
                });
                Message::Release(Release {
                    file,
                    first_page: first as u64,
                    count: count as u32,
                })
            }
            Request::Revalidate { mapping, ref pages } => {
                let m = v.mapping(mapping).cloned();
                let pages = pages
                    .iter()
                    .take(16)
                    .map(|&(rel, ver)| {
                        let page = match &m {
                            Some(m) => {
                                let (a, b) = m.pages(ps);
                                a + rel as u64 % (b - a).max(1)
                            }
                            None => rel as u64,
                        };
                        let known = m
                            .as_ref()
                            .and_then(|m| v.versions.get(&(m.file, page)).copied());
                        let version = match (ver, known) {
                            (0..=199, Some(k)) => k,
                            _ => ver as u64,
                        };
                        PageVersion { page, version }
                    })
                    .collect();
                let id = m.map_or(WireMappingId(mapping as u32), |m| m.id);
                Message::Revalidate(Revalidate {
                    req,
                    mapping: id,
                    pages,
                })
            }
            Request::SetLen {
                path: p,
                len,
                create,
            } => Message::SetLen(SetLen {
                req,
                create,
                len: len as u64 % 12000,
                path: path(p),
            }),
            Request::Atomic { mapping, word, op } => {
                let (id, offset) = match v.mapping(mapping) {
                    Some(m) => {
                        let base = m.offset.next_multiple_of(8);
                        let w = word as u64 & 0x7f;
                        let misaligned = if word & 0x80 != 0 && word & 1 != 0 {
                            3
                        } else {
                            0
                        };
                        (m.id, base + 8 * (w % (m.len / 8).max(1)) + misaligned)
                    }
                    None => (WireMappingId(mapping as u32), word as u64 * 8),
                };
                Message::Atomic(Atomic {
                    req,
                    mapping: id,
                    offset,
                    op,
                })
            }
            Request::Ping { nonce } => Message::Ping(Ping { nonce }),
            Request::Bye => Message::Bye,
        };
        Some(msg.to_bytes())
    }
}

/// A message for the trace, without page data.
pub(crate) fn brief(m: &Message) -> String {
    match m {
        Message::Pages(p) => format!(
            "Pages {{ req: {}, file: {}, first_page: {}, exclusive: {}, {} pages }}",
            p.req,
            p.file,
            p.first_page,
            p.exclusive,
            p.pages.len()
        ),
        Message::Error(e) => format!(
            "Error {{ req: {}, {}: {} }}",
            e.req,
            e.code,
            String::from_utf8_lossy(&e.message)
        ),
        m => format!("{m:?}"),
    }
}
