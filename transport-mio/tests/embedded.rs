//! Two embedded clients in one mio loop owned by the test, under tokens the
//! test chose, against the mio server: commands before the handshake,
//! coherence between the two, cache hits through `try_read`, and a close
//! that ends with the socket deregistered.

use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::{Events, Poll, Token};
use rmmap_mio::{
    ClientConfig, ClientEvent, EmbeddedClient, MapOptions, OpError, Pending, Server, ServerConfig,
};

/// The test's own loop: polls, hands events and timeouts to both clients.
struct Loop {
    poll: Poll,
    events: Events,
    clients: Vec<EmbeddedClient>,
}

impl Loop {
    /// Turns the loop until client `c` completes `op`; its result.
    fn wait<T>(&mut self, c: usize, op: Pending<T>) -> Result<T, OpError> {
        let give_up = Instant::now() + Duration::from_secs(20);
        let mut done = None;
        while done.is_none() {
            assert!(
                Instant::now() < give_up,
                "op {op:?} of client {c} never completed"
            );
            let timeout = self
                .clients
                .iter()
                .filter_map(|cl| cl.timeout())
                .min()
                .map_or(Duration::from_millis(100), |t| {
                    t.min(Duration::from_millis(100))
                });
            self.poll.poll(&mut self.events, Some(timeout)).unwrap();
            for ev in self.events.iter() {
                for cl in &mut self.clients {
                    cl.handle_event(ev);
                }
            }
            for (i, cl) in self.clients.iter_mut().enumerate() {
                cl.handle_timeout();
                while let Some((o, r)) = cl.poll_completion() {
                    if i == c && o == op {
                        done = Some(r);
                    }
                }
            }
        }
        op.finish(done.unwrap())
    }
}

#[test]
fn two_embedded_clients_in_one_loop_stay_coherent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), [0u8; 8192]).unwrap();
    let config = ServerConfig::new(dir.path()).restart_grace(Some(Duration::ZERO));
    let server = Server::bind("127.0.0.1:0", config).unwrap();
    let addr = server.local_addr().to_string();
    let poll = Poll::new().unwrap();
    let clients = [Token(10), Token(20)]
        .into_iter()
        .map(|t| EmbeddedClient::new(&addr, ClientConfig::default(), poll.registry(), t).unwrap())
        .collect();
    let mut l = Loop {
        poll,
        events: Events::with_capacity(64),
        clients,
    };

    // Commands may come before the handshake.
    let op = l.clients[0]
        .map("f", 0..8192, MapOptions::read_write())
        .unwrap();
    let ma = l.wait(0, op).unwrap().mapping;
    assert!(l.clients[0].is_connected());
    assert_eq!(
        l.clients[0].poll_event(),
        Some(ClientEvent::Connected { resumed: false })
    );
    let op = l.clients[1]
        .map("f", 0..8192, MapOptions::read_write())
        .unwrap();
    let mb = l.wait(1, op).unwrap().mapping;

    for i in 0..20u64 {
        let (w, wm, r, rm) = if i % 2 == 0 {
            (0, ma, 1, mb)
        } else {
            (1, mb, 0, ma)
        };
        let at = 4090 + i % 3;
        let data = Bytes::copy_from_slice(&i.to_le_bytes());
        let op = l.clients[w].write(wm, at, data.clone()).unwrap();
        l.wait(w, op).unwrap();
        let op = l.clients[r].read(rm, at, 8).unwrap();
        assert_eq!(l.wait(r, op).unwrap(), data);
        // The reader now holds the page: a second read is a cache hit.
        let mut buf = [0u8; 8];
        assert!(l.clients[r].try_read(rm, at, &mut buf).unwrap());
        assert_eq!(buf, i.to_le_bytes());
    }

    let op = l.clients[1].sync(mb).unwrap();
    l.wait(1, op).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("f")).unwrap()[4091..4099],
        19u64.to_le_bytes()
    );
    for c in 0..2 {
        let op = l.clients[c].close().unwrap();
        l.wait(c, op).unwrap();
        assert!(!l.clients[c].is_connected());
        assert!(
            l.clients[c]
                .map("f", 0..1, MapOptions::read_only())
                .is_err()
        );
    }
    server.shutdown().unwrap();
}
