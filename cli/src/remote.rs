//! A client over either transport, for the commands that let the user pick
//! one (`--transport tokio|mio`): the same operations, awaited over Tokio,
//! blocking over mio. The commands run one operation at a time on the main
//! thread, so blocking there holds up nothing else.
//!
//! `ADDR` is one server, `host:port`, or the members of a cluster,
//! `host:port,host:port,...`: the client connects to the first that
//! answers and follows `moved` replies to the member that owns a file
//! (docs/CLUSTER.md section 6).

use std::ops::Range;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use clap::ValueEnum;
use rmmap_tokio::{MapOptions, OpError};

use crate::CliError;
use crate::secure::ClientSecurity;

/// Which adapter carries the protocol.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Transport {
    /// rmmap-tokio: async, on a Tokio runtime.
    #[default]
    Tokio,
    /// rmmap-mio: a mio event loop, no runtime.
    Mio,
}

/// The member addresses in `ADDR`: comma-separated, in order; one address
/// is a single server.
pub(crate) fn members(addr: &str) -> Vec<&str> {
    addr.split(',').collect()
}

/// A connected client (one connection per member it has talked to).
pub(crate) enum Remote {
    Tokio(rmmap_tokio::ClusterClient),
    Mio(rmmap_mio::ClusterClient),
}

/// A mapping made by a [`Remote`].
#[derive(Clone)]
pub(crate) enum RemoteMapping {
    Tokio(rmmap_tokio::Mapping),
    Mio(rmmap_mio::Mapping),
}

impl Remote {
    /// Connects to the first member of `addr` that answers (with the
    /// token and over TLS as `security` says) and completes the first
    /// handshake.
    pub(crate) async fn connect(
        transport: Transport,
        addr: &str,
        security: &ClientSecurity,
    ) -> Result<Remote, CliError> {
        let addrs = members(addr);
        Ok(match transport {
            Transport::Tokio => Remote::Tokio(security.connect_tokio(&addrs).await?),
            Transport::Mio => Remote::Mio(security.connect_mio(&addrs)?),
        })
    }

    pub(crate) async fn map_with(
        &self,
        path: &str,
        range: Range<u64>,
        opts: MapOptions,
    ) -> Result<RemoteMapping, OpError> {
        Ok(match self {
            Remote::Tokio(c) => RemoteMapping::Tokio(c.map_with(path, range, opts).await?),
            Remote::Mio(c) => RemoteMapping::Mio(c.map_with(path, range, opts)?),
        })
    }

    /// Closes the client (syncing what it wrote first, on every member),
    /// giving up after `limit`: a failed sync, a lost mapping or a server
    /// that does not answer is an error.
    pub(crate) async fn close_within(&self, limit: Duration) -> Result<(), OpError> {
        let gone = || OpError::Disconnected(limit);
        match self {
            Remote::Tokio(c) => tokio::time::timeout(limit, c.close())
                .await
                .unwrap_or_else(|_| Err(gone())),
            Remote::Mio(c) => {
                let (c, (tx, rx)) = (c.clone(), mpsc::channel());
                std::thread::spawn(move || tx.send(c.close()));
                rx.recv_timeout(limit).unwrap_or_else(|_| Err(gone()))
            }
        }
    }
}

impl RemoteMapping {
    pub(crate) async fn read_bytes(&self, offset: u64, len: u64) -> Result<Bytes, OpError> {
        match self {
            RemoteMapping::Tokio(m) => m.read_bytes(offset, len).await,
            RemoteMapping::Mio(m) => m.read_bytes(offset, len),
        }
    }

    pub(crate) async fn write_bytes(&self, offset: u64, data: Bytes) -> Result<(), OpError> {
        match self {
            RemoteMapping::Tokio(m) => m.write_bytes(offset, data).await,
            RemoteMapping::Mio(m) => m.write_bytes(offset, data),
        }
    }

    pub(crate) async fn sync(&self) -> Result<(), OpError> {
        match self {
            RemoteMapping::Tokio(m) => m.sync().await,
            RemoteMapping::Mio(m) => m.sync(),
        }
    }

    pub(crate) async fn unmap(self) -> Result<(), OpError> {
        match self {
            RemoteMapping::Tokio(m) => m.unmap().await,
            RemoteMapping::Mio(m) => m.unmap(),
        }
    }
}
