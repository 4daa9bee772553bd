//! What one network-level run looks like: the shape of the cluster, the
//! workload, and either a random fault schedule or a scripted scenario.

use std::time::Duration;

/// Which way a one-way partition drops traffic.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Dir {
    /// The server's frames to the client are dropped (replies,
    /// invalidations, recalls); the client's requests still get through.
    ToClient,
    /// The client's frames to the server are dropped.
    ToServer,
}

/// A fault the controller applies at a moment of the run (between two
/// turmoil steps). Link faults of one client replace each other: the newest
/// one holds until it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Everything between the server and the client is dropped for
    /// `duration` (turmoil has no retransmission: a connection that lost a
    /// segment is dead and must be replaced).
    Partition {
        /// The client host.
        client: usize,
        /// How long.
        duration: Duration,
    },
    /// One direction of the link drops everything for `duration`.
    OneWay {
        /// The client host.
        client: usize,
        /// The direction that drops.
        dir: Dir,
        /// How long.
        duration: Duration,
    },
    /// Everything between the server and the client is held for `duration`,
    /// then delivered at once.
    Hold {
        /// The client host.
        client: usize,
        /// How long.
        duration: Duration,
    },
    /// The link goes down for `period`, up for `period`, `times` times.
    Flap {
        /// The client host.
        client: usize,
        /// Half a cycle.
        period: Duration,
        /// Cycles.
        times: u32,
    },
    /// The link's latency becomes `latency` each way (no jitter).
    Latency {
        /// The client host.
        client: usize,
        /// The new latency.
        latency: Duration,
    },
    /// The client host crashes (with whatever dirty pages it holds) and
    /// boots again, as a new client process, after `down`. `silent`: the
    /// link is cut first, so the server sees no FIN or RST (a power loss).
    CrashClient {
        /// The client host.
        client: usize,
        /// Downtime.
        down: Duration,
        /// No goodbye on the wire.
        silent: bool,
    },
    /// The server host crashes and boots again after `down`.
    /// `lose_unsynced`: the store loses everything not synced (a power
    /// loss; also silent on the wire); otherwise only the process died.
    RestartServer {
        /// Downtime.
        down: Duration,
        /// The store loses what was not synced.
        lose_unsynced: bool,
    },
}

/// An operation a scenario issues on a client at a given moment. Written
/// values are unique, as in the random workload.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ScriptOp {
    /// Read `len` bytes at `offset` of file `file`.
    Read {
        /// File index.
        file: usize,
        /// Byte offset.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// Write `len` bytes (whole cells) at `offset` of file `file`.
    Write {
        /// File index.
        file: usize,
        /// Byte offset.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// Sync the client's mapping of file `file`.
    Sync {
        /// File index.
        file: usize,
    },
}

/// A scripted run: faults and operations at fixed moments of the fault
/// phase, optionally over the random background workload.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Short name (`--scenario NAME`).
    pub name: &'static str,
    /// What it exercises.
    pub about: &'static str,
    /// Client hosts.
    pub clients: usize,
    /// Length of the fault phase.
    pub fault_time: Duration,
    /// Also run the random workload (operations at random moments).
    pub random_ops: bool,
    /// Faults, by offset from the start of the run.
    pub faults: Vec<(Duration, Fault)>,
    /// Operations, by offset from the start of the run: `(at, client, op)`.
    pub ops: Vec<(Duration, usize, ScriptOp)>,
}

/// Where the faults come from.
#[derive(Clone, Debug)]
pub enum Plan {
    /// A random fault schedule drawn from the seed.
    Random,
    /// A scripted scenario (the seed still drives turmoil, latencies and
    /// the background workload).
    Scenario(Scenario),
}

/// Parameters of a network-level run. Everything random derives from the
/// seed given to [`crate::net::run_net_seed`]; these only shape it.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Client hosts (a scenario sets its own).
    pub clients: usize,
    /// Most operations one client has in flight at once.
    pub max_outstanding: usize,
    /// Server page size.
    pub page_size: u32,
    /// Pages of each file.
    pub files: Vec<u64>,
    /// Server lease (short, so leases run out within a run).
    pub lease: Duration,
    /// Length of the fault phase (a scenario sets its own).
    pub fault_time: Duration,
    /// Random operations per second of the fault phase, over all clients.
    pub op_rate: u32,
    /// Everything pending must finish within this once faults stop.
    pub liveness_bound: Duration,
    /// turmoil's step: every host runs this much virtual time per step.
    pub tick: Duration,
    /// Keep the trace text (the hash is always kept).
    pub keep_trace: bool,
    /// Faults: random, or a scenario.
    pub plan: Plan,
    /// Deliberately outside the model, to prove the checker can fail: from
    /// this moment the server's disk acknowledges writes without making
    /// them. `None` (the default) for every real run.
    pub lying_disk_from: Option<Duration>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            clients: 3,
            max_outstanding: 3,
            page_size: 512,
            files: vec![2, 1],
            lease: Duration::from_millis(1500),
            fault_time: Duration::from_secs(15),
            op_rate: 14,
            liveness_bound: Duration::from_secs(60),
            tick: Duration::from_millis(2),
            keep_trace: false,
            plan: Plan::Random,
            lying_disk_from: None,
        }
    }
}

impl NetConfig {
    /// The configuration of a scenario.
    pub fn scenario(s: Scenario) -> Self {
        NetConfig {
            clients: s.clients,
            fault_time: s.fault_time,
            plan: Plan::Scenario(s),
            ..NetConfig::default()
        }
    }

    /// Client hosts, as the plan says.
    pub fn client_hosts(&self) -> usize {
        match &self.plan {
            Plan::Random => self.clients,
            Plan::Scenario(s) => s.clients,
        }
    }

    /// The fault phase's length, as the plan says.
    pub fn fault_phase(&self) -> Duration {
        match &self.plan {
            Plan::Random => self.fault_time,
            Plan::Scenario(s) => s.fault_time,
        }
    }

    /// Whether random operations run during the fault phase.
    pub fn random_ops(&self) -> bool {
        match &self.plan {
            Plan::Random => true,
            Plan::Scenario(s) => s.random_ops,
        }
    }
}
