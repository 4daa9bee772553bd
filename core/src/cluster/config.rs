//! How a member takes part in a cluster: its identity, the key prefix, the
//! shard count, the lease and the timing bounds the safety argument rests on
//! (docs/CLUSTER.md, "The serving window").

use std::time::Duration;

/// The parameters of one member's ownership machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This member's id, unique among live members (`--node-id`).
    pub node_id: String,
    /// The address clients reach this member at (`--advertise`), as put in
    /// `moved` replies.
    pub advertise: String,
    /// The key prefix of the cluster in etcd, ending in `/`.
    pub prefix: String,
    /// Shards the namespace is cut into; the same for every member.
    pub shards: u32,
    /// The TTL asked for the member's etcd lease.
    pub lease_ttl: Duration,
    /// The clock-drift bound, in parts per million: over any interval, two
    /// clocks of the cluster (members', etcd's) measure elapsed times that
    /// differ by at most this fraction.
    pub drift_ppm: u32,
    /// Time kept between the end of the serving window and the earliest
    /// moment etcd could expire the lease: covers the server acting on the
    /// window's end and storage writes in flight.
    pub safety_margin: Duration,
    /// The servers' client lease (`lease_ms`): the restart grace after a
    /// takeover is this, inflated by the drift, plus the margin.
    pub client_lease: Duration,
    /// Wait before a failed request is tried again.
    pub retry_interval: Duration,
}

impl ClusterConfig {
    /// A configuration with the defaults of docs/CLUSTER.md for a member.
    pub fn new(node_id: impl Into<String>, advertise: impl Into<String>) -> Self {
        ClusterConfig {
            node_id: node_id.into(),
            advertise: advertise.into(),
            prefix: "/rmmap/".into(),
            shards: 64,
            lease_ttl: Duration::from_secs(5),
            drift_ppm: 10_000,
            safety_margin: Duration::from_secs(1),
            client_lease: Duration::from_secs(10),
            retry_interval: Duration::from_millis(500),
        }
    }

    /// How often the lease is kept alive: a third of its TTL.
    pub fn keepalive_interval(&self, ttl: Duration) -> Duration {
        ttl / 3
    }

    /// How long after sending a successful keep-alive (or grant) with TTL
    /// `ttl` this member may serve: `ttl·(1 − ρ) − margin`.
    pub fn serving_window(&self, ttl: Duration) -> Duration {
        shrink(ttl, self.drift_ppm).saturating_sub(self.safety_margin)
    }

    /// The restart grace after a takeover: `client_lease·(1 + ρ) + margin`.
    pub fn takeover_grace(&self) -> Duration {
        grow(self.client_lease, self.drift_ppm) + self.safety_margin
    }

    /// Checks what the safety argument needs of the numbers.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_id.is_empty() || self.node_id.contains(['/', ' ', '=']) {
            return Err(format!(
                "node id {:?} must be non-empty, without '/', ' ' or '='",
                self.node_id
            ));
        }
        if self.advertise.is_empty() || self.advertise.contains(' ') {
            return Err(format!(
                "advertised address {:?} must be non-empty, without spaces",
                self.advertise
            ));
        }
        if !self.prefix.ends_with('/') {
            return Err(format!("key prefix {:?} must end in '/'", self.prefix));
        }
        if self.shards == 0 || self.shards > 99_999 {
            return Err(format!("{} shards: between 1 and 99999", self.shards));
        }
        if self.drift_ppm >= 100_000 {
            return Err(format!(
                "a drift bound of {} ppm (10% or more) leaves no usable window",
                self.drift_ppm
            ));
        }
        let interval = self.keepalive_interval(self.lease_ttl);
        if self.serving_window(self.lease_ttl) <= interval {
            return Err(format!(
                "a lease TTL of {:?} with a margin of {:?} leaves a serving window of {:?}, \
                 not longer than the keep-alive interval {:?}: raise the TTL or lower the margin",
                self.lease_ttl,
                self.safety_margin,
                self.serving_window(self.lease_ttl),
                interval
            ));
        }
        Ok(())
    }
}

/// `d·(1 − ppm/10⁶)`, rounded down.
fn shrink(d: Duration, ppm: u32) -> Duration {
    let n = d.as_nanos();
    Duration::from_nanos(u64::try_from(n - n * u128::from(ppm) / 1_000_000).unwrap_or(u64::MAX))
}

/// `d·(1 + ppm/10⁶)`, rounded up.
fn grow(d: Duration, ppm: u32) -> Duration {
    let n = d.as_nanos();
    let extra = (n * u128::from(ppm)).div_ceil(1_000_000);
    Duration::from_nanos(u64::try_from(n + extra).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_of_the_defaults_is_the_documented_arithmetic() {
        let c = ClusterConfig::new("a", "127.0.0.1:1");
        // 5 s · (1 − 1%) − 1 s = 3.95 s; grace 10 s · 1.01 + 1 s = 11.1 s.
        assert_eq!(c.serving_window(c.lease_ttl), Duration::from_millis(3950));
        assert_eq!(c.takeover_grace(), Duration::from_millis(11_100));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn a_margin_that_eats_the_window_is_refused() {
        let c = ClusterConfig {
            safety_margin: Duration::from_secs(4),
            ..ClusterConfig::new("a", "127.0.0.1:1")
        };
        assert!(c.validate().unwrap_err().contains("serving window"));
    }
}
