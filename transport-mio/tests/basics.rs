//! The mio server and the blocking mio client over real loopback TCP: map,
//! read, write, sync, unmap, create, set_len, atomics, backpressure, a
//! graceful shutdown that recalls dirty pages, and a refused first
//! connection. (Cross-transport behaviour is in `cli/tests/conformance.rs`.)

use std::time::Duration;

use rmmap_mio::{
    Access, AtomicOp, Client, ClientConfig, ClientEvent, ConnectError, MapOptions, Server,
    ServerConfig,
};

struct TestServer {
    server: Server,
    addr: String,
    dir: tempfile::TempDir,
}

impl TestServer {
    fn start(tweak: impl FnOnce(ServerConfig) -> ServerConfig) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let config = tweak(
            ServerConfig::new(dir.path())
                .lease(Duration::from_secs(2))
                .restart_grace(Some(Duration::ZERO)),
        );
        let server = Server::bind("127.0.0.1:0", config).unwrap();
        let addr = server.local_addr().to_string();
        TestServer { server, addr, dir }
    }

    fn client(&self) -> Client {
        Client::connect(&self.addr, ClientConfig::default()).unwrap()
    }

    fn put(&self, path: &str, data: &[u8]) {
        std::fs::write(self.dir.path().join(path), data).unwrap();
    }

    fn get(&self, path: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(path)).unwrap()
    }
}

#[test]
fn two_clients_see_each_others_writes_and_sync_reaches_the_disk() {
    let ts = TestServer::start(|c| c);
    ts.put("f", &[0u8; 3 * 4096]);
    let a = ts.client();
    let b = ts.client();
    let ma = a.map("f", 0..3 * 4096, Access::ReadWrite).unwrap();
    let mb = b.map("f", 0..3 * 4096, Access::ReadWrite).unwrap();
    assert_eq!(ma.len(), 3 * 4096);
    assert_eq!(&mb.read_bytes(4090, 10).unwrap()[..], &[0u8; 10]);
    ma.write(4090, b"helloworld").unwrap();
    assert_eq!(&mb.read_bytes(4090, 10).unwrap()[..], b"helloworld");
    mb.write(4095, b"X").unwrap();
    let mut buf = [0u8; 10];
    ma.read(4090, &mut buf).unwrap();
    assert_eq!(&buf, b"helloXorld");
    // A cache hit needs no round trip.
    assert!(ma.try_read(4090, &mut buf).unwrap());
    ma.sync().unwrap();
    assert_eq!(&ts.get("f")[4090..4100], b"helloXorld");
    ma.unmap().unwrap();
    mb.unmap().unwrap();
    a.close().unwrap();
    b.close().unwrap();
    assert!(a.map("f", 0..1, Access::ReadOnly).is_err());
    ts.server.shutdown().unwrap();
}

#[test]
fn create_set_len_and_atomics() {
    let ts = TestServer::start(|c| c);
    let c = ts.client();
    assert_eq!(c.set_len("new/dir/file", 100, true).unwrap(), 100);
    assert_eq!(ts.get("new/dir/file").len(), 100);
    let opts = MapOptions {
        access: Access::ReadWrite,
        create: true,
    };
    let m = c.map_with("made", 0..16, opts).unwrap();
    assert_eq!(m.atomic(8, AtomicOp::FetchAdd(5)).unwrap(), (0, true));
    assert_eq!(m.atomic(8, AtomicOp::FetchAdd(5)).unwrap(), (5, true));
    let cas = AtomicOp::CompareExchange {
        expected: 1,
        new: 2,
    };
    assert_eq!(m.atomic(8, cas).unwrap(), (10, false));
    assert_eq!(
        m.atomic(3, AtomicOp::Swap(1)).unwrap_err().kind(),
        "misaligned"
    );
    m.sync().unwrap();
    assert_eq!(ts.get("made")[8..16], 10u64.to_le_bytes());
    drop(m);
    c.close().unwrap();
    ts.server.shutdown().unwrap();
}

#[test]
fn a_mapping_has_the_atomic_helpers_and_server_codes_match_without_rmmap_core() {
    let ts = TestServer::start(|c| c);
    ts.put("f", &[0u8; 16]);
    let c = ts.client();
    let m = c.map("f", 0..16, Access::ReadWrite).unwrap();
    assert_eq!(m.fetch_add(8, 5).unwrap(), 0);
    assert_eq!(m.swap(8, 7).unwrap(), 5);
    assert_eq!(m.compare_exchange(8, 7, 9).unwrap(), Ok(7));
    assert_eq!(m.compare_exchange(8, 7, 1).unwrap(), Err(9));
    assert_eq!(m.read_bytes(8, 8).unwrap()[..], 9u64.to_le_bytes());
    let e = c.map("missing", 0..1, Access::ReadOnly).unwrap_err();
    assert!(
        matches!(
            e,
            rmmap_mio::OpError::Server {
                code: rmmap_mio::ErrorCode::NotFound,
                ..
            }
        ),
        "{e}"
    );
    drop(m);
    c.close().unwrap();
    ts.server.shutdown().unwrap();
}

#[test]
fn a_mapping_waits_for_another_clients_write() {
    let ts = TestServer::start(|c| c);
    ts.put("flag", &[0u8; 64]);
    let waiter = ts.client();
    let writer = ts.client();
    let w = waiter.map("flag", 0..64, Access::ReadOnly).unwrap();
    let m = writer.map("flag", 0..64, Access::ReadWrite).unwrap();
    assert_eq!(
        w.wait_while(8, 0, std::time::Duration::from_millis(50))
            .unwrap(),
        None
    );
    for round in 1..=5u64 {
        let wait = {
            let w = w.clone();
            std::thread::spawn(move || {
                w.wait_while(8, round - 1, std::time::Duration::from_secs(10))
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(5));
        m.write(8, &round.to_le_bytes()).unwrap();
        assert_eq!(wait.join().unwrap().unwrap(), Some(round));
    }
    drop((w, m));
    waiter.close().unwrap();
    writer.close().unwrap();
    ts.server.shutdown().unwrap();
}

#[test]
fn a_large_read_through_a_tiny_output_limit_pauses_and_resumes() {
    // With 64 KiB of output allowed, the server pauses this connection's
    // input again and again while read-ahead replies drain.
    let ts = TestServer::start(|mut c| {
        c.core.output_soft_limit = 64 * 1024;
        c
    });
    let len = 16usize << 20;
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    ts.put("big", &data);
    let c = ts.client();
    let other = ts.client();
    let m = c.map("big", 0..len as u64, Access::ReadOnly).unwrap();
    let o = other.map("big", 0..4096, Access::ReadOnly).unwrap();
    let mut pos = 0u64;
    while pos < len as u64 {
        let b = m.read_bytes(pos, 1 << 20).unwrap();
        assert!(
            b[..] == data[pos as usize..pos as usize + (1 << 20)],
            "at {pos}"
        );
        // Another client is served meanwhile.
        assert_eq!(o.read_bytes(0, 4).unwrap()[..], data[..4]);
        pos += 1 << 20;
    }
}

#[test]
fn a_graceful_shutdown_recalls_dirty_pages_and_says_goodbye() {
    let ts = TestServer::start(|c| c);
    ts.put("f", &[0u8; 4096]);
    let c = ts.client();
    let events = c.events();
    let m = c.map("f", 0..4096, Access::ReadWrite).unwrap();
    m.write(0, b"never synced by the client").unwrap();
    let TestServer { server, dir, .. } = ts;
    server.shutdown().unwrap();
    let on_disk = std::fs::read(dir.path().join("f")).unwrap();
    assert_eq!(&on_disk[..26], b"never synced by the client");
    let lost = events
        .recv_timeout(Duration::from_secs(10))
        .expect("an event");
    assert_eq!(lost, ClientEvent::ConnectionLost);
}

#[test]
fn the_first_connection_must_succeed() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    match Client::connect(&addr, ClientConfig::default()) {
        Err(ConnectError::Io { .. }) => {}
        other => panic!("expected a refused connection, got {other:?}"),
    }
}

#[test]
fn dropping_every_handle_closes_the_session() {
    let ts = TestServer::start(|c| c);
    ts.put("f", &[0u8; 4096]);
    let c = ts.client();
    let m = c.map("f", 0..4096, Access::ReadWrite).unwrap();
    m.write(7, b"dropped").unwrap();
    drop(c);
    drop(m);
    // The close wrote the page back; a new client reads it.
    let d = ts.client();
    let m = d.map("f", 0..4096, Access::ReadOnly).unwrap();
    assert_eq!(&m.read_bytes(7, 7).unwrap()[..], b"dropped");
}

#[test]
fn connections_beyond_the_limit_wait_to_be_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(dir.path()).restart_grace(Some(Duration::ZERO));
    let options = rmmap_mio::ServeOptions {
        max_connections: 1,
        ..Default::default()
    };
    let server = Server::bind_with("127.0.0.1:0", config, options).unwrap();
    let addr = server.local_addr().to_string();
    let a = Client::connect(&addr, ClientConfig::default()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let b_addr = addr.clone();
    std::thread::spawn(move || {
        let _ = tx.send(Client::connect(&b_addr, ClientConfig::default()).map(|_| ()));
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "a second connection was served beyond the limit"
    );
    a.close().unwrap();
    rx.recv_timeout(Duration::from_secs(10))
        .expect("accepted once the first closed")
        .unwrap();
}
