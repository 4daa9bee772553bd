//! rmmap over Tokio: a client library and a server, thin adapters over
//! [`rmmap_core`].
//!
//! * [`Client::connect`] opens one connection that carries every mapping;
//!   [`Client::map`] returns a [`Mapping`] to read, write and sync. Cache
//!   hits are served on the caller's thread; everything else goes through a
//!   background driver task that runs the core's drive loop. Reconnection and
//!   session resumption are automatic.
//! * [`ClusterClient::connect`] takes the addresses of a cluster's members
//!   and keeps one [`Client`] per member, sending each `Map` on to the
//!   member that owns the file (docs/CLUSTER.md).
//! * [`Server::bind`] exports a directory ([`ServerConfig`]) until a
//!   graceful [`Server::shutdown`].
//! * On Linux, [`Client::map_memory`] maps a range into the address space
//!   as a [`MemoryMapping`], read and written with loads and stores (see
//!   [`memory`]).
//! * Sockets are pluggable ([`Connector`], [`Listener`]) and only
//!   `tokio::time` is read, so the same code runs over a simulated network.
//! * With feature `cluster`, the module `cluster` drives the shard-ownership
//!   machine of a cluster member against etcd (docs/CLUSTER.md).
//! * TLS ([`tls`]) wraps any of them: [`ServeOptions::tls`] on the server,
//!   [`TlsConnector`] on the client; credentials ([`Token`]) go in the
//!   [`ClientConfig`].
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use rmmap_tokio::{Access, Client, ClientConfig, Server, ServerConfig};
//!
//! let server = Server::bind("127.0.0.1:0", ServerConfig::new("/srv/export")).await?;
//! let addr = server.local_addr().to_string();
//! let client = Client::connect(&addr, ClientConfig::default()).await?;
//! let m = client.map("data.bin", 0..8192, Access::ReadWrite).await?;
//! m.write(100, b"hello").await?;
//! let mut buf = [0u8; 5];
//! m.read(100, &mut buf).await?;
//! m.sync().await?;
//! client.close().await?;
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

mod atomics;
mod client;
mod clock;
#[cfg(feature = "cluster")]
pub mod cluster;
#[cfg(target_os = "linux")]
pub mod memory;
mod net;
mod server;
pub mod tls;

pub use client::{Access, Client, ClientConfig, ClientEvent, ClusterClient, ConnectError, Mapping};
#[cfg(target_os = "linux")]
pub use memory::{FaultMode, MemoryError, MemoryMapping, memory_support};
pub use net::{Connector, Listener, TcpConnector};
pub use rmmap_core::client::{
    LossCause, LostWrites, MapOptions, MappingId, OpError, RedirectPolicy, SessionLossReason,
};
pub use rmmap_core::protocol::{AtomicOp, ErrorCode};
pub use rmmap_secure::{ClientTls, ServerTls, Token};
pub use rmmap_store::ServerConfig;
pub use server::{ServeError, ServeOptions, Server};
pub use tls::{TlsConnector, TlsListener};

/// The README's Rust examples compile as part of the doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
