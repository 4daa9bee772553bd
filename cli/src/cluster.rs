//! `rmmap cluster status`: who is in a cluster, and which shards each
//! member owns at which fencing epoch, as etcd records it (docs/CLUSTER.md).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use rmmap_tokio::cluster::{ClusterView, EtcdCoordinator, ShardId, ShardKey};

use crate::CliError;

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
