//! A client of a cluster: one [`Client`] per member, and `Map` / `SetLen`
//! sent on to the member that owns the file (CLUSTER.md section 6).
//!
//! Where to go next is the core's decision ([`Redirects`]); this file only
//! opens connections and waits.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use rmmap_core::client::{MapOptions, NextTry, OpError, RedirectPolicy, Redirects};
use tokio::sync::OnceCell;

use super::homed::Home;
use super::mapping::MappingInner;
use super::{Access, Client, ClientConfig, ConnectError, Mapping};
use crate::clock::Clock;
use crate::net::{Connector, TcpConnector};

/// A client of an rmmap cluster: a list of member addresses, and one
/// [`Client`] (one connection, one session) per member it has talked to,
/// opened when first needed and kept.
///
/// [`ClusterClient::map`], [`ClusterClient::map_with`] and
/// [`ClusterClient::set_len`] ask the first member; a member that does not
/// own the file's shard answers `moved` with the owner's address, and the
/// same request goes there (at most [`RedirectPolicy::max_redirects`]
/// times). While no member owns the shard (`busy` from a cluster) the
/// request is asked again after a short wait, for at most
/// [`RedirectPolicy::busy_patience`].
///
/// A [`Mapping`] lives on the connection to the member that serves its
/// file, and follows the file when it moves: a member that answers
/// `moved` for it handed the file over, and the mapping goes on at the
/// owner with nothing lost; a member whose connection stays down for
/// [`RedirectPolicy::member_patience`] is asked about through the others,
/// and if another member serves the file now, the mapping goes on there
/// after one operation has failed with [`OpError::SessionLost`] naming the
/// writes the lost member had not synced. The client's `give_up_after`
/// bounds the whole wait.
///
/// With one address and a single server, it behaves as that server's
/// [`Client`]: a single server never answers `moved`, and its `busy` is
/// reported at once. Cheap to clone.
#[derive(Clone)]
pub struct ClusterClient {
    inner: Arc<Members>,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("first", &self.inner.first)
            .field("connected", &self.connected())
            .finish()
    }
}

/// Opens a member's connection: [`Client::connect_with`] over the
/// connector the cluster client was made with.
type Open = Box<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<Client, ConnectError>> + Send>>
        + Send
        + Sync,
>;

struct Members {
    open: Open,
    policy: RedirectPolicy,
    /// The member that answered first: every request starts there.
    first: String,
    /// Every address given, in order: where a request goes when the member
    /// it was on is down.
    addrs: Vec<String>,
    /// Given several addresses: a `busy` means that ownership is in motion
    /// from the start, and a member down may have been replaced.
    several: bool,
    /// The application's bound on waiting for a member that is down.
    give_up: Option<std::time::Duration>,
    /// One connection per member address, opened once (a failed opening
    /// leaves the cell empty for the next request to try again).
    connections: Mutex<BTreeMap<String, Arc<OnceCell<Client>>>>,
    clock: Clock,
}

impl ClusterClient {
    /// Connects over TCP to the first of `addrs` (`host:port` each) that
    /// answers, in order, and completes the handshake. Fails with the last
    /// member's error if none does (or if `addrs` is empty).
    pub async fn connect<A: AsRef<str>>(
        addrs: &[A],
        config: ClientConfig,
    ) -> Result<Self, ConnectError> {
        Self::connect_with(TcpConnector, addrs, config, RedirectPolicy::default()).await
    }

    /// Like [`ClusterClient::connect`], over any [`Connector`] (every
    /// member's connection is opened with a clone of it) and with `policy`.
    pub async fn connect_with<C: Connector + Clone, A: AsRef<str>>(
        connector: C,
        addrs: &[A],
        config: ClientConfig,
        policy: RedirectPolicy,
    ) -> Result<Self, ConnectError> {
        let mut failure = ConnectError::Io {
            addr: String::new(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no member address was given",
            ),
        };
        let give_up = config.give_up_after;
        let mut config = config;
        if addrs.len() > 1 {
            // A member's connection gives up early, for the others to be
            // asked where its files live; the request keeps asking for as
            // long as the application's own bound lets it. The faults of
            // a memory mapping made on one member's connection, which
            // cannot go elsewhere, wait the whole bound.
            config.member_patience = Some(policy.member_patience);
        }
        for addr in addrs {
            let addr = addr.as_ref();
            match Client::connect_with(connector.clone(), addr, config.clone()).await {
                Ok(client) => {
                    let cell = Arc::new(OnceCell::new_with(Some(client)));
                    let open: Open = Box::new(move |addr: String| {
                        let (connector, config) = (connector.clone(), config.clone());
                        Box::pin(
                            async move { Client::connect_with(connector, &addr, config).await },
                        )
                    });
                    let inner = Members {
                        open,
                        policy,
                        first: addr.to_owned(),
                        addrs: addrs.iter().map(|a| a.as_ref().to_owned()).collect(),
                        several: addrs.len() > 1,
                        give_up,
                        connections: Mutex::new(BTreeMap::from([(addr.to_owned(), cell)])),
                        clock: Clock::new(),
                    };
                    return Ok(ClusterClient {
                        inner: Arc::new(inner),
                    });
                }
                Err(e) => {
                    tracing::debug!(addr, error = %e, "member did not answer; trying the next");
                    failure = e;
                }
            }
        }
        Err(failure)
    }

    /// The connection to the member that answered first.
    pub fn first(&self) -> Client {
        self.connection(&self.inner.first)
            .expect("the first member's connection is made before the client exists")
    }

    /// The connection to the member at `addr`, if one has been made.
    pub fn connection(&self, addr: &str) -> Option<Client> {
        let cell = self.lock().get(addr).cloned()?;
        cell.get().cloned()
    }

    /// The addresses of the members connected to, in order.
    pub fn connected(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, cell)| cell.initialized())
            .map(|(addr, _)| addr.clone())
            .collect()
    }

    /// Maps `range` of the file at `path` on the member that owns it (see
    /// [`Client::map`]).
    pub async fn map(
        &self,
        path: &str,
        range: Range<u64>,
        access: Access,
    ) -> Result<Mapping, OpError> {
        let opts = MapOptions {
            access,
            create: false,
        };
        self.map_with(path, range, opts).await
    }

    /// Maps with options on the member that owns the file (see
    /// [`Client::map_with`]).
    pub async fn map_with(
        &self,
        path: &str,
        range: Range<u64>,
        opts: MapOptions,
    ) -> Result<Mapping, OpError> {
        let first = self.map_on_owner(path, range.clone(), opts).await?;
        Ok(Mapping::homed(Home::new(
            first,
            self.clone(),
            path,
            range,
            opts,
        )))
    }

    /// Maps `range` of `path` on the member that owns it, on that
    /// connection for good.
    pub(crate) async fn map_on_owner(
        &self,
        path: &str,
        range: Range<u64>,
        opts: MapOptions,
    ) -> Result<Arc<MappingInner>, OpError> {
        let m = self
            .follow(|c| {
                let range = range.clone();
                async move { c.map_with(path, range, opts).await }
            })
            .await?;
        Ok(m.into_fixed()
            .expect("a member's client maps on its connection"))
    }

    /// Asks the cluster which member serves `range` of `path`: a
    /// [`Client::probe_map`] of it on that member (a memory mapping of the
    /// range on the way does not refuse it), for the caller to unmap.
    #[cfg(target_os = "linux")]
    pub(crate) async fn probe_owner(
        &self,
        path: &str,
        range: Range<u64>,
    ) -> Result<Arc<MappingInner>, OpError> {
        let m = self
            .follow(|c| {
                let range = range.clone();
                async move { c.probe_map(path, range).await }
            })
            .await?;
        Ok(m.into_fixed()
            .expect("a member's client maps on its connection"))
    }

    /// A request's way through the cluster, from now.
    pub(crate) fn redirects(&self) -> Redirects {
        Redirects::new(self.inner.policy, self.now(), self.inner.several)
            .give_up_after(self.inner.give_up)
    }

    pub(crate) fn now(&self) -> rmmap_core::Instant {
        self.inner.clock.now()
    }

    pub(crate) async fn sleep_until(&self, when: rmmap_core::Instant) {
        tokio::time::sleep_until(self.inner.clock.deadline(when)).await;
    }

    /// Whether the client was given several member addresses.
    pub(crate) fn several(&self) -> bool {
        self.inner.several
    }

    /// Sets the length of the file at `path` on the member that owns it
    /// (see [`Client::set_len`]).
    pub async fn set_len(&self, path: &str, len: u64, create: bool) -> Result<u64, OpError> {
        self.follow(|c| async move { c.set_len(path, len, create).await })
            .await
    }

    /// Maps `range` of the file at `path` into memory on the member that
    /// owns it (Linux; see [`Client::map_memory_with`]). Like a
    /// [`Mapping`], it follows its file from member to member, memory and
    /// all (CLUSTER.md section 6): its pages leave memory and fault in
    /// again from the new owner; a move that may have lost stores is
    /// reported once, through a fault, naming the pages.
    #[cfg(target_os = "linux")]
    pub async fn map_memory_with(
        &self,
        path: &str,
        range: Range<u64>,
        opts: MapOptions,
    ) -> Result<crate::MemoryMapping, crate::MemoryError> {
        self.follow(|c| {
            let range = range.clone();
            async move { c.map_memory_on(path, range, opts, Some(self)).await }
        })
        .await
    }

    /// Closes every member's connection (see [`Client::close`]); the first
    /// failure is reported, after all have been closed.
    pub async fn close(&self) -> Result<(), OpError> {
        let mut clients: Vec<Client> = Vec::new();
        for c in self.lock().values().filter_map(|cell| cell.get()) {
            // A member reached under two spellings: one connection.
            if !clients.iter().any(|o| o.same_connection(c)) {
                clients.push(c.clone());
            }
        }
        let mut result = Ok(());
        for c in clients {
            let r = c.close().await;
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    /// Runs `op` on the first member, then wherever the core's
    /// [`Redirects`] says: on to the member a `moved` names, and past a
    /// member that is down to the next of the list.
    async fn follow<T, E, F, Fut>(&self, mut op: F) -> Result<T, E>
    where
        E: Redirectable,
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut redirects = self.redirects();
        let first = self.inner.first.clone();
        let (mut at, mut member) = self
            .reach(&mut redirects, first.clone())
            .await
            .map_err(E::from_op)?;
        loop {
            let error = match op(member.clone()).await {
                Ok(t) => return Ok(t),
                Err(e) => match e.into_op() {
                    Ok(op_error) => op_error,
                    Err(other) => return Err(other),
                },
            };
            match redirects.on_error(self.inner.clock.now(), error) {
                NextTry::SendTo(addr) => {
                    tracing::debug!(to = %addr, "moved: sending the request on");
                    redirects.sent_on_by(&at);
                    (at, member) = self
                        .reach(&mut redirects, addr.as_str().to_owned())
                        .await
                        .map_err(E::from_op)?;
                }
                NextTry::RetryAt(when) => {
                    tokio::time::sleep_until(self.inner.clock.deadline(when)).await;
                    // Down: ask the members again, in order; busy: ask
                    // the next one (a member that let the file go may not
                    // learn who has it).
                    let next = match member.is_connected() {
                        false => first.clone(),
                        true => redirects.after_busy(&at, &self.inner.addrs).to_owned(),
                    };
                    (at, member) = self.reach(&mut redirects, next).await.map_err(E::from_op)?;
                }
                NextTry::Fail(e) => return Err(E::from_op(e)),
            }
        }
    }

    /// The connection to send a request on, starting at `at`: its own if it
    /// is up, else the next member of the list that is, as the core's
    /// [`Redirects::fail_over`] names them. When none is up, the connection
    /// to `at` if there is one (the request waits for it, as a single
    /// server's client does), else `at`'s connect error.
    async fn reach(
        &self,
        redirects: &mut Redirects,
        mut at: String,
    ) -> Result<(String, Client), OpError> {
        let mut waiting: Option<(String, Client)> = None;
        let mut first_error: Option<OpError> = None;
        loop {
            match self.open(&at).await {
                Ok(c) if c.is_connected() => return Ok((at, c)),
                Ok(c) => {
                    waiting.get_or_insert((at.clone(), c));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
            match redirects.fail_over(&at, &self.inner.addrs) {
                Some(next) => {
                    tracing::debug!(down = %at, to = next, "member down: trying the next");
                    at = next.to_owned();
                }
                None => {
                    return match (waiting, first_error) {
                        (Some(c), _) => Ok(c),
                        (None, Some(e)) => Err(e),
                        (None, None) => unreachable!("a member was tried"),
                    };
                }
            }
        }
    }

    /// The connection to `addr`, opened now if there is none. An address
    /// that turns out to reach a member connected under another spelling
    /// shares that connection (one connection per member): the new one is
    /// closed.
    async fn open(&self, addr: &str) -> Result<Client, OpError> {
        let cell = self.lock().entry(addr.to_owned()).or_default().clone();
        cell.get_or_try_init(|| async {
            let opened = (self.inner.open)(addr.to_owned()).await?;
            let same = self
                .lock()
                .values()
                .filter_map(|c| c.get())
                .find(|c| opened.same_server(c))
                .cloned();
            match same {
                Some(same) => {
                    tracing::debug!(addr, "another address of a member connected already");
                    let _ = opened.close().await;
                    Ok::<Client, ConnectError>(same)
                }
                None => Ok(opened),
            }
        })
        .await
        .cloned()
        .map_err(|e| OpError::Unreachable {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<OnceCell<Client>>>> {
        self.inner
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// An operation's error that may be a member's `moved` or `busy`.
trait Redirectable: Sized {
    /// The [`OpError`] inside, or the error itself if it is another kind.
    fn into_op(self) -> Result<OpError, Self>;
    /// An [`OpError`] as this error.
    fn from_op(e: OpError) -> Self;
}

impl Redirectable for OpError {
    fn into_op(self) -> Result<OpError, Self> {
        Ok(self)
    }

    fn from_op(e: OpError) -> Self {
        e
    }
}

#[cfg(target_os = "linux")]
impl Redirectable for crate::MemoryError {
    fn into_op(self) -> Result<OpError, Self> {
        match self {
            crate::MemoryError::Map(e) => Ok(e),
            other => Err(other),
        }
    }

    fn from_op(e: OpError) -> Self {
        e.into()
    }
}
