//! What a member knows of the cluster's keys in etcd: the config, the live
//! members and the owner of each shard, as last read or watched. The view
//! decides nothing about safety (a member serves only what its own lease and
//! compare-and-swap gave it); it says where a shard should live and where it
//! does live.

use std::collections::BTreeMap;

use super::coordinator::{KeyValue, LeaseId, WatchEvent};
use super::placement::ShardId;

/// The value of a shard key handed over cleanly.
pub const RELEASED: &str = "released";

/// A live member as its key says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberEntry {
    /// Its advertised address.
    pub address: String,
    /// Its lease.
    pub lease: Option<LeaseId>,
    /// The revision of its key.
    pub mod_revision: i64,
}

/// The state of one shard key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardKey {
    /// No key (never owned, or deleted: maybe with a dead owner's lease) as
    /// of `revision` (0: never seen).
    Absent {
        /// The revision of the deletion, or of the snapshot.
        revision: i64,
    },
    /// Owned.
    Owned {
        /// The owner's id.
        owner: String,
        /// The owner's advertised address.
        address: String,
        /// The owner's lease.
        lease: Option<LeaseId>,
        /// The fencing epoch: the key's revision.
        epoch: i64,
    },
    /// Handed over cleanly at `revision`.
    Released {
        /// The key's revision.
        revision: i64,
    },
    /// A value this version cannot read.
    Unreadable {
        /// The key's revision.
        revision: i64,
    },
}

impl ShardKey {
    /// The revision of the key's last change seen.
    pub fn revision(&self) -> i64 {
        match self {
            ShardKey::Absent { revision }
            | ShardKey::Released { revision }
            | ShardKey::Unreadable { revision } => *revision,
            ShardKey::Owned { epoch, .. } => *epoch,
        }
    }
}

/// The keys of one cluster, by meaning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    prefix: String,
    /// `P/config`'s value, if it exists.
    config: Option<String>,
    members: BTreeMap<String, MemberEntry>,
    shards: BTreeMap<ShardId, ShardKey>,
    revision: i64,
}

impl ClusterView {
    /// An empty view of the cluster under `prefix`.
    pub fn new(prefix: &str) -> Self {
        ClusterView {
            prefix: prefix.to_owned(),
            ..ClusterView::default()
        }
    }

    /// The view of a range read of the prefix at `revision`.
    pub fn from_range(prefix: &str, revision: i64, kvs: &[KeyValue]) -> Self {
        let mut v = ClusterView::new(prefix);
        v.revision = revision;
        for kv in kvs {
            v.apply_put(kv);
        }
        v
    }

    /// Applies watched changes.
    pub fn apply(&mut self, events: &[WatchEvent]) {
        for e in events {
            match e {
                WatchEvent::Put(kv) => {
                    self.revision = self.revision.max(kv.mod_revision);
                    self.apply_put(kv);
                }
                WatchEvent::Delete { key, revision } => {
                    self.revision = self.revision.max(*revision);
                    match self.classify(key) {
                        Some(KeyKind::Config) => self.config = None,
                        Some(KeyKind::Member(id)) => {
                            self.members.remove(&id);
                        }
                        Some(KeyKind::Shard(s)) => {
                            self.shards.insert(
                                s,
                                ShardKey::Absent {
                                    revision: *revision,
                                },
                            );
                        }
                        None => {}
                    }
                }
            }
        }
    }

    fn apply_put(&mut self, kv: &KeyValue) {
        match self.classify(&kv.key) {
            Some(KeyKind::Config) => self.config = Some(kv.value.clone()),
            Some(KeyKind::Member(id)) => {
                self.members.insert(
                    id,
                    MemberEntry {
                        address: kv.value.clone(),
                        lease: kv.lease,
                        mod_revision: kv.mod_revision,
                    },
                );
            }
            Some(KeyKind::Shard(s)) => {
                self.shards.insert(s, parse_shard_value(kv));
            }
            None => {}
        }
    }

    fn classify(&self, key: &str) -> Option<KeyKind> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        if rest == "config" {
            return Some(KeyKind::Config);
        }
        if let Some(id) = rest.strip_prefix("members/") {
            return (!id.is_empty()).then(|| KeyKind::Member(id.to_owned()));
        }
        let n = rest.strip_prefix("shards/")?;
        (n.len() == 5 && n.bytes().all(|b| b.is_ascii_digit()))
            .then(|| n.parse().ok().map(|n: u32| KeyKind::Shard(ShardId(n))))
            .flatten()
    }

    /// The revision the view is current to.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// `P/config`'s value.
    pub fn config(&self) -> Option<&str> {
        self.config.as_deref()
    }

    /// Live members by id.
    pub fn members(&self) -> &BTreeMap<String, MemberEntry> {
        &self.members
    }

    /// The state of a shard's key. A key never seen is absent as of the
    /// view's revision (the view holds every change up to it).
    pub fn shard(&self, s: ShardId) -> ShardKey {
        self.shards.get(&s).cloned().unwrap_or(ShardKey::Absent {
            revision: self.revision,
        })
    }

    /// Every shard key seen.
    pub fn shards(&self) -> &BTreeMap<ShardId, ShardKey> {
        &self.shards
    }
}

enum KeyKind {
    Config,
    Member(String),
    Shard(ShardId),
}

/// The value written for an owned shard.
pub(crate) fn owned_value(owner: &str, address: &str) -> String {
    format!("owner={owner} addr={address}")
}

/// The value written in `P/config`.
pub(crate) fn config_value(shards: u32) -> String {
    format!("shards={shards}")
}

/// The key of a shard.
pub fn shard_key(prefix: &str, s: ShardId) -> String {
    format!("{prefix}shards/{:05}", s.0)
}

/// The key of a member.
pub fn member_key(prefix: &str, id: &str) -> String {
    format!("{prefix}members/{id}")
}

/// The config key.
pub fn config_key(prefix: &str) -> String {
    format!("{prefix}config")
}

fn parse_shard_value(kv: &KeyValue) -> ShardKey {
    if kv.value == RELEASED {
        return ShardKey::Released {
            revision: kv.mod_revision,
        };
    }
    let mut owner = None;
    let mut address = None;
    for field in kv.value.split(' ') {
        match field.split_once('=') {
            Some(("owner", v)) if !v.is_empty() => owner = Some(v.to_owned()),
            Some(("addr", v)) if !v.is_empty() => address = Some(v.to_owned()),
            _ => {}
        }
    }
    match (owner, address) {
        (Some(owner), Some(address)) => ShardKey::Owned {
            owner,
            address,
            lease: kv.lease,
            epoch: kv.mod_revision,
        },
        _ => ShardKey::Unreadable {
            revision: kv.mod_revision,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            mod_revision: rev,
            lease: Some(LeaseId(7)),
        }
    }

    #[test]
    fn keys_are_read_by_meaning_and_foreign_keys_ignored() {
        let v = ClusterView::from_range(
            "/r/",
            9,
            &[
                kv("/r/config", "shards=8", 1),
                kv("/r/members/a", "10.0.0.1:7878", 2),
                kv("/r/shards/00003", "owner=a addr=10.0.0.1:7878", 5),
                kv("/r/shards/00004", RELEASED, 6),
                kv("/r/shards/5", "owner=a addr=x", 6),
                kv("/r/shards/00006", "garbage", 7),
                kv("/other/members/b", "x", 8),
            ],
        );
        assert_eq!(v.config(), Some("shards=8"));
        assert_eq!(v.members().len(), 1);
        assert!(
            matches!(v.shard(ShardId(3)), ShardKey::Owned { epoch: 5, ref owner, .. } if owner == "a")
        );
        assert_eq!(v.shard(ShardId(4)), ShardKey::Released { revision: 6 });
        assert_eq!(v.shard(ShardId(5)), ShardKey::Absent { revision: 9 });
        assert_eq!(v.shard(ShardId(6)), ShardKey::Unreadable { revision: 7 });
    }

    #[test]
    fn a_deletion_leaves_the_shard_absent_at_its_revision() {
        let mut v =
            ClusterView::from_range("/r/", 5, &[kv("/r/shards/00001", "owner=a addr=h:1", 5)]);
        v.apply(&[WatchEvent::Delete {
            key: "/r/shards/00001".into(),
            revision: 8,
        }]);
        assert_eq!(v.shard(ShardId(1)), ShardKey::Absent { revision: 8 });
        assert_eq!(v.revision(), 8);
    }
}
