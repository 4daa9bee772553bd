//! The coherence directory under revocations that overlap: the server is
//! driven frame by frame by raw peers that answer invalidations and recalls
//! late, in batches and out of order, and after every step the directory's
//! invariants must hold (one owner or many sharers per page, never both).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rmmap_core::Instant;
use rmmap_core::protocol::{
    Fetch, Hello, InvalidateAck, Map, Message, PagePatch, RecallAck, ReqId, WireMappingId,
    decode_frame, fetch_flags, map_flags,
};
use rmmap_core::server::{ConnId, Server, ServerConfig, ServerEvent};
use rmmap_core::store::{MemStore, StoreRequest};

const PAGE: u32 = 512;

/// A server and the raw connections of a test, in virtual time.
struct Bench {
    server: Server,
    store: MemStore,
    now: Instant,
    peers: Vec<Peer>,
}

/// One raw client: what it received, and the request numbers it used.
struct Peer {
    conn: ConnId,
    inbox: Vec<Message>,
    next_req: u64,
}

impl Bench {
    fn new(clients: usize) -> Self {
        let store = MemStore::new();
        store.insert("f", vec![0u8; 8 * PAGE as usize]);
        let config = ServerConfig {
            page_size: PAGE,
            lease: Duration::from_secs(5),
            restart_grace: Some(Duration::ZERO),
            max_frame: 64 << 10,
            max_pages_per_request: 8,
            ..ServerConfig::default()
        };
        let server = Server::new(config, [7; 32], Instant::ZERO, None).expect("valid config");
        let mut b = Bench {
            server,
            store,
            now: Instant::ZERO,
            peers: Vec::new(),
        };
        for i in 0..clients {
            let conn = b.server.handle_connect(b.now);
            b.peers.push(Peer {
                conn,
                inbox: Vec::new(),
                next_req: 1,
            });
            b.send(
                i,
                Message::Hello(Hello {
                    version: rmmap_core::protocol::PROTOCOL_VERSION,
                    max_frame: 1 << 20,
                    client_nonce: [i as u8; 16],
                    client_name: Bytes::new(),
                    resume: None,
                }),
            );
            assert!(matches!(b.take(i).first(), Some(Message::Welcome(_))));
        }
        b
    }

    /// Feeds one frame from peer `i`, drains every output, checks invariants.
    fn send(&mut self, i: usize, msg: Message) {
        let mut buf = BytesMut::from(&msg.to_bytes()[..]);
        self.server
            .handle_input(self.now, self.peers[i].conn, &mut buf);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(ev) = self.server.poll_event() {
            let c = match ev {
                ServerEvent::Transmit(c) | ServerEvent::Close(c) => c,
                ServerEvent::Store(StoreRequest { id, op }) => {
                    let result = op.execute(&self.store);
                    self.server.handle_store_done(self.now, id, result);
                    continue;
                }
                _ => continue,
            };
            let mut out = BytesMut::new();
            while let Some(b) = self.server.poll_transmit(c) {
                out.extend_from_slice(&b);
            }
            let Some(p) = self.peers.iter_mut().find(|p| p.conn == c) else {
                continue;
            };
            while let Some(m) = decode_frame(&mut out, u32::MAX).expect("server frames decode") {
                p.inbox.push(m);
            }
        }
        if let Err(e) = self.server.check_invariants() {
            panic!("directory invariant broken: {e}");
        }
    }

    fn take(&mut self, i: usize) -> Vec<Message> {
        std::mem::take(&mut self.peers[i].inbox)
    }

    fn req(&mut self, i: usize) -> ReqId {
        let r = ReqId(self.peers[i].next_req);
        self.peers[i].next_req += 1;
        r
    }

    /// Maps the whole file read-write; the session's first mapping and handle.
    fn map_rw(&mut self, i: usize) {
        let req = self.req(i);
        self.send(
            i,
            Message::Map(Map {
                req,
                flags: map_flags::WRITE,
                offset: 0,
                len: 8 * PAGE as u64,
                path: Bytes::from_static(b"f"),
            }),
        );
        assert!(matches!(self.take(i).first(), Some(Message::Mapped(_))));
    }

    fn fetch(&mut self, i: usize, first: u64, count: u32, exclusive: bool) -> ReqId {
        let req = self.req(i);
        let flags = if exclusive { fetch_flags::EXCLUSIVE } else { 0 };
        self.send(
            i,
            Message::Fetch(Fetch {
                req,
                mapping: WireMappingId(1),
                first_page: first,
                count,
                flags,
            }),
        );
        req
    }
}

/// The revocations in a peer's inbox, in the order they came.
fn revocations(msgs: &[Message]) -> Vec<Message> {
    msgs.iter()
        .filter(|m| matches!(m, Message::Recall(_) | Message::Invalidate(_)))
        .cloned()
        .collect()
}

/// What a well-behaved client answers, given what it owned: dirty data for
/// owned pages with the first answer that covers them, nothing after.
fn answer(msg: &Message, owned: &mut Vec<u64>, fill: u8) -> Message {
    match msg {
        Message::Invalidate(i) => Message::InvalidateAck(InvalidateAck { rev: i.rev }),
        Message::Recall(r) => {
            let mut patches = Vec::new();
            for p in r.first_page..r.first_page + r.count as u64 {
                if let Some(k) = owned.iter().position(|o| *o == p) {
                    owned.remove(k);
                    patches.push(PagePatch {
                        page: p,
                        offset: 0,
                        data: Bytes::from(vec![fill; PAGE as usize]),
                    });
                }
            }
            Message::RecallAck(RecallAck {
                rev: r.rev,
                patches,
            })
        }
        other => panic!("not a revocation: {other:?}"),
    }
}

fn granted(msgs: &[Message], req: ReqId) -> Option<bool> {
    msgs.iter().find_map(|m| match m {
        Message::Pages(p) if p.req == req => Some(p.exclusive),
        _ => None,
    })
}

/// Session 2 owns pages 0..3 and 5 and answers late; session 1 asks for
/// pages 0..3 exclusively (a recall to nothing); shutdown begins and recalls
/// every owned page too (downgrades). Session 2 answers the shutdown's
/// downgrade of pages 0..3 first, then the fetch's recall, then the rest: the
/// second answer must take away the shared copy the first one left, and the
/// fetch, queued before shutdown, may not be given ownership any more.
#[test]
fn late_answers_to_overlapping_recalls_of_the_same_pages_during_shutdown() {
    for downgrade_first in [true, false] {
        let mut b = Bench::new(2);
        b.map_rw(0);
        b.map_rw(1);
        let r = b.fetch(1, 0, 3, true);
        assert_eq!(granted(&b.take(1), r), Some(true));
        let r = b.fetch(1, 5, 1, true);
        assert_eq!(granted(&b.take(1), r), Some(true));
        let wanted = b.fetch(0, 0, 3, true);
        let fetch_recall = revocations(&b.take(1));
        assert_eq!(fetch_recall.len(), 1, "{fetch_recall:?}");
        b.server.begin_shutdown(b.now);
        b.drain();
        let shutdown_recalls = revocations(&b.take(1));
        assert_eq!(shutdown_recalls.len(), 2, "{shutdown_recalls:?}");
        let mut order = vec![fetch_recall[0].clone(), shutdown_recalls[0].clone()];
        if downgrade_first {
            order.reverse();
        }
        order.push(shutdown_recalls[1].clone());
        let mut owned = vec![0, 1, 2, 5];
        for m in &order {
            let a = answer(m, &mut owned, 0xab);
            b.send(1, a);
        }
        let got = b.take(0);
        let refused = got.iter().any(|m| {
            matches!(m, Message::Error(e) if e.req == wanted
                && e.code == rmmap_core::protocol::ErrorCode::ShuttingDown)
        });
        assert!(refused, "no ownership is granted during shutdown: {got:?}");
        assert!(
            got.iter().any(|m| matches!(m, Message::Goodbye(_))),
            "shutdown completed: {got:?}"
        );
        let stored = b.store.durable_contents("f").unwrap();
        assert_eq!(
            stored[..3 * PAGE as usize],
            vec![0xab; 3 * PAGE as usize][..],
            "the recalled data is on disk"
        );
    }
}

/// The same pages revoked by operations one after another (no shutdown):
/// session 2 owns them, session 1 wants them exclusively and session 3 shared;
/// session 2 answers only after both are queued.
#[test]
fn late_answers_to_recalls_of_the_same_pages_by_queued_operations() {
    let mut b = Bench::new(3);
    for i in 0..3 {
        b.map_rw(i);
    }
    let r = b.fetch(1, 0, 4, true);
    assert_eq!(granted(&b.take(1), r), Some(true));
    let excl = b.fetch(0, 1, 2, true);
    let shared = b.fetch(2, 0, 4, false);
    let mut owned = vec![0, 1, 2, 3];
    // Answer every revocation session 2 receives, as it receives them but
    // one frame late, until nothing more comes.
    let mut pending: Vec<Message> = Vec::new();
    for _ in 0..10 {
        pending.extend(revocations(&b.take(1)));
        if let Some(m) = pending.first().cloned() {
            pending.remove(0);
            let a = answer(&m, &mut owned, 0xcd);
            b.send(1, a);
        }
        for i in [0, 2] {
            let got = b.take(i);
            for m in revocations(&got) {
                let a = answer(&m, &mut Vec::new(), 0);
                b.send(i, a);
            }
            b.peers[i].inbox.extend(got);
        }
    }
    let got0 = b.take(0);
    let got2 = b.take(2);
    assert_eq!(granted(&got0, excl), Some(true), "{got0:?}");
    assert_eq!(granted(&got2, shared), Some(false), "{got2:?}");
}
