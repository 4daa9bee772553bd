//! A regression check for the core, driven the way TCP delivers bytes: when
//! several frames reach a client in one `handle_input` call, operations
//! woken by one frame must still make progress. (Once, a page granted and
//! recalled in the same batch was never used, and two clients passed it
//! back and forth for ever; the Tokio driver feeds the core whole reads.)

use bytes::{Bytes, BytesMut};
use rmmap_core::Instant;
use rmmap_core::client::{Client, ClientConfig, Completion, Event, MapOptions, MappingId, OpId};
use rmmap_core::server::{ConnId, Server, ServerConfig, ServerEvent};
use rmmap_core::store::MemStore;

struct Peer {
    client: Client,
    conn: Option<ConnId>,
    to_server: BytesMut,
    to_client: BytesMut,
    done: Vec<(OpId, Completion)>,
}

/// Moves every byte in both directions, whole batches at once, until quiet
/// (or for at most 10,000 rounds: a livelock never goes quiet).
fn exchange(server: &mut Server, store: &MemStore, peers: &mut [Peer], clock: &mut Instant) {
    for _ in 0..10_000 {
        // 100 µs per round trip; timers fire as they come due.
        *clock += std::time::Duration::from_micros(100);
        let now = *clock;
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }
        for p in peers.iter_mut() {
            if p.client.poll_timeout().is_some_and(|t| t <= now) {
                p.client.handle_timeout(now);
            }
        }
        let mut moved = false;
        for p in peers.iter_mut() {
            while let Some(ev) = p.client.poll_event() {
                match ev {
                    Event::Connect => {
                        p.conn = Some(server.handle_connect(now));
                        p.client.handle_connected(now);
                    }
                    Event::Completed { op, result } => {
                        p.done.push((op, result.expect("op failed")))
                    }
                    _ => {}
                }
            }
            while let Some(b) = p.client.poll_transmit() {
                p.to_server.extend_from_slice(&b);
            }
        }
        // Interleave the clients' batches at the server, as a real network might.
        for p in peers.iter_mut() {
            if let Some(c) = p.conn
                && !p.to_server.is_empty()
            {
                moved = true;
                server.handle_input(now, c, &mut p.to_server);
            }
        }
        while let Some(ev) = server.poll_event() {
            match ev {
                ServerEvent::Transmit(c) => {
                    let p = peers
                        .iter_mut()
                        .find(|p| p.conn == Some(c))
                        .expect("known conn");
                    while let Some(b) = server.poll_transmit(c) {
                        p.to_client.extend_from_slice(&b);
                    }
                }
                ServerEvent::Store(req) => {
                    let result = req.op.execute(store);
                    server.handle_store_done(now, req.id, result);
                }
                _ => {}
            }
        }
        for p in peers.iter_mut() {
            if !p.to_client.is_empty() {
                moved = true;
                let mut batch = std::mem::take(&mut p.to_client);
                p.client.handle_input(now, &mut batch);
            }
        }
        if !moved
            && server
                .poll_timeout()
                .is_none_or(|t| t > now + std::time::Duration::from_secs(1))
        {
            return;
        }
    }
}

#[test]
fn contended_writes_progress_when_frames_arrive_in_batches() {
    let store = MemStore::new();
    store.insert("f", vec![0u8; 4096]);
    let config = ServerConfig {
        restart_grace: Some(std::time::Duration::ZERO),
        ..ServerConfig::default()
    };
    let mut now = Instant::from_nanos(1);
    let mut server = Server::new(config, [1; 32], now, None).unwrap();
    let mut peers: Vec<Peer> = (0..2u8)
        .map(|i| Peer {
            client: Client::new(ClientConfig::default(), [i + 2; 32], now),
            conn: None,
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            done: Vec::new(),
        })
        .collect();
    let ops: Vec<OpId> = peers
        .iter_mut()
        .map(|p| {
            p.client
                .map(now, "f", 0..4096, MapOptions::read_write())
                .unwrap()
                .id()
        })
        .collect();
    exchange(&mut server, &store, &mut peers, &mut now);
    let maps: Vec<MappingId> = peers
        .iter()
        .zip(&ops)
        .map(|(p, op)| match p.done.iter().find(|(o, _)| o == op) {
            Some((_, Completion::Mapped { mapping, .. })) => *mapping,
            other => panic!("map: {other:?}"),
        })
        .collect();
    // Both clients write the same page at the same moments, 50 times each.
    let mut written = 0;
    for round in 0..50u64 {
        let mut pending = Vec::new();
        for (i, p) in peers.iter_mut().enumerate() {
            let data = Bytes::copy_from_slice(&(round * 2 + i as u64).to_le_bytes());
            pending.push(p.client.write(now, maps[i], 8 * i as u64, data).unwrap());
        }
        exchange(&mut server, &store, &mut peers, &mut now);
        for (i, op) in pending.iter().enumerate() {
            assert!(
                peers[i].done.iter().any(|(o, _)| o == op),
                "round {round}: client {i}'s write never completed (10,000 exchanges: the clients pass the page back and forth)"
            );
            written += 1;
        }
    }
    assert_eq!(written, 100);
}
