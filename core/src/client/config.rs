//! Client configuration.

use std::time::Duration;

/// Everything a client can be told. `Default` gives the documented defaults.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The client's name in the server's access list (with a secret).
    pub name: String,
    /// The shared secret, when the server authenticates clients.
    pub secret: Option<Vec<u8>>,
    /// Largest frame accepted from the server. Default 4 MiB.
    pub max_frame: u32,
    /// Most pages kept in the cache; clean pages beyond it are released to
    /// the server, dirty ones written back first. Default 16384 (64 MiB of
    /// 4 KiB pages): a bigger cache made streaming slower on the 2-core
    /// benchmark machine (fresh memory costs page faults), see
    /// docs/BENCHMARKS.md.
    pub max_cached_pages: usize,
    /// Pages asked for ahead of a sequential reader or writer at first.
    /// Default 1024. The window then grows by itself while the stream waits
    /// on pages already on their way, up to half the cache, and shrinks
    /// when the cache is full (see `window.rs` in the core): no tuning is
    /// needed for long round trips.
    pub readahead_pages: u32,
    /// The client stops trusting its cache this long before its lease could
    /// have run out at the server, to cover clock-rate differences. Default:
    /// a tenth of the lease.
    pub lease_margin: Option<Duration>,
    /// A connection is declared dead when a ping gets no answer for this
    /// long. Default: half the lease.
    pub pong_timeout: Option<Duration>,
    /// First reconnection delay (doubles per failed attempt, with jitter).
    /// Default 50 ms.
    pub reconnect_initial: Duration,
    /// Longest reconnection delay. Default 5 s.
    pub reconnect_max: Duration,
    /// Connecting plus the handshake must finish within this. Default 10 s.
    pub handshake_timeout: Duration,
    /// Operations fail with `Disconnected` once the client has been
    /// disconnected this long (it keeps trying to reconnect). Default 30 s;
    /// `None` waits forever.
    pub give_up_after: Option<Duration>,
    /// A member of a cluster (the client was given several): operations
    /// other than a memory mapping's faults fail with `Disconnected` after
    /// this long disconnected (at most `give_up_after`), for the cluster
    /// client to ask the other members where the file lives; faults wait
    /// `give_up_after`, as they cannot be sent elsewhere. Default `None`
    /// (one server: everything waits `give_up_after`).
    pub member_patience: Option<Duration>,
    /// Most application operations pending at once. Default 4096.
    pub max_pending_ops: usize,
    /// Most requests in flight (the server's limit applies too). Default 256.
    pub max_inflight: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            name: String::new(),
            secret: None,
            max_frame: 4 << 20,
            max_cached_pages: 16384,
            readahead_pages: 1024,
            lease_margin: None,
            pong_timeout: None,
            reconnect_initial: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            give_up_after: Some(Duration::from_secs(30)),
            member_patience: None,
            max_pending_ops: 4096,
            max_inflight: 256,
        }
    }
}
