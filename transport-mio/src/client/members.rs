//! A blocking client of a cluster: one [`Client`] per member, and `Map` /
//! `SetLen` sent on to the member that owns the file (CLUSTER.md
//! section 6).
//!
//! Where to go next is the core's decision ([`Redirects`]); this file only
//! opens connections and sleeps.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use rmmap_core::client::{
    ClientConfig, ConnectError, MapOptions, NextTry, OpError, RedirectPolicy, Redirects,
};
use rmmap_secure::ClientTls;

use super::homed::Home;
use super::mapping::MappingInner;
use super::{Access, Client, Mapping};
use crate::clock::Clock;

/// A blocking client of an rmmap cluster: a list of member addresses, and
/// one [`Client`] (one connection, one session) per member it has talked
/// to, opened when first needed and kept.
///
/// [`ClusterClient::map`], [`ClusterClient::map_with`] and
/// [`ClusterClient::set_len`] ask the first member; a member that does not
/// own the file's shard answers `moved` with the owner's address, and the
/// same request goes there (at most [`RedirectPolicy::max_redirects`]
/// times). While no member owns the shard (`busy` from a cluster) the
/// request is asked again after a short sleep, for at most
/// [`RedirectPolicy::busy_patience`].
///
/// A [`Mapping`] lives on the connection to the member that serves its
/// file, and follows the file when it moves, as rmmap-tokio's does
/// (CLUSTER.md section 6): after `moved` or `busy` (a handover) with nothing
/// reported; after the member's connection stayed down for
/// [`RedirectPolicy::member_patience`] while another member serves the
/// file, after one operation failed with [`OpError::SessionLost`] naming
/// what the lost member had not synced.
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

struct Members {
    config: ClientConfig,
    tls: Option<ClientTls>,
    policy: RedirectPolicy,
    /// The member that answered first: every request starts there.
    first: String,
    /// Every address given, in order: where a request goes when the member
    /// it was on is down.
    addrs: Vec<String>,
    /// Given several addresses: a `busy` means that ownership is in motion
    /// from the start.
    several: bool,
    /// One connection per member address.
    connections: Mutex<BTreeMap<String, Client>>,
    clock: Clock,
}

impl ClusterClient {
    /// Connects over TCP to the first of `addrs` (`host:port` each) that
    /// answers, in order, and completes the handshake. Fails with the last
    /// member's error if none does (or if `addrs` is empty).
    pub fn connect<A: AsRef<str>>(addrs: &[A], config: ClientConfig) -> Result<Self, ConnectError> {
        Self::connect_with(addrs, config, None, RedirectPolicy::default())
    }

    /// Like [`ClusterClient::connect`], over TLS when `tls` is given (for
    /// every member, as [`Client::connect_tls`]), and with `policy`.
    pub fn connect_with<A: AsRef<str>>(
        addrs: &[A],
        config: ClientConfig,
        tls: Option<ClientTls>,
        policy: RedirectPolicy,
    ) -> Result<Self, ConnectError> {
        let mut failure = ConnectError::Io {
            addr: String::new(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no member address was given",
            ),
        };
        let mut config = config;
        if addrs.len() > 1 {
            // A member's connection gives up early, for the others to be
            // asked where its files live (`give_up_after` bounds the rest).
            config.member_patience = Some(policy.member_patience);
        }
        for addr in addrs {
            let addr = addr.as_ref();
            match Client::start(addr, config.clone(), tls.clone(), None) {
                Ok(client) => {
                    let inner = Members {
                        config,
                        tls,
                        policy,
                        first: addr.to_owned(),
                        addrs: addrs.iter().map(|a| a.as_ref().to_owned()).collect(),
                        several: addrs.len() > 1,
                        connections: Mutex::new(BTreeMap::from([(addr.to_owned(), client)])),
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
        self.lock().get(addr).cloned()
    }

    /// The addresses of the members connected to, in order.
    pub fn connected(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Maps `range` of the file at `path` on the member that owns it (see
    /// [`Client::map`]).
    pub fn map(&self, path: &str, range: Range<u64>, access: Access) -> Result<Mapping, OpError> {
        let opts = MapOptions {
            access,
            create: false,
        };
        self.map_with(path, range, opts)
    }

    /// Maps with options on the member that owns the file (see
    /// [`Client::map_with`]).
    pub fn map_with(
        &self,
        path: &str,
        range: Range<u64>,
        opts: MapOptions,
    ) -> Result<Mapping, OpError> {
        let first = self.map_on_owner(path, range.clone(), opts)?;
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
    pub(crate) fn map_on_owner(
        &self,
        path: &str,
        range: Range<u64>,
        opts: MapOptions,
    ) -> Result<Arc<MappingInner>, OpError> {
        let m = self.follow(|c| c.map_with(path, range.clone(), opts))?;
        Ok(m.into_fixed()
            .expect("a member's client maps on its connection"))
    }

    /// Whether the client was given several member addresses.
    pub(crate) fn several(&self) -> bool {
        self.inner.several
    }

    /// A request's way through the cluster, from now.
    pub(crate) fn redirects(&self) -> Redirects {
        Redirects::new(self.inner.policy, self.now(), self.inner.several)
            .give_up_after(self.inner.config.give_up_after)
    }

    pub(crate) fn now(&self) -> rmmap_core::Instant {
        self.inner.clock.now()
    }

    pub(crate) fn sleep_until(&self, when: rmmap_core::Instant) {
        let wait = self
            .inner
            .clock
            .deadline(when)
            .saturating_duration_since(std::time::Instant::now());
        std::thread::sleep(wait);
    }

    /// Sets the length of the file at `path` on the member that owns it
    /// (see [`Client::set_len`]).
    pub fn set_len(&self, path: &str, len: u64, create: bool) -> Result<u64, OpError> {
        self.follow(|c| c.set_len(path, len, create))
    }

    /// Closes every member's connection (see [`Client::close`]); the first
    /// failure is reported, after all have been closed.
    pub fn close(&self) -> Result<(), OpError> {
        let mut clients: Vec<Client> = Vec::new();
        for c in self.lock().values() {
            // A member reached under two spellings: one connection.
            if !clients.iter().any(|o| o.same_connection(c)) {
                clients.push(c.clone());
            }
        }
        let mut result = Ok(());
        for c in clients {
            let r = c.close();
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    /// Runs `op` on the first member, then wherever the core's
    /// [`Redirects`] says.
    fn follow<T>(&self, mut op: impl FnMut(&Client) -> Result<T, OpError>) -> Result<T, OpError> {
        let inner = &self.inner;
        let mut redirects = self.redirects();
        let (mut at, mut member) = self.reach(&mut redirects, inner.first.clone())?;
        loop {
            let error = match op(&member) {
                Ok(t) => return Ok(t),
                Err(e) => e,
            };
            match redirects.on_error(inner.clock.now(), error) {
                NextTry::SendTo(addr) => {
                    tracing::debug!(to = %addr, "moved: sending the request on");
                    redirects.sent_on_by(&at);
                    (at, member) = self.reach(&mut redirects, addr.as_str().to_owned())?;
                }
                NextTry::RetryAt(when) => {
                    self.sleep_until(when);
                    // Down: ask the members again, in order; busy: ask the
                    // next one (a member that let the file go may not learn
                    // who has it).
                    let next = match member.is_connected() {
                        false => inner.first.clone(),
                        true => redirects.after_busy(&at, &inner.addrs).to_owned(),
                    };
                    (at, member) = self.reach(&mut redirects, next)?;
                }
                NextTry::Fail(e) => return Err(e),
            }
        }
    }

    /// The connection to send a request on, starting at `at`: its own if it
    /// is up, else the next member of the list that is, as the core's
    /// [`Redirects::fail_over`] names them. When none is up, the connection
    /// to `at` if there is one (the request waits for it, as a single
    /// server's client does), else `at`'s connect error.
    fn reach(
        &self,
        redirects: &mut Redirects,
        mut at: String,
    ) -> Result<(String, Client), OpError> {
        let mut waiting: Option<(String, Client)> = None;
        let mut first_error: Option<OpError> = None;
        loop {
            match self.open(&at) {
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
                        (Some(w), _) => Ok(w),
                        (None, Some(e)) => Err(e),
                        (None, None) => unreachable!("a member was tried"),
                    };
                }
            }
        }
    }

    /// The connection to `addr`, opened now if there is none.
    fn open(&self, addr: &str) -> Result<Client, OpError> {
        if let Some(c) = self.connection(addr) {
            return Ok(c);
        }
        let inner = &self.inner;
        // Opened without the lock; if another thread opened one meanwhile,
        // theirs is kept and this one closes as it drops.
        let client =
            Client::start(addr, inner.config.clone(), inner.tls.clone(), None).map_err(|e| {
                OpError::Unreachable {
                    addr: addr.to_owned(),
                    reason: e.to_string(),
                }
            })?;
        let mut connections = self.lock();
        // Another spelling of a member connected already: its connection
        // (one per member); this one closes as it drops.
        let same = connections
            .values()
            .find(|c| client.same_server(c))
            .cloned();
        if same.is_some() {
            tracing::debug!(addr, "another address of a member connected already");
        }
        Ok(connections
            .entry(addr.to_owned())
            .or_insert(same.unwrap_or(client))
            .clone())
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Client>> {
        self.inner
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}
