//! `rmmap cluster status`: who is in a cluster, and which shards each
//! member owns at which fencing epoch, as etcd records it (docs/CLUSTER.md);
//! and the flags of `rmmap serve --cluster`, which make the server a member.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use rmmap_tokio::cluster::{ClusterConfig, ClusterView, EtcdCoordinator, ShardId, ShardKey};

use crate::CliError;

/// `rmmap serve --cluster ...`: serve as a member of a cluster.
#[derive(Args, Debug)]
pub(crate) struct ServeClusterArgs {
    /// Serve as a member of the cluster coordinated by these etcd endpoints,
    /// comma-separated (http://HOST:PORT[,...]): only the files of the
    /// shards this member owns; the others are answered `moved` with their
    /// owner's address (docs/CLUSTER.md). Every member exports the same
    /// shared ROOT. Tokio transport only.
    #[arg(long, value_delimiter = ',', value_name = "URLS")]
    cluster: Vec<String>,
    /// With --cluster: the address clients reach this member at, as `moved`
    /// replies name it. Default: the address --listen bound.
    #[arg(long, value_name = "HOST:PORT", requires = "cluster")]
    advertise: Option<String>,
    /// With --cluster: this member's id, unique among live members and
    /// stable across its restarts. Default: the advertised address.
    #[arg(long, value_name = "ID", requires = "cluster")]
    node_id: Option<String>,
    /// With --cluster: shards the namespace is cut into; the same for
    /// every member.
    #[arg(long, default_value_t = 64)]
    shards: u32,
    /// With --cluster: the cluster's key prefix in etcd.
    #[arg(long, default_value = "/rmmap/")]
    cluster_prefix: String,
    /// With --cluster: the TTL of the member's etcd lease, in milliseconds
    /// (etcd counts whole seconds, rounded up). A member that is cut off
    /// from etcd stops serving within this; its shards move after it.
    #[arg(long, default_value_t = 5000)]
    cluster_lease_ms: u64,
    /// With --cluster: the time kept between the end of a member's serving
    /// window and the earliest moment etcd could expire its lease, in
    /// milliseconds (docs/CLUSTER.md, "The serving window").
    #[arg(long, default_value_t = 1000)]
    cluster_margin_ms: u64,
}

/// What makes a server a cluster member: its configuration and its etcd
/// connection.
pub(crate) struct Member {
    config: ClusterConfig,
    etcd: EtcdCoordinator,
}

impl ServeClusterArgs {
    /// Whether `--cluster` was given.
    pub(crate) fn requested(&self) -> bool {
        !self.cluster.is_empty()
    }

    /// The member a server bound to `bound` with client lease
    /// `client_lease` is, connected to etcd; `None` without `--cluster`.
    pub(crate) async fn member(
        &self,
        bound: SocketAddr,
        client_lease: Duration,
    ) -> Result<Option<Member>, CliError> {
        if !self.requested() {
            return Ok(None);
        }
        let advertise = match &self.advertise {
            Some(a) => a.clone(),
            None if bound.ip().is_unspecified() => {
                return Err(CliError::Cluster(format!(
                    "--listen {bound} is no address a client can reach: \
                     give --advertise HOST:PORT"
                )));
            }
            None => bound.to_string(),
        };
        let node_id = self.node_id.clone().unwrap_or_else(|| advertise.clone());
        let config = ClusterConfig {
            prefix: self.cluster_prefix.clone(),
            shards: self.shards,
            lease_ttl: Duration::from_millis(self.cluster_lease_ms),
            safety_margin: Duration::from_millis(self.cluster_margin_ms),
            client_lease,
            ..ClusterConfig::new(node_id, advertise)
        };
        config.validate().map_err(CliError::Cluster)?;
        // A request slower than a keep-alive interval is no use.
        let timeout = config
            .keepalive_interval(config.lease_ttl)
            .max(Duration::from_millis(500));
        let etcd = EtcdCoordinator::connect(&self.cluster, timeout)
            .await
            .map_err(|e| CliError::Cluster(e.to_string()))?;
        // The connection is made lazily: ask once, so that a wrong address
        // fails here rather than leaving a member that serves nothing.
        etcd.range(&config.prefix).await.map_err(|e| {
            CliError::Cluster(format!(
                "cannot reach etcd at {}: {e}",
                self.cluster.join(",")
            ))
        })?;
        Ok(Some(Member { config, etcd }))
    }
}

impl Member {
    /// Makes the server configured by `core` and `options` this member.
    pub(crate) fn apply(
        self,
        core: &mut rmmap_core::server::ServerConfig,
        options: &mut rmmap_tokio::ServeOptions,
    ) {
        tracing::info!(
            node_id = %self.config.node_id,
            advertise = %self.config.advertise,
            shards = self.config.shards,
            "joining the cluster"
        );
        core.cluster = Some(self.config);
        options.coordinator = Some(self.etcd);
    }
}

/// `rmmap cluster ...`
#[derive(Args, Debug)]
pub(crate) struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// List the members, the shards each one owns with their fencing epochs,
    /// and the shards nobody owns.
    Status(StatusArgs),
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// The etcd endpoints, comma-separated (http://HOST:PORT[,...]).
    #[arg(long, value_delimiter = ',', required = true)]
    cluster: Vec<String>,
    /// The cluster's key prefix in etcd.
    #[arg(long, default_value = "/rmmap/")]
    prefix: String,
}

pub(crate) async fn run(a: ClusterArgs) -> Result<ExitCode, CliError> {
    let ClusterCommand::Status(s) = a.command;
    let etcd = EtcdCoordinator::connect(&s.cluster, Duration::from_secs(5))
        .await
        .map_err(|e| CliError::Cluster(e.to_string()))?;
    let (revision, kvs) = etcd
        .range(&s.prefix)
        .await
        .map_err(|e| CliError::Cluster(e.to_string()))?;
    let view = ClusterView::from_range(&s.prefix, revision, &kvs);
    print!("{}", render(&s.prefix, &view));
    Ok(ExitCode::SUCCESS)
}

/// The status report of a cluster view.
fn render(prefix: &str, view: &ClusterView) -> String {
    let mut out = String::new();
    let shards: Option<u32> = view
        .config()
        .and_then(|c| c.strip_prefix("shards="))
        .and_then(|n| n.parse().ok());
    let Some(shards) = shards else {
        let _ = writeln!(
            out,
            "no rmmap cluster under {prefix} (revision {}): no {prefix}config key",
            view.revision()
        );
        return out;
    };
    let _ = writeln!(
        out,
        "cluster {prefix} at etcd revision {}: {shards} shards, {} member(s)",
        view.revision(),
        view.members().len()
    );
    let mut unowned = Vec::new();
    let mut owned: std::collections::BTreeMap<&str, Vec<(ShardId, i64)>> = Default::default();
    let all: Vec<(ShardId, ShardKey)> = (0..shards)
        .map(|s| (ShardId(s), view.shard(ShardId(s))))
        .collect();
    for (s, key) in &all {
        match key {
            ShardKey::Owned { owner, epoch, .. } => {
                owned.entry(owner).or_default().push((*s, *epoch))
            }
            ShardKey::Released { .. } => unowned.push(format!("{s} (handed over)")),
            ShardKey::Absent { .. } => unowned.push(format!("{s} (no owner)")),
            ShardKey::Unreadable { .. } => unowned.push(format!("{s} (unreadable value)")),
            _ => unowned.push(format!("{s} (?)")),
        }
    }
    for (id, m) in view.members() {
        let list = owned.remove(id.as_str()).unwrap_or_default();
        let lease = m.lease.map_or("none".to_string(), |l| format!("{:x}", l.0));
        let _ = write!(
            out,
            "member {id} at {} (lease {lease}): {} shard(s)",
            m.address,
            list.len()
        );
        for (s, epoch) in &list {
            let _ = write!(out, " {s}@{epoch}");
        }
        out.push('\n');
    }
    // Keys that name an owner whose member key is gone (its lease is ending).
    for (id, list) in owned {
        let _ = write!(out, "not a member: {id} still owns {} shard(s)", list.len());
        for (s, epoch) in &list {
            let _ = write!(out, " {s}@{epoch}");
        }
        out.push('\n');
    }
    if unowned.is_empty() {
        out.push_str("every shard has an owner\n");
    } else {
        let _ = writeln!(out, "without an owner: {}", unowned.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmmap_core::cluster::{KeyValue, LeaseId};

    fn kv(key: &str, value: &str, rev: i64, lease: Option<i64>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            mod_revision: rev,
            lease: lease.map(LeaseId),
        }
    }

    #[test]
    fn the_status_lists_members_their_shards_and_epochs_and_the_orphans() {
        let view = ClusterView::from_range(
            "/r/",
            40,
            &[
                kv("/r/config", "shards=4", 1, None),
                kv("/r/members/a", "10.0.0.1:7878", 2, Some(0xa)),
                kv("/r/members/b", "10.0.0.2:7878", 3, Some(0xb)),
                kv(
                    "/r/shards/00000",
                    "owner=a addr=10.0.0.1:7878",
                    10,
                    Some(0xa),
                ),
                kv(
                    "/r/shards/00001",
                    "owner=b addr=10.0.0.2:7878",
                    11,
                    Some(0xb),
                ),
                kv(
                    "/r/shards/00002",
                    "owner=a addr=10.0.0.1:7878",
                    12,
                    Some(0xa),
                ),
                kv("/r/shards/00003", "released", 13, None),
            ],
        );
        assert_eq!(
            render("/r/", &view),
            "cluster /r/ at etcd revision 40: 4 shards, 2 member(s)\n\
             member a at 10.0.0.1:7878 (lease a): 2 shard(s) 00000@10 00002@12\n\
             member b at 10.0.0.2:7878 (lease b): 1 shard(s) 00001@11\n\
             without an owner: 00003 (handed over)\n"
        );
    }

    #[test]
    fn an_empty_prefix_says_there_is_no_cluster() {
        let view = ClusterView::from_range("/r/", 5, &[]);
        assert!(render("/r/", &view).starts_with("no rmmap cluster under /r/"));
    }
}
