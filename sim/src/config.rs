//! What one simulated run looks like.

use std::time::Duration;

/// A deliberate protocol bug to switch on (feature `bug-injection`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum InjectedBug {
    /// The server grants exclusive ownership without invalidating sharers.
    SkipInvalidation,
    /// Clients serve their cache after their lease may have run out.
    ClientIgnoresLease,
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
    /// Inject faults (cuts, partitions, delays, restarts, crashes).
    pub faults: bool,
    /// Everything pending must finish within this after faults stop.
    pub liveness_bound: Duration,
    /// Keep the text of the trace (for reports); the hash is always kept.
    pub keep_trace: bool,
    /// A deliberate bug.
    pub bug: Option<InjectedBug>,
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
            liveness_bound: Duration::from_secs(90),
            keep_trace: false,
            bug: None,
        }
    }
}
