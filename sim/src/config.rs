//! What one simulated run looks like.

use std::time::Duration;

/// A deliberate protocol bug to switch on (feature `bug-injection`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum InjectedBug {
    /// The server grants exclusive ownership without invalidating sharers.
    SkipInvalidation,
    /// Clients serve their cache after their lease may have run out.
    ClientIgnoresLease,
    /// The server treats a failed disk write or fsync as successful (the
    /// server before the disk became an effect): the data is dropped and its
    /// writer told nothing.
    IgnoreStoreErrors,
    /// The server answers a `Refresh` as if every carried copy matched, so
    /// a client keeps bytes of an earlier run that the restart changed.
    RefreshTrustsDigests,
    /// The server, a cluster member (`--member`), keeps serving its shards
    /// after its etcd lease is lost, beside the member that takes them.
    MemberServesAfterLeaseLoss,
}

impl InjectedBug {
    /// Every bug, with its command-line name.
    pub const ALL: [(&'static str, InjectedBug); 5] = [
        ("skip-invalidation", InjectedBug::SkipInvalidation),
        ("client-ignores-lease", InjectedBug::ClientIgnoresLease),
        ("ignore-store-errors", InjectedBug::IgnoreStoreErrors),
        ("refresh-trusts-digests", InjectedBug::RefreshTrustsDigests),
        (
            "member-serves-after-lease-loss",
            InjectedBug::MemberServesAfterLeaseLoss,
        ),
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        InjectedBug::ALL
            .iter()
            .find(|(_, b)| *b == self)
            .map(|(n, _)| *n)
            .expect("every bug is listed")
    }

    /// The bug with this command-line name.
    pub fn parse(name: &str) -> Option<Self> {
        InjectedBug::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
    }
}

/// Parameters of a run. Everything random derives from the seed given to
/// [`crate::run_seed`]; these only shape the distributions.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Clients.
    pub clients: usize,
    /// Steps of the fault phase (each issues an operation, injects a fault
    /// or advances time).
    pub steps: usize,
    /// Most operations a client has outstanding at once.
    pub max_outstanding: usize,
    /// Server page size (small pages keep runs cheap).
    pub page_size: u32,
    /// Pages of each file.
    pub files: Vec<u64>,
    /// Server lease (short, so expiry happens within runs).
    pub lease: Duration,
    /// Inject faults (cuts, partitions, delays, restarts, crashes, and the
    /// disk's faults when [`SimConfig::disk_faults`] is set too).
    pub faults: bool,
    /// Let the disk fail as well (with `faults`): slow store requests that
    /// finish out of order, a full disk, I/O errors, short writes, failing
    /// fsyncs.
    pub disk_faults: bool,
    /// Shut the server down gracefully now and then (with `faults`), often
    /// while the clients contend for one file's pages.
    pub graceful_restarts: bool,
    /// Everything pending must finish within this after faults stop.
    pub liveness_bound: Duration,
    /// Keep the text of the trace (for reports); the hash is always kept.
    pub keep_trace: bool,
    /// With `keep_trace`: print each line to stderr as it comes.
    pub echo_trace: bool,
    /// A deliberate bug.
    pub bug: Option<InjectedBug>,
    /// One operation in ten is a `wait_while` on a word (checked as a read
    /// of it). Off by default, so that every seed's run stays what it was.
    pub waits: bool,
    /// The server is a cluster member beside another (docs/CLUSTER.md):
    /// cut off from the coordinator now and then, handing shards over and
    /// taking them back. Off by default.
    pub member: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            clients: 3,
            steps: 160,
            max_outstanding: 3,
            page_size: 512,
            files: vec![3, 2],
            lease: Duration::from_millis(1500),
            faults: true,
            disk_faults: true,
            graceful_restarts: true,
            waits: false,
            member: false,
            liveness_bound: Duration::from_secs(90),
            keep_trace: false,
            echo_trace: false,
            bug: None,
        }
    }
}
