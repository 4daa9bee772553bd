//! A client of a cluster follows `moved` (PROTOCOL.md section 9,
//! CLUSTER.md section 6), against a fake member: a loopback listener that
//! speaks just enough of the protocol to welcome a client and answer every
//! `Map` and `SetLen` as its script says, beside an ordinary server that
//! owns the files.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{TestServer, client_config, within};
use rmmap_core::protocol::{
    ErrorCode, ErrorMsg, HARD_MAX_FRAME, Message, Pong, ReqId, ResumeStatus, RevId, SessionId,
    Welcome, decode_frame,
};
use rmmap_tokio::{Access, ClusterClient, OpError, RedirectPolicy, TcpConnector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the fake member answers a `Map` or `SetLen`.
#[derive(Clone, Debug)]
enum Answer {
    Moved(String),
    Busy,
}

/// A member that owns nothing.
struct FakeMember {
    addr: String,
    /// `Map` and `SetLen` requests it has answered.
    asked: Arc<AtomicUsize>,
}

impl FakeMember {
    /// Answers the `n`th request (from 0, over every connection) with
    /// `script(n)`.
    async fn start(script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> FakeMember {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let asked = Arc::new(AtomicUsize::new(0));
        let (counter, script) = (asked.clone(), Arc::new(script));
        // Its own server run: a client tells members apart by their epochs.
        let epoch = u64::from(listener.local_addr().unwrap().port()) << 1 | 1;
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, counter.clone(), script.clone(), epoch));
            }
        });
        FakeMember { addr, asked }
    }

    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut stream: TcpStream,
    asked: Arc<AtomicUsize>,
    script: Arc<dyn Fn(usize) -> Answer + Send + Sync>,
    epoch: u64,
) {
    let mut buf = BytesMut::new();
    loop {
        let message = match decode_frame(&mut buf, HARD_MAX_FRAME) {
            Ok(Some(m)) => m,
            Ok(None) => match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            },
            Err(_) => return,
        };
        let reply = match message {
            Message::Hello(h) => Message::Welcome(Welcome {
                version: h.version,
                status: ResumeStatus::New,
                session: SessionId(1),
                token: [9; 16],
                epoch,
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
            Message::Map(m) => answer(m.req, &asked, &*script),
            Message::SetLen(s) => answer(s.req, &asked, &*script),
            Message::Bye => return,
            _ => continue,
        };
        if stream.write_all(&reply.to_bytes()).await.is_err() {
            return;
        }
    }
}

fn answer(req: ReqId, asked: &AtomicUsize, script: &dyn Fn(usize) -> Answer) -> Message {
    let (code, message) = match script(asked.fetch_add(1, Ordering::SeqCst)) {
        Answer::Moved(to) => (ErrorCode::Moved, to),
        Answer::Busy => (ErrorCode::Busy, "no member owns the shard yet".to_owned()),
    };
    Message::Error(ErrorMsg {
        req,
        code,
        fatal: false,
        message: Bytes::from(message),
    })
}

/// An address nothing listens on.
async fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

async fn connect(addrs: &[&str]) -> ClusterClient {
    ClusterClient::connect_with(
        TcpConnector,
        addrs,
        client_config(),
        RedirectPolicy::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_map_answered_moved_is_made_on_the_named_member() {
    let owner = TestServer::start(|c| c).await;
    owner.put("f.bin", b"owned elsewhere");
    let to = owner.addr.clone();
    let fake = FakeMember::start(move |_| Answer::Moved(to.clone())).await;

    let cluster = connect(&[&fake.addr]).await;
    let m = within(10, cluster.map("f.bin", 0..15, Access::ReadWrite))
        .await
        .unwrap();
    assert_eq!(&m.read_bytes(0, 15).await.unwrap()[..], b"owned elsewhere");
    m.write(0, b"OWNED").await.unwrap();
    m.sync().await.unwrap();
    assert_eq!(owner.get("f.bin"), b"OWNED elsewhere");

    // A second map goes the same way, on the connection already open.
    let again = within(10, cluster.map("f.bin", 0..5, Access::ReadOnly))
        .await
        .unwrap();
    assert_eq!(&again.read_bytes(0, 5).await.unwrap()[..], b"OWNED");
    assert_eq!(fake.asked(), 2);
    let mut connected = cluster.connected();
    connected.sort();
    let mut expected = vec![fake.addr.clone(), owner.addr.clone()];
    expected.sort();
    assert_eq!(connected, expected);
    drop((m, again));
    within(10, cluster.close()).await.unwrap();
}

/// One connection per member: a `moved` that names a member connected
/// already under another spelling of its address reaches it on that
/// connection (the same server run, told by its epoch).
#[tokio::test]
async fn a_member_named_under_another_spelling_is_reached_on_its_connection() {
    let owner = TestServer::start(|c| c).await;
    owner.put("f.bin", b"owned elsewhere");
    let port = owner.addr.rsplit(':').next().unwrap().to_owned();
    let spellings = [owner.addr.clone(), format!("localhost:{port}")];
    let fake = FakeMember::start(move |n| Answer::Moved(spellings[n.min(1)].clone())).await;
    let cluster = connect(&[&fake.addr]).await;
    let first = within(10, cluster.map("f.bin", 0..5, Access::ReadOnly))
        .await
        .unwrap();
    let second = within(10, cluster.map("f.bin", 5..10, Access::ReadOnly))
        .await
        .unwrap();
    assert_eq!(fake.asked(), 2, "both maps were sent on");
    assert!(
        first.client().same_connection(&second.client()),
        "two connections to one member"
    );
    assert_eq!(&second.read_bytes(0, 5).await.unwrap()[..], b" else");
    drop((first, second));
    within(10, cluster.close()).await.unwrap();
}

#[tokio::test]
async fn set_len_answered_moved_is_done_on_the_named_member() {
    let owner = TestServer::start(|c| c).await;
    let to = owner.addr.clone();
    let fake = FakeMember::start(move |_| Answer::Moved(to.clone())).await;

    let cluster = connect(&[&fake.addr]).await;
    let len = within(10, cluster.set_len("new.bin", 8192, true))
        .await
        .unwrap();
    assert_eq!(len, 8192);
    assert_eq!(owner.get("new.bin").len(), 8192);
    within(10, cluster.close()).await.unwrap();
}

#[tokio::test]
async fn members_answering_moved_without_end_are_reported_after_the_bound() {
    // The member names itself: ownership "in motion" forever.
    let me = Arc::new(std::sync::OnceLock::<String>::new());
    let name = me.clone();
    let fake = FakeMember::start(move |_| Answer::Moved(name.get().unwrap().clone())).await;
    me.set(fake.addr.clone()).unwrap();

    let cluster = connect(&[&fake.addr]).await;
    let e = within(10, cluster.map("f.bin", 0..1, Access::ReadOnly))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "moved", "{e}");
    let max = RedirectPolicy::default().max_redirects as usize;
    assert_eq!(fake.asked(), 1 + max);
    assert_eq!(cluster.connected(), vec![fake.addr.clone()]);
}

#[tokio::test]
async fn busy_from_a_cluster_member_is_asked_of_the_next_until_an_owner_is_known() {
    let owner = TestServer::start(|c| c).await;
    owner.put("f.bin", b"x");
    let to = owner.addr.clone();
    let fake = FakeMember::start(move |n| match n {
        0 | 1 => Answer::Busy,
        _ => Answer::Moved(to.clone()),
    })
    .await;

    // Two addresses: a cluster from the start. The fake's busy sends the
    // request to the next member (a member that let the file go may never
    // learn its owner), the owner, which serves it.
    let cluster = connect(&[&fake.addr, &owner.addr]).await;
    let m = within(10, cluster.map("f.bin", 0..1, Access::ReadOnly))
        .await
        .unwrap();
    assert_eq!(&m.read_bytes(0, 1).await.unwrap()[..], b"x");
    assert_eq!(fake.asked(), 1);
    // Listed twice, the fake is asked again after its busy, until it sends
    // the request on.
    let cluster = connect(&[&fake.addr, &fake.addr]).await;
    let m = within(10, cluster.map("f.bin", 0..1, Access::ReadOnly))
        .await
        .unwrap();
    assert_eq!(&m.read_bytes(0, 1).await.unwrap()[..], b"x");
    assert_eq!(fake.asked(), 3);
}

#[tokio::test]
async fn busy_from_the_only_address_is_reported_at_once() {
    let fake = FakeMember::start(|_| Answer::Busy).await;
    let cluster = connect(&[&fake.addr]).await;
    let e = within(10, cluster.map("f.bin", 0..1, Access::ReadOnly))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            OpError::Server {
                code: ErrorCode::Busy,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(fake.asked(), 1);
}

#[tokio::test]
async fn busy_for_longer_than_the_patience_is_reported() {
    let fake = FakeMember::start(|_| Answer::Busy).await;
    let policy = RedirectPolicy {
        busy_patience: Duration::from_millis(300),
        ..RedirectPolicy::default()
    };
    let other = closed_port().await;
    let cluster =
        ClusterClient::connect_with(TcpConnector, &[&fake.addr, &other], client_config(), policy)
            .await
            .unwrap();
    let started = std::time::Instant::now();
    let e = within(10, cluster.map("f.bin", 0..1, Access::ReadOnly))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "busy", "{e}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(fake.asked() > 2, "asked {} times", fake.asked());
}

#[tokio::test]
async fn the_first_member_that_answers_is_the_one_asked() {
    let owner = TestServer::start(|c| c).await;
    owner.put("f.bin", b"y");
    let down = closed_port().await;
    let cluster = connect(&[&down, &owner.addr]).await;
    assert_eq!(cluster.connected(), vec![owner.addr.clone()]);
    let m = within(10, cluster.map("f.bin", 0..1, Access::ReadOnly))
        .await
        .unwrap();
    assert_eq!(&m.read_bytes(0, 1).await.unwrap()[..], b"y");
}

#[tokio::test]
async fn no_member_answering_fails_the_connect() {
    let (a, b) = (closed_port().await, closed_port().await);
    let e = ClusterClient::connect(&[&a, &b], client_config())
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&b), "{e}");
    let none: [&str; 0] = [];
    assert!(
        ClusterClient::connect(&none, client_config())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_moved_to_a_member_out_of_reach_says_which() {
    let down = closed_port().await;
    let to = down.clone();
    let fake = FakeMember::start(move |_| Answer::Moved(to.clone())).await;
    let cluster = connect(&[&fake.addr]).await;
    let e = within(10, cluster.map("f.bin", 0..1, Access::ReadOnly))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "connect_failed", "{e}");
    assert!(e.to_string().contains(&down), "{e}");
}

#[tokio::test]
async fn a_member_that_went_down_is_passed_over_for_the_next() {
    let first = TestServer::start(|c| c).await;
    let second = TestServer::start(|c| c).await;
    second.put("f.bin", b"second");
    let cluster = connect(&[&first.addr, &second.addr]).await;
    assert_eq!(cluster.connected(), vec![first.addr.clone()]);
    // The member every request started at goes away.
    within(10, first.server.shutdown()).await.unwrap();
    within(10, async {
        while cluster.first().is_connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // A map goes to the next member of the list instead of waiting.
    let m = within(10, cluster.map("f.bin", 0..6, Access::ReadOnly))
        .await
        .unwrap();
    assert_eq!(&m.read_bytes(0, 6).await.unwrap()[..], b"second");
}
