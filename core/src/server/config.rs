//! Server configuration, limits and access rights.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::path::ExportPath;
use crate::protocol::HARD_MAX_FRAME;

/// What a session may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rights {
    /// May map read-write, write, create and set lengths.
    pub write: bool,
    /// Confined to this sub-directory of the export root.
    pub scope: Option<ExportPath>,
}

impl Rights {
    /// Everything under the root, read and write.
    pub fn full() -> Self {
        Rights {
            write: true,
            scope: None,
        }
    }
}

/// One client in an [`AccessList`].
#[derive(Clone, Debug)]
pub struct ClientEntry {
    /// The shared secret (both sides hold it in a token file).
    pub secret: Vec<u8>,
    /// What the client may do.
    pub rights: Rights,
}

/// Who may connect. Without one, anyone may, with full rights (minus
/// [`ServerConfig::read_only`]). Read from its file by `rmmap-secure`; the
/// core only decides with it.
#[derive(Clone, Debug, Default)]
pub struct AccessList {
    /// Clients by name.
    pub clients: BTreeMap<String, ClientEntry>,
}

/// Everything a server can be told. `Default` gives the documented defaults.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Page size in bytes, a power of two from 512 to 1 MiB. Default 4096.
    pub page_size: u32,
    /// How long a session lives without renewal. Default 10 s.
    pub lease: Duration,
    /// After it starts, the server grants no write ownership (and runs no
    /// atomic or shrinking operation) for this long, so that clients of a
    /// previous run, which may still trust their leases and serve reads from
    /// their caches, have stopped before anyone writes. `None`: the grace
    /// the previous run recorded in the export (its lease if it crashed,
    /// what was left of its clients' leases if it shut down cleanly, none
    /// if no server ever ran there; docs/PROTOCOL.md, section 6.1). Only set
    /// it to zero when no previous server can have served this export within
    /// a lease (a fresh directory). Default `None`.
    pub restart_grace: Option<Duration>,
    /// Refuse every write and every read-write mapping. Default false.
    pub read_only: bool,
    /// Who may connect; `None` lets anyone in. Default `None`.
    pub access: Option<AccessList>,
    /// Largest frame accepted from a client after the handshake. Default 2 MiB.
    pub max_frame: u32,
    /// Most pages one fetch may ask for. Default 256.
    pub max_pages_per_request: u32,
    /// Most requests of one session in flight. Default 1024.
    pub max_inflight: u32,
    /// Most mappings per session. Default 4096.
    pub max_mappings: u32,
    /// Most sessions at once. Default 4096.
    pub max_sessions: u32,
    /// Most pages one session may hold at once. Default 256 Ki pages (1 GiB
    /// of 4 KiB pages; a client's cache holds 64 Ki by default).
    pub max_held_pages: u64,
    /// Most files the server keeps open at once. Open files are a cache:
    /// the least recently used one nobody is reading or writing is closed to
    /// make room, and opened again when it is needed. Default 4096.
    pub max_open_files: u32,
    /// Most bytes the server keeps in memory because its disk refused them
    /// (no space, I/O errors): it writes them again, serves them to readers,
    /// and once this many wait it refuses new write ownership with
    /// `no_space` instead of accepting writes it may lose. Default 64 MiB.
    pub max_unwritten_bytes: u64,
    /// Most connections still in their handshake. Default 1024.
    pub max_handshaking: u32,
    /// A connection must finish its handshake within this. Default 10 s.
    pub handshake_timeout: Duration,
    /// Stop reading a connection's input while this many bytes wait to be
    /// sent to it. Default 8 MiB.
    pub output_soft_limit: usize,
    /// Close a connection that lets this many bytes pile up. Default 64 MiB.
    pub output_hard_limit: usize,
    /// Serve as a member of a cluster coordinated by etcd
    /// (docs/CLUSTER.md): only the files of shards this member owns. The
    /// restart grace is then per shard, after a takeover, and
    /// [`ServerConfig::restart_grace`] is not used. Default `None`: a
    /// single server.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            page_size: 4096,
            lease: Duration::from_secs(10),
            restart_grace: None,
            read_only: false,
            access: None,
            max_frame: 2 << 20,
            max_pages_per_request: 256,
            max_inflight: 1024,
            max_mappings: 4096,
            max_sessions: 4096,
            max_held_pages: 1 << 18,
            max_open_files: 4096,
            max_unwritten_bytes: 64 << 20,
            max_handshaking: 1024,
            handshake_timeout: Duration::from_secs(10),
            output_soft_limit: 8 << 20,
            output_hard_limit: 64 << 20,
            cluster: None,
        }
    }
}

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid server configuration: {0}")]
pub struct ConfigError(pub String);

impl ServerConfig {
    /// Checks the values against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let e = |s: String| Err(ConfigError(s));
        if !self.page_size.is_power_of_two() || !(512..=1 << 20).contains(&self.page_size) {
            return e(format!(
                "page size {} is not a power of two from 512 to 1048576",
                self.page_size
            ));
        }
        if self.lease < Duration::from_millis(10) || self.lease > Duration::from_secs(3600) {
            return e(format!("lease {:?} is outside 10 ms ..= 1 h", self.lease));
        }
        if self.max_frame > HARD_MAX_FRAME {
            return e(format!(
                "max frame {} is over the protocol maximum {HARD_MAX_FRAME}",
                self.max_frame
            ));
        }
        if self.max_pages_per_request == 0 {
            return e("max pages per request must be at least 1".into());
        }
        // A fetch reply and a write-back of a full run must fit in a frame.
        let need = self.max_pages_per_request as u64 * (self.page_size as u64 + 16) + 4096;
        if (self.max_frame as u64) < need {
            return e(format!(
                "max frame {} cannot hold {} pages of {} bytes (needs {need})",
                self.max_frame, self.max_pages_per_request, self.page_size
            ));
        }
        if self.max_inflight == 0 || self.max_mappings == 0 || self.max_sessions == 0 {
            return e("limits must be at least 1".into());
        }
        if let Some(c) = &self.cluster {
            // A takeover waits out the clients' leases: it must know them.
            if c.client_lease < self.lease {
                return e(format!(
                    "the cluster's client lease {:?} is shorter than the server's lease {:?}",
                    c.client_lease, self.lease
                ));
            }
            c.validate().map_err(ConfigError)?;
        }
        if self.output_soft_limit > self.output_hard_limit {
            return e("output soft limit is over the hard limit".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ServerConfig::default().validate().unwrap();
    }
}
