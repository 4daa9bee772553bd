//! A cluster member's coordinator requests, run off the core task.
//!
//! The core emits each request as [`ServerEvent::Coordinate`]
//! (rmmap_core::server::ServerEvent); here it becomes one task on the
//! caller's runtime that runs it with [`EtcdCoordinator`] and sends the
//! answer back on a channel the core task waits on, as disk results come
//! back. A watch's task first sends the response (`Watching` or `Failed`),
//! then the stream's changes and its end, in that order, so the core never
//! sees an event of a watch it does not know is established. Every decision
//! (when to ask, what an answer means) is the core's.
//!
//! The channel is unbounded: the core has a bounded number of requests
//! outstanding (a few per shard), and watch events come only as fast as the
//! cluster's keys change.

use rmmap_core::cluster::{CoordRequest, CoordRequestId, CoordResponse, WatchEvent};

use super::{ServeError, ServeOptions};

/// What comes back from the coordinator.
// Without feature `cluster` nothing runs requests, so nothing answers.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(super) enum Answer {
    /// The one answer to a request.
    Response(CoordRequestId, CoordResponse),
    /// Changes seen by the watch the request started.
    WatchEvents(CoordRequestId, Vec<WatchEvent>),
    /// That watch ended.
    WatchEnded(CoordRequestId),
}

/// Where the core's coordinator requests run: nowhere for a single server.
pub(super) struct Coordinator {
    #[cfg(feature = "cluster")]
    link: Option<link::Link>,
}

impl Coordinator {
    /// The coordinator for a server with `config`: the etcd connection in
    /// `options` for a cluster member (refused without one, or in a build
    /// without feature `cluster`), none for a single server. Called within
    /// the Tokio runtime that is to run the requests.
    pub(super) fn new(
        config: &rmmap_core::server::ServerConfig,
        options: &ServeOptions,
    ) -> Result<Self, ServeError> {
        if config.cluster.is_none() {
            return Ok(Coordinator {
                #[cfg(feature = "cluster")]
                link: None,
            });
        }
        #[cfg(feature = "cluster")]
        match &options.coordinator {
            Some(etcd) => Ok(Coordinator {
                link: Some(link::Link::new(etcd.clone())?),
            }),
            None => Err(ServeError::Cluster(
                "the configuration makes this server a cluster member, but no etcd \
                 connection was given (ServeOptions::coordinator)"
                    .into(),
            )),
        }
        #[cfg(not(feature = "cluster"))]
        {
            let _ = options;
            Err(ServeError::Cluster(
                "this rmmap-tokio was built without feature `cluster` (the etcd adapter)".into(),
            ))
        }
    }

    /// Runs `request` in the background; its answer comes from [`Self::next`].
    pub(super) fn start(&mut self, id: CoordRequestId, request: CoordRequest) {
        #[cfg(feature = "cluster")]
        if let Some(link) = &self.link {
            link.start(id, request);
            return;
        }
        // Only a cluster member asks, and a member has a link (see `new`).
        tracing::error!(?id, ?request, "a coordinator request without a coordinator");
    }

    /// The next answer (never, for a single server).
    pub(super) async fn next(&mut self) -> Option<Answer> {
        #[cfg(feature = "cluster")]
        if let Some(link) = &mut self.link {
            return link.next().await;
        }
        std::future::pending().await
    }
}

#[cfg(feature = "cluster")]
mod link {
    use rmmap_core::cluster::{CoordRequest, CoordRequestId};
    use tokio::runtime::Handle;
    use tokio::sync::mpsc;

    use super::Answer;
    use crate::cluster::{EtcdCoordinator, WatchReport};
    use crate::server::ServeError;

    /// The etcd connection, the runtime its requests run on, and the way
    /// back.
    pub(super) struct Link {
        etcd: EtcdCoordinator,
        /// The caller's runtime, not the core's thread: etcd's IO stays off
        /// the core.
        runtime: Handle,
        tx: mpsc::UnboundedSender<Answer>,
        rx: mpsc::UnboundedReceiver<Answer>,
    }

    impl Link {
        pub(super) fn new(etcd: EtcdCoordinator) -> Result<Self, ServeError> {
            let runtime = Handle::try_current().map_err(|e| {
                ServeError::Cluster(format!("a cluster member needs a Tokio runtime: {e}"))
            })?;
            let (tx, rx) = mpsc::unbounded_channel();
            Ok(Link {
                etcd,
                runtime,
                tx,
                rx,
            })
        }

        pub(super) fn start(&self, id: CoordRequestId, request: CoordRequest) {
            let (etcd, tx) = (self.etcd.clone(), self.tx.clone());
            self.runtime.spawn(async move {
                // A failed send means the core task is gone: nobody to tell.
                let CoordRequest::Watch {
                    prefix,
                    from_revision,
                } = request
                else {
                    let _ = tx.send(Answer::Response(id, etcd.execute(request).await));
                    return;
                };
                let (reports, mut stream) = mpsc::unbounded_channel();
                let response = etcd.watch(prefix, from_revision, reports).await;
                if tx.send(Answer::Response(id, response)).is_err() {
                    return;
                }
                // Ends when the watch fails to start (its sender is dropped),
                // when it ends, or when the core task is gone.
                while let Some(report) = stream.recv().await {
                    let answer = match report {
                        WatchReport::Events(events) => Answer::WatchEvents(id, events),
                        WatchReport::Ended => Answer::WatchEnded(id),
                    };
                    if tx.send(answer).is_err() {
                        return;
                    }
                }
            });
        }

        pub(super) async fn next(&mut self) -> Option<Answer> {
            // `self` holds a sender: this never ends with `None`.
            self.rx.recv().await
        }
    }
}
