//! The ownership machine's drive loop on a Tokio task.

use std::sync::{Arc, Mutex, MutexGuard};

use rmmap_core::cluster::{
    ClusterConfig, CoordRequest, CoordRequestId, CoordResponse, OwnershipEvent, Placement, ShardId,
    ShardOwnership,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::etcd::{EtcdCoordinator, WatchReport};
use crate::clock::Clock;

/// Something the server must act on, and when the machine said it.
#[derive(Clone, Debug)]
pub struct MemberReport {
    /// When, on the member's clock.
    pub at: rmmap_core::Instant,
    /// What.
    pub event: OwnershipEvent,
}

enum Input {
    Response(CoordRequestId, CoordResponse),
    Watch(CoordRequestId, WatchReport),
    Drained(ShardId, i64),
    Leave,
}

/// One cluster member's shard ownership, driven against etcd.
///
/// The server asks [`ClusterMember::placement`] before it grants anything
/// of a file, acts on the [`MemberReport`]s, and answers a `DrainShard`
/// with [`ClusterMember::drained`].
pub struct ClusterMember {
    machine: Arc<Mutex<ShardOwnership>>,
    clock: Clock,
    inputs: mpsc::UnboundedSender<Input>,
    task: JoinHandle<()>,
}

impl ClusterMember {
    /// Starts the member: it takes a lease, registers and takes its shards.
    pub fn spawn(
        coordinator: EtcdCoordinator,
        config: ClusterConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<MemberReport>), String> {
        let machine = Arc::new(Mutex::new(ShardOwnership::new(config)?));
        let clock = Clock::new();
        let (inputs, rx) = mpsc::unbounded_channel();
        let (reports, reports_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(
            machine.clone(),
            clock,
            coordinator,
            inputs.clone(),
            rx,
            reports,
        ));
        Ok((
            ClusterMember {
                machine,
                clock,
                inputs,
                task,
            },
            reports_rx,
        ))
    }

    fn machine(&self) -> MutexGuard<'_, ShardOwnership> {
        // A panic in the machine is a bug; its state is still the last one.
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the file at `path` is served, now.
    pub fn placement(&self, path: &str) -> Placement {
        self.machine().placement(self.clock.now(), path)
    }

    /// Where `shard` is served, now.
    pub fn shard_placement(&self, shard: ShardId) -> Placement {
        self.machine().shard_placement(self.clock.now(), shard)
    }

    /// The shards held, with their epochs.
    pub fn held_shards(&self) -> Vec<(ShardId, i64)> {
        self.machine().held_shards().collect()
    }

    /// The member's clock, as its reports count time.
    pub fn now(&self) -> rmmap_core::Instant {
        self.clock.now()
    }

    /// The server finished draining `shard` at `epoch`.
    pub fn drained(&self, shard: ShardId, epoch: i64) {
        let _ = self.inputs.send(Input::Drained(shard, epoch));
    }

    /// Leave the cluster: hand every shard over, then end the lease.
    pub fn leave(&self) {
        let _ = self.inputs.send(Input::Leave);
    }

    /// Stops driving at once, as a killed process would: no keep-alive
    /// is sent any more. (Tests; a real process just dies.)
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for ClusterMember {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn drive(
    machine: Arc<Mutex<ShardOwnership>>,
    clock: Clock,
    coordinator: EtcdCoordinator,
    inputs: mpsc::UnboundedSender<Input>,
    mut rx: mpsc::UnboundedReceiver<Input>,
    reports: mpsc::UnboundedSender<MemberReport>,
) {
    let lock = || machine.lock().unwrap_or_else(|p| p.into_inner());
    lock().handle_timeout(clock.now());
    loop {
        // Drain the outputs.
        let (requests, events, deadline) = {
            let mut m = lock();
            let requests: Vec<_> = std::iter::from_fn(|| m.poll_request()).collect();
            let events: Vec<_> = std::iter::from_fn(|| m.poll_event()).collect();
            (requests, events, m.poll_timeout())
        };
        for (id, request) in requests {
            let (coordinator, inputs) = (coordinator.clone(), inputs.clone());
            tokio::spawn(async move {
                let response = match request {
                    CoordRequest::Watch {
                        prefix,
                        from_revision,
                    } => {
                        let (tx, mut watch_rx) = mpsc::unbounded_channel();
                        let r = coordinator.watch(prefix, from_revision, tx).await;
                        let forward = inputs.clone();
                        tokio::spawn(async move {
                            while let Some(report) = watch_rx.recv().await {
                                if forward.send(Input::Watch(id, report)).is_err() {
                                    return;
                                }
                            }
                        });
                        r
                    }
                    other => coordinator.execute(other).await,
                };
                let _ = inputs.send(Input::Response(id, response));
            });
        }
        let at = clock.now();
        for event in events {
            let _ = reports.send(MemberReport { at, event });
        }
        // Wait for an input or the machine's deadline.
        let input = match deadline {
            Some(t) => tokio::select! {
                i = rx.recv() => i,
                _ = tokio::time::sleep_until(clock.deadline(t)) => {
                    lock().handle_timeout(clock.now());
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(input) = input else { return };
        let now = clock.now();
        let mut m = lock();
        match input {
            Input::Response(id, r) => m.handle_response(now, id, r),
            Input::Watch(id, WatchReport::Events(events)) => {
                m.handle_watch_events(now, id, &events)
            }
            Input::Watch(id, WatchReport::Ended) => m.handle_watch_ended(now, id),
            Input::Drained(shard, epoch) => m.handle_shard_drained(now, shard, epoch),
            Input::Leave => m.leave(now),
        }
    }
}
