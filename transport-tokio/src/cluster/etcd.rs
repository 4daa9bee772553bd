//! One etcd call per coordinator request.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use rmmap_core::cluster::{
    CoordError, CoordRequest, CoordResponse, Expect, KeyValue, LeaseId, WatchEvent,
};
use tokio::sync::mpsc;

/// Why the coordinator could not be reached or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// No etcd endpoint answered.
    #[error("cannot reach etcd at {endpoints}: {cause}")]
    Connect {
        /// The endpoints tried.
        endpoints: String,
        /// What failed.
        cause: String,
    },
    /// A request failed.
    #[error("etcd request failed: {0}")]
    Request(String),
}

/// A connection to an etcd cluster, answering the ownership machine's requests.
#[derive(Clone)]
pub struct EtcdCoordinator {
    client: Client,
    timeout: Duration,
}

impl std::fmt::Debug for EtcdCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCoordinator")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What a watch task reports.
pub(crate) enum WatchReport {
    /// Changes, in revision order.
    Events(Vec<WatchEvent>),
    /// The stream ended (broken, cancelled or compacted).
    Ended,
}

impl EtcdCoordinator {
    /// Connects to the etcd endpoints (`http://HOST:PORT`); `timeout`
    /// bounds every request (the machine then sees it as unavailable).
    pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Self, EtcdError> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
        let client = tokio::time::timeout(timeout, Client::connect(endpoints, Some(options)))
            .await
            .map_err(|_| "timed out".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|cause| EtcdError::Connect {
                endpoints: endpoints.join(","),
                cause,
            })?;
        Ok(EtcdCoordinator { client, timeout })
    }

    /// Every key under `prefix`, and the revision (for `rmmap cluster status`).
    pub async fn range(&self, prefix: &str) -> Result<(i64, Vec<KeyValue>), EtcdError> {
        match self
            .execute(CoordRequest::Range {
                prefix: prefix.to_owned(),
            })
            .await
        {
            CoordResponse::Range { revision, kvs } => Ok((revision, kvs)),
            CoordResponse::Failed(e) => Err(EtcdError::Request(e.to_string())),
            other => Err(EtcdError::Request(format!("unexpected answer {other:?}"))),
        }
    }

    /// Runs one request (not a watch: see `watch`), within the timeout.
    pub async fn execute(&self, request: CoordRequest) -> CoordResponse {
        match tokio::time::timeout(self.timeout, self.call(request)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => CoordResponse::Failed(e),
            Err(_) => CoordResponse::Failed(CoordError::Unavailable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn call(&self, request: CoordRequest) -> Result<CoordResponse, CoordError> {
        let mut c = self.client.clone();
        match request {
            CoordRequest::GrantLease { ttl } => {
                // etcd counts whole seconds: round up, never down.
                let secs = i64::try_from(ttl.as_millis().div_ceil(1000).max(1)).unwrap_or(i64::MAX);
                let r = c.lease_grant(secs, None).await.map_err(unavailable)?;
                Ok(CoordResponse::LeaseGranted {
                    lease: LeaseId(r.id()),
                    ttl: secs_to_duration(r.ttl()),
                })
            }
            CoordRequest::KeepAlive { lease } => {
                let (mut keeper, mut stream) =
                    c.lease_keep_alive(lease.0).await.map_err(unavailable)?;
                keeper.keep_alive().await.map_err(unavailable)?;
                match stream.message().await.map_err(unavailable)? {
                    Some(r) => Ok(CoordResponse::KeptAlive {
                        ttl: secs_to_duration(r.ttl()),
                    }),
                    None => Err(CoordError::Unavailable("keep-alive stream closed".into())),
                }
            }
            CoordRequest::RevokeLease { lease } => match c.lease_revoke(lease.0).await {
                Ok(_) => Ok(CoordResponse::LeaseRevoked),
                Err(e) if lease_not_found(&e) => Ok(CoordResponse::LeaseRevoked),
                Err(e) => Err(unavailable(e)),
            },
            CoordRequest::Put {
                key,
                value,
                lease,
                expect,
            } => {
                let options = lease.map(|l| PutOptions::new().with_lease(l.0));
                let txn = Txn::new()
                    .when([compare(&key, expect)])
                    .and_then([TxnOp::put(key, value, options)]);
                match c.txn(txn).await {
                    Ok(r) => Ok(CoordResponse::Put {
                        succeeded: r.succeeded(),
                        revision: r.header().map_or(0, |h| h.revision()),
                    }),
                    Err(e) if lease_not_found(&e) => {
                        Err(CoordError::LeaseNotFound(lease.unwrap_or(LeaseId(0))))
                    }
                    Err(e) => Err(unavailable(e)),
                }
            }
            CoordRequest::Delete { key, expect } => {
                let txn = Txn::new()
                    .when([compare(&key, expect)])
                    .and_then([TxnOp::delete(key, None)]);
                let r = c.txn(txn).await.map_err(unavailable)?;
                Ok(CoordResponse::Deleted {
                    succeeded: r.succeeded(),
                    revision: r.header().map_or(0, |h| h.revision()),
                })
            }
            CoordRequest::Range { prefix } => {
                let r = c
                    .get(prefix, Some(GetOptions::new().with_prefix()))
                    .await
                    .map_err(unavailable)?;
                Ok(CoordResponse::Range {
                    revision: r.header().map_or(0, |h| h.revision()),
                    kvs: r.kvs().iter().map(key_value).collect(),
                })
            }
            CoordRequest::Watch { .. } => Err(CoordError::Refused(
                "a watch is a stream: the member starts it with watch()".into(),
            )),
        }
    }

    /// Starts a prefix watch from `from_revision`; its changes and its end
    /// arrive on `tx`. Returns once the watch is established (or failed).
    pub(crate) async fn watch(
        &self,
        prefix: String,
        from_revision: i64,
        tx: mpsc::UnboundedSender<WatchReport>,
    ) -> CoordResponse {
        let mut c = self.client.clone();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from_revision);
        let mut stream = match tokio::time::timeout(self.timeout, c.watch(prefix, Some(options)))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return CoordResponse::Failed(unavailable(e)),
            Err(_) => {
                return CoordResponse::Failed(CoordError::Unavailable("watch timed out".into()));
            }
        };
        tokio::spawn(async move {
            loop {
                // The member is gone: stop watching now, not at the next change.
                let message = tokio::select! {
                    m = stream.message() => m,
                    () = tx.closed() => return,
                };
                match message {
                    Ok(Some(r)) if !r.canceled() => {
                        let events: Vec<WatchEvent> = r
                            .events()
                            .iter()
                            .filter_map(|e| {
                                let kv = e.kv()?;
                                Some(match e.event_type() {
                                    EventType::Put => WatchEvent::Put(key_value(kv)),
                                    EventType::Delete => WatchEvent::Delete {
                                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                                        revision: kv.mod_revision(),
                                    },
                                })
                            })
                            .collect();
                        if !events.is_empty() && tx.send(WatchReport::Events(events)).is_err() {
                            return; // the member is gone
                        }
                    }
                    _ => {
                        let _ = tx.send(WatchReport::Ended);
                        return;
                    }
                }
            }
        });
        CoordResponse::Watching
    }
}

fn compare(key: &str, expect: Expect) -> Compare {
    match expect {
        Expect::Absent => Compare::create_revision(key, CompareOp::Equal, 0),
        Expect::ModRevision(r) => Compare::mod_revision(key, CompareOp::Equal, r),
    }
}

fn key_value(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: String::from_utf8_lossy(kv.value()).into_owned(),
        mod_revision: kv.mod_revision(),
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
    }
}

fn secs_to_duration(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

fn unavailable(e: etcd_client::Error) -> CoordError {
    CoordError::Unavailable(e.to_string())
}

fn lease_not_found(e: &etcd_client::Error) -> bool {
    e.to_string().contains("lease not found")
}
