//! The `server` target: one [`Server`] over a [`MemStore`] with a few files,
//! fed an arbitrary sequence of actions from up to [`SLOTS`] connections.
//!
//! Most connections start with a well-formed handshake (and answer the
//! authentication challenge when the server asks), requests name mappings,
//! file handles, pages and revocations the server really handed out, and
//! some clients answer every invalidation and recall as a good client would,
//! so the fuzzer reaches deep states: pages shared and owned by several
//! sessions, recalls waiting for acknowledgements, leases running out,
//! sessions resumed on new connections, shutdown with dirty pages. Mixed in:
//! raw junk, arbitrary messages, replayed and skipped request numbers,
//! clients that stop reading, disconnects and time jumps.
//!
//! After every action the output is drained through the drive loop and:
//! nothing panicked, [`Server::check_invariants`] holds, and every byte the
//! server wrote decodes as a server-to-client frame.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use rmmap_core::Instant;
use rmmap_core::auth::{ProofRole, proof};
use rmmap_core::path::ExportPath;
use rmmap_core::protocol::*;
use rmmap_core::server::{
    AccessList, ClientEntry, ConnId, InputStatus, Rights, Server, ServerConfig, ServerEvent,
};
use rmmap_core::store::MemStore;

use crate::recipe::{Unparse, input, variant};

/// Connections open at once (more are refused by the fuzz harness, not the
/// server: a slot is reused once its connection is gone).
pub const SLOTS: usize = 4;

/// Paths a request may name: files that exist, one that is read-only at the
/// store, ones to create, and paths the server must refuse.
const PATHS: &[&[u8]] = &[
    b"a",
    b"dir/b",
    b"a",
    b"ro",
    b"new",
    b"dir/new",
    b"missing",
    b"../a",
    b"/a",
    b"a/",
    b"dir",
    b"",
    b"a\0b",
    b"dir/../a",
    b"\xff\xfe",
];

/// Names the handshake may use: two in the access list (one read-only and
/// confined to `dir`), one unknown.
const NAMES: &[(&str, &[u8])] = &[
    ("alice", &[0xA1; 16]),
    ("bob", &[0xB0; 16]),
    ("mallory", &[0x66; 16]),
];

/// The whole input: how the server is set up, then what happens.
#[derive(Arbitrary, Debug)]
pub struct ServerInput {
    /// Bit 0: authenticate clients. Bits 1-3 all set: read-only export.
    /// Bits 4-5 both set: 4 KiB pages (else 512 B). Bit 6: a restart grace
    /// period of one lease (else none).
    setup: u8,
    /// What happens, in order.
    actions: Vec<Action>,
}

/// One step.
#[derive(Arbitrary, Debug, PartialEq)]
enum Action {
    /// Open a connection in a free slot. `hello` picks the handshake:
    /// mostly a fresh well-formed Hello, sometimes resuming a session seen
    /// before (with its token, or a wrong one), a wrong version, or nothing.
    Connect {
        slot: u8,
        hello: u8,
        name: u8,
        answers_revocations: bool,
    },
    /// A structure-aware request over the slot's connection.
    Send { slot: u8, req: u8, request: Request },
    /// As `Send`, but only the first bytes of the frame go out now; the rest
    /// goes before whatever the slot sends next.
    SendPart {
        slot: u8,
        req: u8,
        request: Request,
        keep: u16,
    },
    /// Answer every revocation outstanding on the slot, as a good client.
    Answer { slot: u8 },
    /// Any message at all, canonical but meaningless.
    Message { slot: u8, message: Message },
    /// Raw bytes.
    Junk { slot: u8, bytes: Vec<u8> },
    /// The client stops (or resumes) reading what the server sends.
    Reading { slot: u8, on: bool },
    /// The connection drops.
    Disconnect { slot: u8 },
    /// Time passes by this many milliseconds.
    Advance { ms: u16 },
    /// Time passes to the server's next timeout.
    AdvanceToTimeout,
    /// The server begins its graceful shutdown.
    Shutdown,
}

/// A client request, with its references resolved against what the server
/// really said (an index picks among the mappings, handles, pages known).
#[derive(Arbitrary, Debug, PartialEq)]
enum Request {
    Map {
        path: u8,
        offset: u16,
        len: u16,
        flags: u8,
    },
    Unmap {
        mapping: u8,
    },
    Fetch {
        mapping: u8,
        first: u8,
        count: u8,
        flags: u8,
    },
    WriteBack {
        mapping: u8,
        patches: Vec<Patch>,
    },
    Sync {
        mapping: u8,
    },
    Release {
        file: u8,
        first: u8,
        count: u8,
    },
    Revalidate {
        mapping: u8,
        pages: Vec<(u8, u8)>,
    },
    SetLen {
        path: u8,
        len: u16,
        create: bool,
    },
    Atomic {
        mapping: u8,
        word: u8,
        op: AtomicOp,
    },
    Ping {
        nonce: u64,
    },
    Bye,
}

/// Dirty bytes for a write-back.
#[derive(Arbitrary, Debug, PartialEq)]
struct Patch {
    page: u8,
    offset: u16,
    len: u16,
    fill: u8,
}

/// A mapping as the client learned it from `Mapped`.
#[derive(Clone, Debug)]
struct MappingView {
    id: WireMappingId,
    file: FileHandle,
    offset: u64,
    len: u64,
    writable: bool,
}

/// What a client knows of one session; it outlives connections, so a
/// resumed session goes on where it was.
#[derive(Debug, Default)]
struct SessionView {
    id: SessionId,
    token: ResumeToken,
    epoch: u64,
    name: Vec<u8>,
    next_req: u64,
    mappings: Vec<MappingView>,
    handles: BTreeSet<FileHandle>,
    /// Requests in flight whose reply teaches something.
    pending: BTreeMap<ReqId, Pending>,
    /// Revocations received and not yet answered: `(handle, first, count,
    /// recall)`.
    revs: BTreeMap<RevId, (FileHandle, PageNo, u32, bool)>,
    /// Pages held exclusively (from `Pages`), to write back and to recall.
    owned: BTreeSet<(FileHandle, PageNo)>,
    /// The version of each page seen in `Pages` / `WriteAck`.
    versions: BTreeMap<(FileHandle, PageNo), Version>,
}

#[derive(Debug)]
enum Pending {
    Map {
        offset: u64,
        len: u64,
        writable: bool,
    },
    Unmap(WireMappingId),
    WriteBack(FileHandle, Vec<PageNo>),
}

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

/// Largest file the fuzz store holds. `MemStore` keeps every byte in a
/// `Vec`; a `SetLen` of petabytes once aborted the process on allocation
/// (`regressions/server/memstore-set-len-huge-allocation`, fixed in the core:
/// MemStore now refuses files over 1 GiB). Far smaller files keep each
/// execution fast and the fuzzer's memory flat, and test the same path: the
/// store refuses, as a full file system would.
const MAX_FILE_LEN: u64 = 1 << 20;

struct Harness {
    server: Server,
    store: MemStore,
    now: Instant,
    page_size: u64,
    slots: [Option<Slot>; SLOTS],
    sessions: Vec<SessionView>,
}

/// Runs one input; panics on any finding.
pub fn run(data: &[u8]) {
    let Ok(input) = ServerInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut h = Harness::new(input.setup);
    for action in &input.actions {
        if crate::tracing() {
            eprintln!("[{:?}] {action:?}", h.now);
        }
        h.act(action);
        h.pump();
        if let Err(e) = h.server.check_invariants() {
            panic!("directory invariant broken after {action:?}: {e}");
        }
    }
}

// Fields the core adds later take their defaults.
#[allow(clippy::needless_update)]
fn config(setup: u8) -> ServerConfig {
    let page_size: u32 = if setup & 0x30 == 0x30 { 4096 } else { 512 };
    let max_pages = 8;
    let access = (setup & 1 != 0).then(|| {
        let mut a = AccessList::default();
        a.clients.insert(
            NAMES[0].0.into(),
            ClientEntry {
                secret: NAMES[0].1.to_vec(),
                rights: Rights::full(),
            },
        );
        let scope = ExportPath::parse(b"dir").ok();
        a.clients.insert(
            NAMES[1].0.into(),
            ClientEntry {
                secret: NAMES[1].1.to_vec(),
                rights: Rights {
                    write: false,
                    scope,
                },
            },
        );
        a
    });
    ServerConfig {
        page_size,
        lease: Duration::from_secs(1),
        // Mostly a fresh export; sometimes a restarted server that grants no
        // write ownership for one lease.
        restart_grace: if setup & 0x40 != 0 {
            None
        } else {
            Some(Duration::ZERO)
        },
        read_only: setup & 0x0e == 0x0e,
        access,
        max_frame: (max_pages * (page_size + 16) + 4096).max(16 << 10),
        max_pages_per_request: max_pages,
        max_inflight: 6,
        max_mappings: 6,
        max_sessions: 3,
        max_held_pages: 48,
        max_handshaking: 3,
        handshake_timeout: Duration::from_secs(2),
        output_soft_limit: 16 << 10,
        output_hard_limit: 64 << 10,
        ..ServerConfig::default()
    }
}

impl Harness {
    fn new(setup: u8) -> Self {
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

    fn act(&mut self, action: &Action) {
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
    fn pump(&mut self) {
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

impl MappingView {
    /// Pages `[a, b)` the mapping touches.
    fn pages(&self, ps: u64) -> (PageNo, PageNo) {
        (self.offset / ps, (self.offset + self.len).div_ceil(ps))
    }
}

impl SessionView {
    /// The request number for the next request: usually the next one;
    /// sometimes the last one again (a retransmission), 0, or a jump.
    fn req_id(&mut self, mode: u8) -> ReqId {
        let next = self.next_req.max(1);
        match mode {
            0..=223 => {
                self.next_req = next + 1;
                ReqId(next)
            }
            224..=239 => ReqId(next.saturating_sub(1 + (mode as u64 & 3))),
            240..=243 => ReqId(0),
            _ => {
                self.next_req = next + mode as u64;
                ReqId(next + mode as u64 - 1)
            }
        }
    }

    fn mapping(&self, i: u8) -> Option<&MappingView> {
        if self.mappings.is_empty() {
            None
        } else {
            self.mappings.get(i as usize % self.mappings.len())
        }
    }

    /// Learns from one server message; a good client's answers go to `out`.
    fn learn(&mut self, msg: Message, ps: u64, answers: bool, out: &mut Vec<Bytes>) {
        match msg {
            Message::Mapped(m) => {
                if let Some(Pending::Map {
                    offset,
                    len,
                    writable,
                }) = self.pending.remove(&m.req)
                {
                    self.handles.insert(m.file);
                    self.mappings.retain(|x| x.id != m.mapping);
                    self.mappings.push(MappingView {
                        id: m.mapping,
                        file: m.file,
                        offset,
                        len,
                        writable,
                    });
                }
            }
            Message::Unmapped(u) => {
                if let Some(Pending::Unmap(id)) = self.pending.remove(&u.req) {
                    self.mappings.retain(|x| x.id != id);
                }
            }
            Message::Pages(p) => {
                for (i, g) in p.pages.iter().enumerate() {
                    let key = (p.file, p.first_page + i as u64);
                    self.versions.insert(key, g.version);
                    if p.exclusive {
                        self.owned.insert(key);
                    } else {
                        self.owned.remove(&key);
                    }
                }
            }
            Message::WriteAck(a) => {
                if let Some(Pending::WriteBack(file, pages)) = self.pending.remove(&a.req) {
                    for (p, v) in pages.iter().zip(&a.versions) {
                        self.versions.insert((file, *p), *v);
                    }
                }
            }
            Message::Error(e) => {
                self.pending.remove(&e.req);
            }
            Message::Invalidate(r) => {
                self.revs
                    .insert(r.rev, (r.file, r.first_page, r.count, false));
                if answers && let Some(f) = self.answer(r.rev, ps) {
                    out.push(f);
                }
            }
            Message::Recall(r) => {
                self.revs
                    .insert(r.rev, (r.file, r.first_page, r.count, true));
                if answers && let Some(f) = self.answer(r.rev, ps) {
                    out.push(f);
                }
            }
            _ => {}
        }
    }

    /// A good client's acknowledgement of revocation `rev`: a recall gives
    /// back dirty data for the owned pages, within a read-write mapping.
    fn answer(&mut self, rev: RevId, ps: u64) -> Option<Bytes> {
        let (file, first, count, recall) = self.revs.remove(&rev)?;
        let end = first.saturating_add(count as u64);
        if !recall {
            return Some(Message::InvalidateAck(InvalidateAck { rev }).to_bytes());
        }
        let mut patches = Vec::new();
        let owned: Vec<PageNo> = self
            .owned
            .range((file, first)..(file, end))
            .map(|(_, p)| *p)
            .collect();
        for page in owned {
            self.owned.remove(&(file, page));
            let (lo, hi) = (page * ps, page * ps + ps);
            let m = self
                .mappings
                .iter()
                .find(|m| m.file == file && m.writable && m.offset < hi && m.offset + m.len > lo);
            if let Some(m) = m {
                let (s, e) = (lo.max(m.offset), hi.min(m.offset + m.len));
                let data = Bytes::from(vec![rev.0 as u8; (e - s) as usize]);
                patches.push(PagePatch {
                    page,
                    offset: (s - lo) as u32,
                    data,
                });
            }
        }
        Some(Message::RecallAck(RecallAck { rev, patches }).to_bytes())
    }
}

impl Unparse for Action {
    fn unparse(&self, out: &mut Vec<u8>) {
        const N: u32 = 11;
        match self {
            Action::Connect {
                slot,
                hello,
                name,
                answers_revocations,
            } => {
                variant(out, 0, N);
                (*slot, *hello).unparse(out);
                (*name, *answers_revocations).unparse(out);
            }
            Action::Send { slot, req, request } => {
                variant(out, 1, N);
                (*slot, *req).unparse(out);
                request.unparse(out);
            }
            Action::SendPart {
                slot,
                req,
                request,
                keep,
            } => {
                variant(out, 2, N);
                (*slot, *req).unparse(out);
                request.unparse(out);
                keep.unparse(out);
            }
            Action::Answer { slot } => {
                variant(out, 3, N);
                slot.unparse(out);
            }
            Action::Message { .. } => panic!("seeds are written without arbitrary messages"),
            Action::Junk { slot, bytes } => {
                variant(out, 5, N);
                slot.unparse(out);
                bytes.unparse(out);
            }
            Action::Reading { slot, on } => {
                variant(out, 6, N);
                (*slot, *on).unparse(out);
            }
            Action::Disconnect { slot } => {
                variant(out, 7, N);
                slot.unparse(out);
            }
            Action::Advance { ms } => {
                variant(out, 8, N);
                ms.unparse(out);
            }
            Action::AdvanceToTimeout => variant(out, 9, N),
            Action::Shutdown => variant(out, 10, N),
        }
    }
}

impl Unparse for Request {
    fn unparse(&self, out: &mut Vec<u8>) {
        const N: u32 = 11;
        match self {
            Request::Map {
                path,
                offset,
                len,
                flags,
            } => {
                variant(out, 0, N);
                (*path, (*offset, (*len, *flags))).unparse(out);
            }
            Request::Unmap { mapping } => {
                variant(out, 1, N);
                mapping.unparse(out);
            }
            Request::Fetch {
                mapping,
                first,
                count,
                flags,
            } => {
                variant(out, 2, N);
                ((*mapping, *first), (*count, *flags)).unparse(out);
            }
            Request::WriteBack { mapping, patches } => {
                variant(out, 3, N);
                mapping.unparse(out);
                patches.unparse(out);
            }
            Request::Sync { mapping } => {
                variant(out, 4, N);
                mapping.unparse(out);
            }
            Request::Release { file, first, count } => {
                variant(out, 5, N);
                (*file, (*first, *count)).unparse(out);
            }
            Request::Revalidate { mapping, pages } => {
                variant(out, 6, N);
                mapping.unparse(out);
                pages.unparse(out);
            }
            Request::SetLen { path, len, create } => {
                variant(out, 7, N);
                (*path, (*len, *create)).unparse(out);
            }
            Request::Atomic { mapping, word, op } => {
                variant(out, 8, N);
                (*mapping, *word).unparse(out);
                op.unparse(out);
            }
            Request::Ping { nonce } => {
                variant(out, 9, N);
                nonce.unparse(out);
            }
            Request::Bye => variant(out, 10, N),
        }
    }
}

impl Unparse for Patch {
    fn unparse(&self, out: &mut Vec<u8>) {
        (self.page, (self.offset, (self.len, self.fill))).unparse(out);
    }
}

/// Seed inputs, each a story that reaches somewhere deep: `(file name,
/// setup byte, actions)`.
fn seed_inputs() -> Vec<(&'static str, u8, Vec<Action>)> {
    use Action::*;
    use Request as R;
    let connect = |slot, answers| Connect {
        slot,
        hello: 0,
        name: 0,
        answers_revocations: answers,
    };
    let send = |slot, request| Send {
        slot,
        req: 0,
        request,
    };
    // Path 0 is "a" (16 pages of 512 bytes); map flag choice 1 is WRITE.
    let map_rw = |slot| {
        send(
            slot,
            R::Map {
                path: 0,
                offset: 0,
                len: 8192,
                flags: 1,
            },
        )
    };
    // Fetch flag choices: 0 shared, 1 exclusive, 3 exclusive with data, 4 overwrite.
    let fetch = |slot, first, count, flags| {
        send(
            slot,
            R::Fetch {
                mapping: 0,
                first,
                count,
                flags,
            },
        )
    };
    let patch = |page, fill| Patch {
        page,
        offset: 16,
        len: 100,
        fill,
    };
    vec![
        (
            "map_fetch_write_sync",
            0,
            vec![
                connect(0, true),
                map_rw(0),
                fetch(0, 0, 3, 1),
                send(
                    0,
                    R::WriteBack {
                        mapping: 0,
                        patches: vec![patch(0, 0xAB), patch(1, 0xCD)],
                    },
                ),
                send(0, R::Sync { mapping: 0 }),
                send(
                    0,
                    R::Atomic {
                        mapping: 0,
                        word: 2,
                        op: AtomicOp::FetchAdd(5),
                    },
                ),
                send(0, R::Unmap { mapping: 0 }),
                send(0, R::Bye),
            ],
        ),
        (
            "two_sessions_recall_and_invalidate",
            0,
            vec![
                connect(0, true),
                connect(1, true),
                map_rw(0),
                map_rw(1),
                fetch(0, 0, 4, 3),
                send(
                    0,
                    R::WriteBack {
                        mapping: 0,
                        patches: vec![patch(2, 0x11)],
                    },
                ),
                fetch(1, 0, 2, 0),
                fetch(1, 1, 2, 1),
                fetch(0, 0, 4, 0),
                send(
                    1,
                    R::Atomic {
                        mapping: 0,
                        word: 0,
                        op: AtomicOp::CompareExchange {
                            expected: 0,
                            new: 9,
                        },
                    },
                ),
                Answer { slot: 0 },
                Answer { slot: 1 },
            ],
        ),
        (
            "silent_owner_loses_its_lease",
            0,
            vec![
                connect(0, false),
                connect(1, true),
                map_rw(0),
                map_rw(1),
                fetch(0, 0, 4, 1),
                fetch(1, 0, 4, 1),
                Advance { ms: 600 },
                send(1, R::Ping { nonce: 1 }),
                Advance { ms: 600 },
                AdvanceToTimeout,
                fetch(1, 0, 4, 1),
            ],
        ),
        (
            "disconnect_then_resume",
            0,
            vec![
                connect(0, true),
                map_rw(0),
                fetch(0, 0, 2, 1),
                Disconnect { slot: 0 },
                Advance { ms: 100 },
                Connect {
                    slot: 1,
                    hello: 180,
                    name: 0,
                    answers_revocations: true,
                },
                fetch(1, 0, 2, 0),
                send(
                    1,
                    R::Revalidate {
                        mapping: 0,
                        pages: vec![(0, 0), (1, 0), (2, 250)],
                    },
                ),
                send(
                    1,
                    R::Release {
                        file: 0,
                        first: 0,
                        count: 2,
                    },
                ),
            ],
        ),
        (
            "shutdown_recalls_dirty_pages",
            0,
            vec![
                connect(0, true),
                connect(1, false),
                map_rw(0),
                map_rw(1),
                fetch(0, 0, 2, 1),
                fetch(1, 4, 2, 4),
                Shutdown,
                Answer { slot: 1 },
                AdvanceToTimeout,
                AdvanceToTimeout,
            ],
        ),
        (
            "authenticated_clients",
            1,
            vec![
                connect(0, true),
                Connect {
                    slot: 1,
                    hello: 0,
                    name: 1,
                    answers_revocations: true,
                },
                Connect {
                    slot: 2,
                    hello: 0,
                    name: 2,
                    answers_revocations: true,
                },
                map_rw(0),
                send(
                    1,
                    R::Map {
                        path: 0,
                        offset: 0,
                        len: 512,
                        flags: 0,
                    },
                ),
                send(
                    1,
                    R::SetLen {
                        path: 4,
                        len: 100,
                        create: true,
                    },
                ),
            ],
        ),
        (
            "limits_junk_and_shrink",
            0,
            vec![
                connect(0, true),
                send(
                    0,
                    R::Map {
                        path: 4,
                        offset: 0,
                        len: 4000,
                        flags: 2,
                    },
                ),
                send(
                    0,
                    R::SetLen {
                        path: 4,
                        len: 700,
                        create: false,
                    },
                ),
                send(0, R::Unmap { mapping: 0 }),
                send(
                    0,
                    R::SetLen {
                        path: 4,
                        len: 700,
                        create: false,
                    },
                ),
                SendPart {
                    slot: 0,
                    req: 224,
                    request: R::Ping { nonce: 7 },
                    keep: 3,
                },
                send(
                    0,
                    R::Map {
                        path: 7,
                        offset: 0,
                        len: 1,
                        flags: 0,
                    },
                ),
                Reading { slot: 0, on: false },
                fetch(0, 0, 8, 2),
                Reading { slot: 0, on: true },
                Connect {
                    slot: 3,
                    hello: 255,
                    name: 0,
                    answers_revocations: false,
                },
                Junk {
                    slot: 3,
                    bytes: vec![0xFF, 0xFF, 0xFF, 0xFF, 0x01],
                },
                Advance { ms: 3000 },
            ],
        ),
    ]
}

/// The seed corpus of the `server` target: `(file name, input)`.
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
            let parsed = ServerInput::arbitrary_take_rest(Unstructured::new(&bytes)).unwrap();
            assert_eq!(parsed.setup, setup, "{name}");
            assert_eq!(parsed.actions, actions, "{name}");
        }
    }
}
