//! rmmap over mio: a server event loop, a blocking client, and a client to
//! embed in a mio loop you own. Thin adapters over [`rmmap_core`], with no
//! async runtime anywhere.
//!
//! * [`Server::bind`] exports a directory ([`ServerConfig`]) from one
//!   [`ServerLoop`] on one thread: the listener, every connection and the
//!   core share one `mio::Poll`. [`ShutdownHandle`] starts a graceful
//!   shutdown from any thread.
//! * [`Client::connect`] opens one connection that carries every mapping;
//!   [`Client::map`] returns a [`Mapping`] to read, write and sync, with
//!   blocking calls usable from any number of plain threads. Cache hits are
//!   served on the caller's thread; everything else goes through one
//!   background IO thread. Reconnection (with backoff) and session
//!   resumption are automatic. [`ClusterClient`] takes the addresses of a
//!   cluster's members, keeps one [`Client`] per member and sends each
//!   `Map` on to the member that owns the file (docs/CLUSTER.md).
//! * [`EmbeddedClient`] is the same client without the thread: its socket is
//!   registered in your `mio::Poll` under your token; you hand it events and
//!   timeouts and poll its completions. The blocking [`Client`] is built on
//!   the same link code, so both behave alike.
//! * TLS (rustls, driven over the same non-blocking sockets): the server's
//!   [`ServeOptions::tls`], [`Client::connect_tls`],
//!   [`EmbeddedClient::with_tls`]. Credentials ([`Token`]) go in the
//!   [`ClientConfig`].
//!
//! Time is the operating system's monotonic clock, handed to the core as
//! nanoseconds since the moment each client or server started.
//!
//! ```no_run
//! use rmmap_mio::{Access, Client, ClientConfig, Server, ServerConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::bind("127.0.0.1:0", ServerConfig::new("/srv/export"))?;
//! let addr = server.local_addr().to_string();
//! let client = Client::connect(&addr, ClientConfig::default())?;
//! let m = client.map("data.bin", 0..8192, Access::ReadWrite)?;
//! m.write(100, b"hello")?;
//! let mut buf = [0u8; 5];
//! m.read(100, &mut buf)?;
//! m.sync()?;
//! client.close()?;
//! server.shutdown()?;
//! # Ok(()) }
//! ```
//!
//! # When to choose which transport
//!
//! Both transports speak the same protocol with the same guarantees, over
//! the same core, configuration ([`rmmap_store::ServerConfig`]) and file
//! store; any client works with any server (the conformance suite in
//! `cli/tests/conformance.rs` runs every pairing).
//!
//! * **rmmap-tokio** when the program already runs a Tokio runtime or wants
//!   `async`/`await`: many tasks share one client, and its sockets are
//!   pluggable (the turmoil simulation runs on them).
//! * **rmmap-mio [`Client`]** for plain threads and no async runtime: the
//!   same operations as blocking calls, one background IO thread per
//!   client, cache hits served on the calling thread. It pulls in mio
//!   instead of Tokio.
//! * **rmmap-mio [`EmbeddedClient`]** when you own the event loop (a game
//!   server, an embedded daemon, an existing mio or epoll loop): no thread
//!   at all; register it under your token, hand it events and timeouts,
//!   poll its completions.
//! * **rmmap-mio [`Server`]** for a server without a runtime: one thread
//!   runs one event loop over the listener, every connection and the core
//!   (and so the blocking file IO). [`ServerLoop::run`] puts that loop on a
//!   thread of your choosing. The Tokio server instead spreads socket IO
//!   over the runtime's workers and keeps the core on a thread of its own.

mod atomics;
mod client;
mod clock;
mod embedded;
mod link;
mod server;
mod wire;

pub use client::{Access, Client, ClusterClient, Mapping};
pub use embedded::EmbeddedClient;
pub use rmmap_core::client::{
    ClientConfig, ClientEvent, Completion, ConnectError, LossCause, LostWrites, MapOptions, Mapped,
    MappingId, OpError, OpId, Pending, RedirectPolicy, SessionLossReason,
};
pub use rmmap_core::protocol::{AtomicOp, ErrorCode};
pub use rmmap_secure::{ClientTls, ServerTls, Token};
pub use rmmap_store::ServerConfig;
pub use server::{ServeError, ServeOptions, Server, ServerLoop, ShutdownHandle};
