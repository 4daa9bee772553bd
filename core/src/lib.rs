//! rmmap-core: the sans-IO heart of rmmap.
//!
//! This crate holds everything rmmap decides, and nothing that touches the
//! outside world: the wire [`protocol`] (framing, messages, a total decoder),
//! the [`server`] state machine (sessions, leases, the coherence directory)
//! and the [`client`] state machine (one connection, mappings, a coherent page
//! cache, reconnection). There are no sockets, threads, clocks, random
//! numbers or disk calls here: bytes, time and store results come in as
//! arguments; bytes, events, store requests and timer deadlines go out. The Tokio and mio adapters, the simulator and the
//! fuzzers all drive it through the same small API.
//!
//! # The drive loop
//!
//! Both state machines are driven the same way, and this is the only way:
//!
//! 1. **Feed input**: bytes read from a connection (`handle_input`), a
//!    connection opening or closing, the time passing (`handle_timeout`),
//!    a store request finishing (the server's `handle_store_done`), or an
//!    application command (the client's `map`, `read`, `write`, ..., each
//!    returning a `Pending` operation that knows its result type).
//! 2. **Drain output** until there is none: `poll_event` (what to do: send,
//!    close, connect, run a store request, an operation completed),
//!    `poll_transmit` (bytes to write).
//! 3. **Wait** for more IO or until `poll_timeout`, then go to 1.
//!
//! Time is a virtual [`Instant`] the caller supplies; randomness (epochs,
//! resume tokens, nonces, reconnection jitter) comes from a seed.
//!
//! ```
//! use bytes::BytesMut;
//! use rmmap_core::client::{Client, ClientConfig, Event, MapOptions};
//! use rmmap_core::server::{Server, ServerConfig, ServerEvent};
//! use rmmap_core::store::{MemStore, Store};
//! use rmmap_core::Instant;
//!
//! let store = MemStore::new();
//! store.insert("data.bin", vec![7u8; 8192]);
//! let now = Instant::ZERO;
//! // What an earlier server of this export recorded (here: none).
//! let state = store.load_run_state().unwrap();
//! let mut server = Server::new(ServerConfig::default(), [1; 32], now, state.as_deref()).unwrap();
//! let mut client = Client::new(ClientConfig::default(), [2; 32], now);
//! let op = client.map(now, "data.bin", 0..8192, MapOptions::read_only()).unwrap();
//!
//! // A "network": the two byte streams of one connection.
//! let mut conn = None;
//! let (mut to_server, mut to_client) = (BytesMut::new(), BytesMut::new());
//! let mut mapped = None;
//! for _ in 0..10 {
//!     // Drain the client: events, then bytes.
//!     while let Some(ev) = client.poll_event() {
//!         match ev {
//!             Event::Connect => {
//!                 conn = Some(server.handle_connect(now));
//!                 client.handle_connected(now);
//!             }
//!             Event::Completed { op: done, result } if done == op => {
//!                 mapped = Some(op.finish(result));
//!             }
//!             _ => {}
//!         }
//!     }
//!     while let Some(b) = client.poll_transmit() {
//!         to_server.extend_from_slice(&b);
//!     }
//!     // Feed the server, drain it: bytes to send, and the disk (an
//!     // effect like the network: the server asks, the adapter runs it).
//!     if let Some(c) = conn {
//!         server.handle_input(now, c, &mut to_server);
//!     }
//!     while let Some(ev) = server.poll_event() {
//!         match ev {
//!             ServerEvent::Transmit(c) => {
//!                 while let Some(b) = server.poll_transmit(c) {
//!                     to_client.extend_from_slice(&b);
//!                 }
//!             }
//!             ServerEvent::Store(req) => {
//!                 let result = req.op.execute(&store);
//!                 server.handle_store_done(now, req.id, result);
//!             }
//!             _ => {}
//!         }
//!     }
//!     // Feed the client.
//!     client.handle_input(now, &mut to_client);
//! }
//! assert_eq!(mapped.unwrap().unwrap().file_len, 8192);
//! ```
//!
//! `harness::Cluster` (feature `harness`) runs one server
//! and many clients this way in virtual time, with hooks to delay, drop,
//! duplicate and cut.
//!
//! # Guarantees
//!
//! Per-page linearizability of reads and writes across all clients, durability
//! of every write completed before `sync` returns, exactly-once application
//! of requests across reconnections, and no silent loss: `docs/CONSISTENCY.md`
//! states them and why they hold.
#![forbid(unsafe_code)]

pub mod auth;
pub mod client;
pub mod cluster;
#[cfg(fuzzing)]
pub mod fuzzing;
#[cfg(any(test, feature = "harness"))]
pub mod harness;
pub mod path;
pub mod protocol;
pub mod server;
pub mod store;
pub mod time;

pub use time::Instant;
