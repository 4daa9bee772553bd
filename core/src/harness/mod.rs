//! An in-memory cluster: one server and N clients wired by simulated links,
//! driven through the same drive loop as the real adapters, in virtual time.
//!
//! Each link carries a byte stream in each direction with a latency. Frames
//! can be held back (a one-way partition), dropped together with the rest of
//! the connection (a cut), duplicated, or delayed by a hook; connections can
//! be cut, the server restarted (crashed, or shut down gracefully) over a
//! store that loses what was not synced. The server's store requests run in
//! virtual time too: at once by default, or each after a delay a disk hook
//! picks (so they finish out of order); the store itself can be made to
//! fail ([`MemStore::inject`]). Everything is deterministic: the same calls
//! give the same run.

mod coordinator;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::Instant;
use crate::client::{
    Client, ClientConfig, Completion, Event, MapOptions, MappingId, OpError, OpId, Pending,
};
use crate::protocol::{Message, check_frame, decode_body};
use crate::server::{ConnId, InputStatus, Server, ServerConfig, ServerEvent};
use crate::store::{MemStore, Store, StoreRequest};

pub use coordinator::Coordination;

/// Which way a frame travels.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    ToServer,
    /// Server to client.
    ToClient,
}

/// What a hook does with a frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver after the link's latency.
    Deliver,
    /// Deliver after this extra delay (frames behind it wait: it is a stream).
    Delay(Duration),
    /// Deliver twice (to test duplicate handling).
    Duplicate,
    /// Lose this frame and cut the connection: nothing after it arrives.
    DropAndCut,
}

/// Decides the fate of each frame: `(client index, direction, message)`.
pub type Hook = Box<dyn FnMut(usize, Direction, &Message) -> Verdict>;

/// Decides how long each store request takes (zero: it runs at once).
pub type DiskHook = Box<dyn FnMut(&StoreRequest) -> Duration>;

struct Pipe {
    /// Bytes not yet split into frames.
    framer: BytesMut,
    queue: VecDeque<(Instant, Bytes)>,
    held: bool,
    /// Bytes delivered but not yet taken by the receiver (server paused).
    inbox: BytesMut,
}

impl Pipe {
    fn new() -> Self {
        Pipe {
            framer: BytesMut::new(),
            queue: VecDeque::new(),
            held: false,
            inbox: BytesMut::new(),
        }
    }

    fn next_time(&self) -> Option<Instant> {
        if self.held {
            None
        } else {
            self.queue.front().map(|(t, _)| *t)
        }
    }
}

struct Link {
    conn: ConnId,
    to_server: Pipe,
    to_client: Pipe,
    /// The server asked to close: deliver what is queued, then disconnect.
    closing: bool,
}

/// One client and its connection.
pub struct Node {
    /// The client state machine.
    pub client: Client,
    link: Option<Link>,
    /// Every event other than completions and connection requests.
    pub events: Vec<Event>,
    /// Completed operations.
    pub completions: BTreeMap<OpId, Result<Completion, OpError>>,
    /// Link latency, each way.
    pub latency: Duration,
    /// Refuse connection attempts (the server is unreachable).
    pub unreachable: bool,
}

/// The cluster.
pub struct Cluster {
    /// Virtual time.
    pub now: Instant,
    /// The server.
    pub server: Server,
    /// The server's files (survives restarts).
    pub store: MemStore,
    /// The clients.
    pub nodes: Vec<Node>,
    server_config: ServerConfig,
    by_conn: BTreeMap<ConnId, usize>,
    hook: Option<Hook>,
    disk_hook: Option<DiskHook>,
    /// Store requests running, by the time they finish (then by order).
    disk: BTreeMap<(Instant, u64), StoreRequest>,
    disk_seq: u64,
    /// Store requests run so far.
    pub store_requests: u64,
    /// Check the directory invariants after every step (default true).
    pub check_invariants: bool,
    restarts: u64,
    seed: u64,
    /// The coordinator, when the server is a cluster member
    /// ([`ServerConfig::cluster`]).
    pub coordination: Option<Coordination>,
}

/// A server over `store`, started at `now` with the run state the store has.
fn start_server(config: &ServerConfig, store: &MemStore, seed: [u8; 32], now: Instant) -> Server {
    let state = store
        .load_run_state()
        .expect("a memory store always answers");
    Server::new(config.clone(), seed, now, state.as_deref()).expect("valid config")
}

fn seed_bytes(seed: u64, salt: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&salt.to_le_bytes());
    s
}

impl Cluster {
    /// A server over `store` and `clients` clients with default settings.
    pub fn new(server_config: ServerConfig, store: MemStore, clients: usize, seed: u64) -> Self {
        Self::with_clients(
            server_config,
            store,
            vec![ClientConfig::default(); clients],
            seed,
        )
    }

    /// A server and one client per configuration.
    pub fn with_clients(
        server_config: ServerConfig,
        store: MemStore,
        clients: Vec<ClientConfig>,
        seed: u64,
    ) -> Self {
        let now = Instant::ZERO;
        let server = start_server(&server_config, &store, seed_bytes(seed, 0), now);
        let nodes = clients
            .into_iter()
            .enumerate()
            .map(|(i, c)| Node {
                client: Client::new(c, seed_bytes(seed, 1000 + i as u64), now),
                link: None,
                events: Vec::new(),
                completions: BTreeMap::new(),
                latency: Duration::from_micros(50),
                unreachable: false,
            })
            .collect();
        let mut c = Cluster {
            now,
            server,
            store,
            nodes,
            server_config,
            by_conn: BTreeMap::new(),
            hook: None,
            disk_hook: None,
            disk: BTreeMap::new(),
            disk_seq: 0,
            store_requests: 0,
            check_invariants: true,
            restarts: 0,
            seed,
            coordination: None,
        };
        if c.server_config.cluster.is_some() {
            c.coordination = Some(Coordination::new());
        }
        c.flush();
        c
    }

    /// Installs a hook that sees every frame.
    pub fn set_hook(&mut self, hook: Hook) {
        self.hook = Some(hook);
    }

    /// Removes the hook.
    pub fn clear_hook(&mut self) {
        self.hook = None;
    }

    /// Installs a hook that says how long each store request takes.
    pub fn set_disk_hook(&mut self, hook: DiskHook) {
        self.disk_hook = Some(hook);
    }

    /// Store requests running.
    pub fn disk_busy(&self) -> usize {
        self.disk.len()
    }

    /// Hands a store request to the simulated disk: run at once, or later.
    fn submit_store(&mut self, req: StoreRequest) {
        let delay = self.disk_hook.as_mut().map_or(Duration::ZERO, |h| h(&req));
        if delay.is_zero() {
            self.run_store(req);
        } else {
            self.disk_seq += 1;
            self.disk.insert((self.now + delay, self.disk_seq), req);
        }
    }

    fn run_store(&mut self, req: StoreRequest) {
        self.store_requests += 1;
        let result = req.op.execute(&self.store);
        self.server.handle_store_done(self.now, req.id, result);
    }

    /// Moves every output of every state machine onto the links, and acts on
    /// connection requests, until nothing more comes out.
    pub fn flush(&mut self) {
        loop {
            let mut progress = self.drive_coordination();
            while let Some(ev) = self.server.poll_event() {
                progress = true;
                match ev {
                    ServerEvent::Transmit(c) => self.drain_server(c),
                    ServerEvent::Store(req) => self.submit_store(req),
                    ServerEvent::Coordinate { id, request } => self.coordinate(id, request),
                    ServerEvent::Cluster(e) => {
                        if let Some(c) = self.coordination.as_mut() {
                            c.events.push(e);
                        }
                    }
                    ServerEvent::Close(c) => {
                        self.drain_server(c);
                        if let Some(&i) = self.by_conn.get(&c)
                            && let Some(l) = self.nodes[i].link.as_mut()
                            && l.conn == c
                        {
                            l.closing = true;
                        } else {
                            self.server.handle_disconnect(self.now, c);
                        }
                    }
                    _ => {}
                }
            }
            for i in 0..self.nodes.len() {
                while let Some(ev) = self.nodes[i].client.poll_event() {
                    progress = true;
                    match ev {
                        Event::Connect => {
                            if self.nodes[i].unreachable {
                                let refused = std::io::ErrorKind::ConnectionRefused.into();
                                self.nodes[i]
                                    .client
                                    .handle_connect_failed(self.now, refused);
                            } else {
                                let conn = self.server.handle_connect(self.now);
                                self.by_conn.insert(conn, i);
                                self.nodes[i].link = Some(Link {
                                    conn,
                                    to_server: Pipe::new(),
                                    to_client: Pipe::new(),
                                    closing: false,
                                });
                                self.nodes[i].client.handle_connected(self.now);
                            }
                        }
                        Event::Disconnect => {
                            if let Some(l) = self.nodes[i].link.take() {
                                // Last words (a Bye) go out before the close;
                                // what was already in flight still arrives.
                                let mut last = l.to_server.inbox.clone();
                                for (_, b) in &l.to_server.queue {
                                    last.extend_from_slice(b);
                                }
                                last.extend_from_slice(&l.to_server.framer);
                                while let Some(b) = self.nodes[i].client.poll_transmit() {
                                    last.extend_from_slice(&b);
                                }
                                if !l.to_server.held {
                                    self.server.handle_input(self.now, l.conn, &mut last);
                                }
                                self.by_conn.remove(&l.conn);
                                self.server.handle_disconnect(self.now, l.conn);
                            }
                        }
                        Event::Completed { op, result } => {
                            self.nodes[i].completions.insert(op, result);
                        }
                        other => self.nodes[i].events.push(other),
                    }
                }
                while let Some(b) = self.nodes[i].client.poll_transmit() {
                    progress = true;
                    self.send(i, Direction::ToServer, b);
                }
            }
            if !progress {
                break;
            }
        }
        if self.check_invariants
            && let Err(e) = self.server.check_invariants()
        {
            panic!("directory invariant broken at {:?}: {e}", self.now);
        }
    }

    fn drain_server(&mut self, c: ConnId) {
        let Some(&i) = self.by_conn.get(&c) else {
            while self.server.poll_transmit(c).is_some() {}
            return;
        };
        let current = self.nodes[i].link.as_ref().is_some_and(|l| l.conn == c);
        while let Some(b) = self.server.poll_transmit(c) {
            if current {
                self.send(i, Direction::ToClient, b);
            }
        }
    }

    /// Splits a chunk into frames, asks the hook, and queues them.
    fn send(&mut self, i: usize, dir: Direction, chunk: Bytes) {
        let now = self.now;
        let latency = self.nodes[i].latency;
        let Some(link) = self.nodes[i].link.as_mut() else {
            return;
        };
        let pipe = match dir {
            Direction::ToServer => &mut link.to_server,
            Direction::ToClient => &mut link.to_client,
        };
        pipe.framer.extend_from_slice(&chunk);
        let mut frames = Vec::new();
        while let Ok(Some(n)) = check_frame(&pipe.framer, u32::MAX) {
            frames.push(pipe.framer.split_to(n).freeze());
        }
        let mut cut = false;
        for f in frames {
            let verdict = match (&mut self.hook, decode_body(f.slice(4..))) {
                (Some(h), Ok(m)) => h(i, dir, &m),
                _ => Verdict::Deliver,
            };
            let link = self.nodes[i].link.as_mut().expect("checked");
            let pipe = match dir {
                Direction::ToServer => &mut link.to_server,
                Direction::ToClient => &mut link.to_client,
            };
            // A stream: nothing overtakes what was sent before it.
            let floor = pipe.queue.back().map_or(Instant::ZERO, |(t, _)| *t);
            let at = (now + latency).max(floor);
            match verdict {
                Verdict::Deliver => pipe.queue.push_back((at, f)),
                Verdict::Delay(d) => pipe.queue.push_back((at + d, f)),
                Verdict::Duplicate => {
                    pipe.queue.push_back((at, f.clone()));
                    pipe.queue.push_back((at, f));
                }
                Verdict::DropAndCut => {
                    cut = true;
                    break;
                }
            }
        }
        if cut {
            self.cut(i);
        }
    }

    /// Breaks client `i`'s connection: whatever is in flight is lost, both
    /// sides notice.
    pub fn cut(&mut self, i: usize) {
        if let Some(l) = self.nodes[i].link.take() {
            self.by_conn.remove(&l.conn);
            self.server.handle_disconnect(self.now, l.conn);
            self.nodes[i].client.handle_disconnected(self.now);
        }
        self.flush();
    }

    /// Stops (or resumes) delivery in one direction of client `i`'s link,
    /// without breaking it: a one-way partition.
    pub fn hold(&mut self, i: usize, dir: Direction, held: bool) {
        if let Some(l) = self.nodes[i].link.as_mut() {
            match dir {
                Direction::ToServer => l.to_server.held = held,
                Direction::ToClient => l.to_client.held = held,
            }
        }
    }

    /// Whether client `i` currently has a link.
    pub fn is_linked(&self, i: usize) -> bool {
        self.nodes[i].link.is_some()
    }

    /// Kills the server (its store loses what was not synced when `crash`)
    /// and starts a new one with a new epoch. Every connection breaks, and
    /// store requests still running die with the server.
    pub fn restart_server(&mut self, crash: bool) {
        for i in 0..self.nodes.len() {
            if let Some(l) = self.nodes[i].link.take() {
                self.by_conn.remove(&l.conn);
                self.nodes[i].client.handle_disconnected(self.now);
            }
        }
        self.disk.clear();
        if crash {
            self.store.crash();
        }
        self.restarts += 1;
        // The dead server's watches die with it (its lease lives on until
        // it runs out, as etcd's would).
        if let Some(c) = self.coordination.as_mut() {
            c.forget_server();
        }
        self.server = start_server(
            &self.server_config,
            &self.store,
            seed_bytes(self.seed, 1 + self.restarts),
            self.now,
        );
        self.by_conn.clear();
        self.flush();
    }

    /// Shuts the server down gracefully (waiting at most `within` of
    /// virtual time), then starts a new one. Says whether the shutdown
    /// completed in time (if not, the server is killed as by
    /// [`Cluster::restart_server`] without a crash).
    pub fn graceful_restart(&mut self, within: Duration) -> bool {
        self.server.begin_shutdown(self.now);
        self.flush();
        let done = self.run_until(within, |c| c.server.is_shut_down());
        self.restart_server(false);
        done
    }

    /// The next moment anything happens.
    pub fn next_event_time(&self) -> Option<Instant> {
        let mut t = self.server.poll_timeout();
        if let Some(at) = self.coordination.as_ref().and_then(|c| c.next_time()) {
            t = Some(t.map_or(at, |t| t.min(at)));
        }
        if let Some(((at, _), _)) = self.disk.first_key_value() {
            t = Some(t.map_or(*at, |t| t.min(*at)));
        }
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for n in &self.nodes {
            consider(n.client.poll_timeout());
            if let Some(l) = &n.link {
                consider(l.to_server.next_time());
                consider(l.to_client.next_time());
                if l.closing && l.to_client.queue.is_empty() {
                    consider(Some(self.now));
                }
            }
        }
        t
    }

    /// Processes everything due at the next event time (at most `limit`).
    /// Returns false when nothing is left to do before `limit`.
    pub fn step(&mut self, limit: Instant) -> bool {
        let Some(t) = self.next_event_time() else {
            return false;
        };
        if t > limit {
            return false;
        }
        self.now = self.now.max(t);
        let now = self.now;
        // The disk first: what finished by now.
        while let Some(entry) = self.disk.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let req = entry.remove();
            self.run_store(req);
            self.flush();
        }
        // Input the server paused (a session waiting for its run state, a
        // reply waiting for output room) is offered again.
        for i in 0..self.nodes.len() {
            if self.nodes[i]
                .link
                .as_ref()
                .is_some_and(|l| !l.to_server.inbox.is_empty() && !l.to_server.held)
            {
                self.feed_server(i, now);
            }
        }
        // Deliveries, in client order, each direction in stream order.
        for i in 0..self.nodes.len() {
            while let Some(link) = self.nodes[i].link.as_mut() {
                let due_s = link.to_server.next_time().is_some_and(|x| x <= now);
                let due_c = link.to_client.next_time().is_some_and(|x| x <= now);
                if !due_s && !due_c {
                    if link.closing && link.to_client.queue.is_empty() {
                        let l = self.nodes[i].link.take().expect("present");
                        self.by_conn.remove(&l.conn);
                        self.server.handle_disconnect(now, l.conn);
                        self.nodes[i].client.handle_disconnected(now);
                        self.flush();
                    }
                    break;
                }
                if due_s {
                    // Everything due now arrives in one read, as TCP batches.
                    while link.to_server.next_time().is_some_and(|x| x <= now) {
                        let (_, b) = link.to_server.queue.pop_front().expect("due");
                        link.to_server.inbox.extend_from_slice(&b);
                    }
                    self.feed_server(i, now);
                }
                if due_c && let Some(link) = self.nodes[i].link.as_mut() {
                    while link.to_client.next_time().is_some_and(|x| x <= now) {
                        let (_, b) = link.to_client.queue.pop_front().expect("due");
                        link.to_client.inbox.extend_from_slice(&b);
                    }
                    let mut inbox = std::mem::take(&mut link.to_client.inbox);
                    self.nodes[i].client.handle_input(now, &mut inbox);
                    if let Some(link) = self.nodes[i].link.as_mut() {
                        link.to_client.inbox = inbox;
                    }
                }
                self.flush();
            }
        }
        self.server.handle_timeout(now);
        for n in &mut self.nodes {
            if n.client.poll_timeout().is_some_and(|x| x <= now) {
                n.client.handle_timeout(now);
            }
        }
        self.flush();
        true
    }

    /// Hands the server what arrived on client `i`'s link. The server may
    /// pause: while its output for the connection is over its limit (the
    /// harness drains output at once, so input resumes straight away), or
    /// while it waits for the disk (then the rest stays for a later step).
    fn feed_server(&mut self, i: usize, now: Instant) {
        let Some(link) = self.nodes[i].link.as_mut() else {
            return;
        };
        let conn = link.conn;
        let mut inbox = std::mem::take(&mut link.to_server.inbox);
        while self.server.handle_input(now, conn, &mut inbox) == InputStatus::Paused {
            let queued = self.server.pending_output(conn);
            self.flush();
            if queued == 0 {
                break;
            }
        }
        if let Some(link) = self.nodes[i].link.as_mut()
            && link.conn == conn
        {
            link.to_server.inbox = inbox;
        }
    }

    /// Runs until virtual time `d` from now has passed.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.step(until) {}
        self.now = self.now.max(until);
        self.server.handle_timeout(self.now);
        for n in &mut self.nodes {
            n.client.handle_timeout(self.now);
        }
        self.flush();
    }

    /// Runs until `done` holds or `within` virtual time passes; says which.
    pub fn run_until(
        &mut self,
        within: Duration,
        mut done: impl FnMut(&mut Cluster) -> bool,
    ) -> bool {
        let until = self.now + within;
        loop {
            if done(self) {
                return true;
            }
            if !self.step(until) {
                self.now = self.now.max(until);
                return done(self);
            }
        }
    }

    /// Runs until operation `op` of client `i` completes (at most `within`).
    pub fn wait(
        &mut self,
        i: usize,
        op: impl Into<OpId>,
        within: Duration,
    ) -> Option<Result<Completion, OpError>> {
        let op = op.into();
        self.flush();
        self.run_until(within, |c| c.nodes[i].completions.contains_key(&op));
        self.nodes[i].completions.remove(&op)
    }

    fn finish<T>(&mut self, i: usize, op: Result<Pending<T>, OpError>) -> Result<T, OpError> {
        let op = op?;
        self.flush();
        match self.wait(i, op.id(), Duration::from_secs(600)) {
            Some(r) => op.finish(r),
            None => panic!(
                "operation {op:?} of client {i} did not complete within 600 s of virtual time"
            ),
        }
    }

    // ---- blocking helpers for tests ----

    /// Maps and waits.
    pub fn map(
        &mut self,
        i: usize,
        path: &str,
        offset: u64,
        len: u64,
        opts: MapOptions,
    ) -> Result<MappingId, OpError> {
        let range = offset..offset.saturating_add(len);
        let op = self.nodes[i].client.map(self.now, path, range, opts);
        self.finish(i, op).map(|m| m.mapping)
    }

    /// Reads and waits.
    pub fn read(
        &mut self,
        i: usize,
        m: MappingId,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, OpError> {
        let op = self.nodes[i].client.read(self.now, m, offset, len);
        self.finish(i, op)
    }

    /// Writes and waits.
    pub fn write(
        &mut self,
        i: usize,
        m: MappingId,
        offset: u64,
        data: &[u8],
    ) -> Result<(), OpError> {
        let op = self.nodes[i]
            .client
            .write(self.now, m, offset, Bytes::copy_from_slice(data));
        self.finish(i, op)
    }

    /// Syncs and waits.
    pub fn sync(&mut self, i: usize, m: MappingId) -> Result<(), OpError> {
        let op = self.nodes[i].client.sync(self.now, m);
        self.finish(i, op)
    }

    /// Unmaps and waits.
    pub fn unmap(&mut self, i: usize, m: MappingId) -> Result<(), OpError> {
        let op = self.nodes[i].client.unmap(self.now, m);
        self.finish(i, op)
    }

    /// Closes the client and waits.
    pub fn close(&mut self, i: usize) -> Result<(), OpError> {
        let op = self.nodes[i].client.close(self.now);
        self.finish(i, op)
    }

    /// Runs an atomic operation and waits.
    pub fn atomic(
        &mut self,
        i: usize,
        m: MappingId,
        offset: u64,
        aop: crate::protocol::AtomicOp,
    ) -> Result<(u64, bool), OpError> {
        let op = self.nodes[i].client.atomic(self.now, m, offset, aop);
        self.finish(i, op)
    }

    /// Waits until every client is connected.
    pub fn settle(&mut self) {
        let ok = self.run_until(Duration::from_secs(60), |c| {
            c.nodes.iter().all(|n| n.client.is_connected())
        });
        assert!(ok, "clients did not connect within 60 s of virtual time");
    }
}
