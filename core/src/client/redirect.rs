//! Following a cluster's redirections: what a client does when a member
//! answers a `Map` or `SetLen` with `moved` or `busy` (PROTOCOL.md
//! section 9, CLUSTER.md sections 5 and 6).
//!
//! The adapters keep one connection per member and ask [`Redirects`] what
//! to do with each failure: send the same request to another member
//! ([`NextTry::SendTo`]), send it again to the same member later
//! ([`NextTry::RetryAt`]), or report the error ([`NextTry::Fail`]). The decision
//! is made here, once, for every adapter.

use std::fmt;
use std::time::Duration;

use crate::Instant;
use crate::protocol::ErrorCode;

use super::{LostWrites, OpError};

/// The longest address a `moved` reply may carry, in bytes.
pub const MAX_MEMBER_ADDR_LEN: usize = 255;

/// A cluster member's advertised address as a `moved` reply names it:
/// `host:port`, where the host is a DNS name, an IPv4 address, or an IPv6
/// address in brackets, at most [`MAX_MEMBER_ADDR_LEN`] bytes, with nothing
/// around it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberAddr(String);

/// Why a `moved` reply's address cannot be followed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadMemberAddr {
    /// Nothing at all.
    #[error("the address is empty")]
    Empty,
    /// Longer than [`MAX_MEMBER_ADDR_LEN`].
    #[error("the address is {0} bytes long, more than {MAX_MEMBER_ADDR_LEN}")]
    TooLong(usize),
    /// No `:port` at the end.
    #[error("the address has no :port")]
    NoPort,
    /// The port is not a number from 1 to 65535.
    #[error("the port is not a number from 1 to 65535")]
    BadPort,
    /// The host is not a DNS name, an IPv4 address or a bracketed IPv6
    /// address (spaces, control characters, a stray colon, ...).
    #[error("the host is not a DNS name, an IPv4 address or an IPv6 address in brackets")]
    BadHost,
}

impl MemberAddr {
    /// Checks `s` as PROTOCOL.md section 9 describes a `moved` address.
    pub fn parse(s: &str) -> Result<MemberAddr, BadMemberAddr> {
        if s.is_empty() {
            return Err(BadMemberAddr::Empty);
        }
        if s.len() > MAX_MEMBER_ADDR_LEN {
            return Err(BadMemberAddr::TooLong(s.len()));
        }
        let (host, port) = s.rsplit_once(':').ok_or(BadMemberAddr::NoPort)?;
        if port.is_empty() {
            return Err(BadMemberAddr::NoPort);
        }
        // `u16::from_str` takes a leading `+`; a port is digits only.
        if !port.bytes().all(|b| b.is_ascii_digit()) || !matches!(port.parse::<u16>(), Ok(1..)) {
            return Err(BadMemberAddr::BadPort);
        }
        let host_ok = match host.strip_prefix('[') {
            Some(rest) => rest
                .strip_suffix(']')
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
            None => is_dns_name_or_ipv4(host),
        };
        if !host_ok {
            return Err(BadMemberAddr::BadHost);
        }
        Ok(MemberAddr(s.to_owned()))
    }

    /// The address, as the member advertised it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MemberAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Letters, digits, `-`, `_` and dots, in non-empty labels (an IPv4
/// address is such a name too).
fn is_dns_name_or_ipv4(host: &str) -> bool {
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// How far a client follows a cluster's redirections.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RedirectPolicy {
    /// `moved` replies followed for one request; the next one is reported.
    /// Default 4: more than that means ownership keeps moving.
    pub max_redirects: u32,
    /// How long one request keeps asking again while members answer `busy`
    /// (no owner known yet: ownership is in motion). Default 2 s.
    pub busy_patience: Duration,
    /// The first wait after a `busy`; it doubles per retry, up to
    /// `busy_backoff_max`. Default 20 ms.
    pub busy_backoff: Duration,
    /// The longest wait between two retries. Default 250 ms.
    pub busy_backoff_max: Duration,
    /// Given several members: how long an operation waits for a member
    /// whose connection is down before the client asks the others where
    /// the file lives now (a member that died is replaced by another
    /// owner, which the client finds only by asking). The client's
    /// `give_up_after` still bounds the whole wait. Default 1 s.
    pub member_patience: Duration,
}

impl Default for RedirectPolicy {
    fn default() -> Self {
        RedirectPolicy {
            max_redirects: 4,
            busy_patience: Duration::from_secs(2),
            busy_backoff: Duration::from_millis(20),
            busy_backoff_max: Duration::from_millis(250),
            member_patience: Duration::from_secs(1),
        }
    }
}

/// What to do with a request's failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextTry {
    /// Send the same request to this member, on the client's connection to
    /// it (opened if there is none).
    SendTo(MemberAddr),
    /// Send the same request to the same member again at this instant.
    RetryAt(Instant),
    /// Report this error: the request is over.
    Fail(OpError),
}

/// One request's way through a cluster: how often it was moved, how long
/// members have answered `busy`.
///
/// Make one per request ([`Redirects::new`]) and give it every failure
/// ([`Redirects::on_error`]); a success ends it.
#[derive(Clone, Debug)]
pub struct Redirects {
    policy: RedirectPolicy,
    started: Instant,
    redirects: u32,
    retries: u32,
    cluster: bool,
    /// Members found down, or that sent the request on, for this request.
    tried: Vec<String>,
    /// A member's connection down ends the request at this instant (the
    /// client's `give_up_after` from the start); `None`: never.
    give_up: Option<Instant>,
}

impl Redirects {
    /// A request sent at `now`. `cluster` says whether the client knows it
    /// talks to a cluster (it was given several addresses, or has been told
    /// `moved`): only then does `busy` mean that ownership is in motion and
    /// is retried; a single server's `busy` is reported at once, as ever.
    pub fn new(policy: RedirectPolicy, now: Instant, cluster: bool) -> Self {
        Redirects {
            policy,
            started: now,
            redirects: 0,
            retries: 0,
            cluster,
            tried: Vec::new(),
            give_up: None,
        }
    }

    /// Bounds the time the request waits for members that are down: with
    /// `Some(d)`, a request whose member is down after `d` from its start
    /// fails; with `None` (the default) it keeps asking.
    pub fn give_up_after(mut self, d: Option<Duration>) -> Self {
        self.give_up = d.map(|d| self.started + d);
        self
    }

    /// The member at `member` answered the request with `moved`: a member
    /// found down later is not handed the request back to it.
    pub fn sent_on_by(&mut self, member: &str) {
        if !self.tried.iter().any(|d| d == member) {
            self.tried.push(member.to_owned());
        }
    }

    /// The member at `down` cannot carry the request now (its connection
    /// is lost, or cannot be opened): the next of `members` (the addresses
    /// the client was given, in order) not yet tried for this request, to
    /// start over from. `None` once every member was tried: the request
    /// then waits for `down` to come back, as a single server's client
    /// does. A member that died takes its shards' ownership with it only
    /// when its etcd lease runs out, so the others may send the request
    /// back to it (`moved`) until then; the client reports that failure.
    pub fn fail_over<'a>(&mut self, down: &str, members: &'a [String]) -> Option<&'a str> {
        self.sent_on_by(down);
        let next = members
            .iter()
            .find(|m| !self.tried.iter().any(|d| d == *m))?;
        self.cluster = true;
        Some(next.as_str())
    }

    /// The member to ask after `at` answered `busy`: the next of `members`
    /// (the addresses the client was given), in a circle. A member that
    /// let a shard go may not learn its next owner (it is leaving); the
    /// others do. `at` itself when it is the only one.
    pub fn after_busy<'a>(&self, at: &'a str, members: &'a [String]) -> &'a str {
        match members.iter().position(|m| m == at) {
            Some(i) => members[(i + 1) % members.len()].as_str(),
            None => members.first().map_or(at, |m| m.as_str()),
        }
    }

    /// `moved` replies followed so far.
    pub fn redirects(&self) -> u32 {
        self.redirects
    }

    /// Whether the request has learned that it talks to a cluster.
    pub fn in_cluster(&self) -> bool {
        self.cluster
    }

    /// The request failed with `error` at `now`: what next.
    pub fn on_error(&mut self, now: Instant, error: OpError) -> NextTry {
        if let OpError::Disconnected(_) = error {
            // The member waited for is down (a member's connection gives up
            // after `member_patience`): ask every member again, from the
            // start of the list, a little later; one of them may own the
            // file now.
            if !self.cluster || self.give_up.is_some_and(|g| now >= g) {
                return NextTry::Fail(error);
            }
            self.tried.clear();
            self.redirects = 0;
            let wait = self.policy.busy_backoff_max;
            return NextTry::RetryAt(self.give_up.map_or(now + wait, |g| (now + wait).min(g)));
        }
        let OpError::Server { code, message } = &error else {
            return NextTry::Fail(error);
        };
        match code {
            ErrorCode::Moved => {
                self.cluster = true;
                let addr = match MemberAddr::parse(message) {
                    Ok(a) => a,
                    Err(why) => {
                        return NextTry::Fail(OpError::Server {
                            code: ErrorCode::Moved,
                            message: format!(
                                "the member answered moved without an address to go to ({why}): {:?}",
                                shown(message)
                            ),
                        });
                    }
                };
                if self.redirects >= self.policy.max_redirects {
                    return NextTry::Fail(error);
                }
                self.redirects += 1;
                NextTry::SendTo(addr)
            }
            ErrorCode::Busy if self.cluster => {
                let give_up = self.started + self.policy.busy_patience;
                if now >= give_up {
                    return NextTry::Fail(error);
                }
                let wait = self
                    .policy
                    .busy_backoff
                    .saturating_mul(1u32 << self.retries.min(16))
                    .min(self.policy.busy_backoff_max);
                self.retries += 1;
                NextTry::RetryAt((now + wait).min(give_up))
            }
            _ => NextTry::Fail(error),
        }
    }
}

/// How an operation's error on a mapping shows that the mapping's member
/// no longer serves its file, as a cluster client sees it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MemberLeft {
    /// The member answered `moved`: it handed the file over (a planned
    /// move recalls and syncs first). Map the range on the owner and run
    /// the operation there; nothing was lost.
    HandedOver,
    /// The member's connection is down: ask the others where the file
    /// lives; if another member serves it, the member stopped serving it
    /// without a handover, and the mapping leaves it with what it may have
    /// lost ([`super::SessionLossReason::MemberLost`]).
    Unreachable,
    /// The member came back without the file: the session's loss was
    /// reported by this error, and mapping the range again there was
    /// answered `moved`. Map it on the owner for the next operation.
    LostThenMoved,
    /// The member answered `busy`, to a client of a cluster: the file is
    /// being handed over (to a member the leaving one may never learn).
    /// Wait it out as a `Map`'s `busy` is ([`Redirects::on_error`]), then
    /// ask the cluster where the file lives; the operation changed nothing.
    HandingOver,
}

/// Whether an operation that failed on a member may run again elsewhere.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Again {
    /// Yes: failing, it changed nothing at the member (reads, writes into
    /// the client's cache, syncs, waits).
    Yes,
    /// Only if the member refused it: an atomic sent to a member that went
    /// out of reach may have applied there.
    IfRefused,
}

impl MemberLeft {
    /// Whether an operation (`again`) that failed this way may run again.
    pub fn may_run_again(self, again: Again) -> bool {
        again == Again::Yes || self != MemberLeft::Unreachable
    }

    /// The operation failed with `e` (`left`, if it says the member let
    /// the file go) after another operation had moved the mapping already:
    /// `Ok(())` to run it on the new member, else the error to report.
    pub fn after_moved_elsewhere(
        left: Option<MemberLeft>,
        e: OpError,
        again: Again,
    ) -> Result<(), OpError> {
        match left {
            Some(l) if !l.may_run_again(again) => Err(e),
            _ => Ok(()),
        }
    }

    /// The member serves the file still (it came back, or took the file
    /// back): the mapping stays. `Ok(())` to run the operation again
    /// there, else the error to report (a loss report is made once).
    pub fn stayed(self, e: OpError, again: Again) -> Result<(), OpError> {
        match self {
            MemberLeft::LostThenMoved => Err(e),
            _ if self.may_run_again(again) => Ok(()),
            _ => Err(e),
        }
    }

    /// The mapping moved to another member, losing `lost` there
    /// (`Client::hand_over`'s answer): the loss is reported once, by this
    /// operation; with nothing lost it runs again if it may.
    pub fn moved(self, e: OpError, lost: Option<LostWrites>, again: Again) -> Result<(), OpError> {
        match (self, lost) {
            // `e` is the report of what was lost.
            (MemberLeft::LostThenMoved, _) => Err(e),
            (_, Some(lost)) => Err(OpError::SessionLost(lost)),
            (_, None) if self.may_run_again(again) => Ok(()),
            (_, None) => Err(e),
        }
    }

    /// What `error`, from an operation on a mapping of a cluster member,
    /// says about that member, if anything; `in_cluster`: the client was
    /// given several members (a lone server's `busy` is its own answer,
    /// reported as it is).
    pub fn of(error: &OpError, in_cluster: bool) -> Option<MemberLeft> {
        match error {
            OpError::Server {
                code: ErrorCode::Busy,
                ..
            } if in_cluster => Some(MemberLeft::HandingOver),
            OpError::Server {
                code: ErrorCode::Moved,
                ..
            } => Some(MemberLeft::HandedOver),
            OpError::Disconnected(_) => Some(MemberLeft::Unreachable),
            OpError::SessionLost(l)
                if l.remap_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with(&format!("{}: ", ErrorCode::Moved))) =>
            {
                Some(MemberLeft::LostThenMoved)
            }
            _ => None,
        }
    }
}

/// At most 64 characters of what a peer sent, for an error message.
fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(to: &str) -> OpError {
        OpError::Server {
            code: ErrorCode::Moved,
            message: to.into(),
        }
    }

    #[test]
    fn a_member_down_hands_the_request_to_the_next_once_each() {
        let members: Vec<String> = ["a:1", "b:1", "c:1"].map(String::from).to_vec();
        let mut r = Redirects::new(RedirectPolicy::default(), Instant::ZERO, false);
        assert_eq!(r.fail_over("a:1", &members), Some("b:1"));
        assert!(r.in_cluster(), "a list of members is a cluster");
        assert_eq!(r.fail_over("b:1", &members), Some("c:1"));
        // Moved back to a (its lease has not run out yet): down already.
        assert_eq!(r.fail_over("a:1", &members), Some("c:1"));
        assert_eq!(r.fail_over("c:1", &members), None);
        // A member outside the list (named by moved) counts too, and one
        // that sent the request on is not handed it back.
        let mut r = Redirects::new(RedirectPolicy::default(), Instant::ZERO, true);
        r.sent_on_by("a:1");
        assert_eq!(r.fail_over("x:1", &members), Some("b:1"));
    }

    #[test]
    fn busy_members_are_asked_in_a_circle() {
        let members: Vec<String> = ["a:1", "b:1", "c:1"].map(String::from).to_vec();
        let r = Redirects::new(RedirectPolicy::default(), Instant::ZERO, true);
        assert_eq!(r.after_busy("a:1", &members), "b:1");
        assert_eq!(r.after_busy("c:1", &members), "a:1");
        assert_eq!(r.after_busy("x:1", &members), "a:1");
        assert_eq!(r.after_busy("x:1", &[]), "x:1");
    }

    #[test]
    fn a_member_down_is_asked_about_again_until_the_give_up() {
        let d = OpError::Disconnected(Duration::from_secs(1));
        // A single server: reported at once, as ever.
        let mut r = Redirects::new(RedirectPolicy::default(), at(0), false);
        assert_eq!(r.on_error(at(1000), d.clone()), NextTry::Fail(d.clone()));
        // A cluster: asked again (every member anew) until the bound.
        let mut r = Redirects::new(RedirectPolicy::default(), at(0), true)
            .give_up_after(Some(Duration::from_secs(3)));
        r.sent_on_by("a:1");
        assert_eq!(r.on_error(at(1000), d.clone()), NextTry::RetryAt(at(1250)));
        let members: Vec<String> = ["a:1", "b:1"].map(String::from).to_vec();
        assert_eq!(r.fail_over("b:1", &members), Some("a:1"), "tried anew");
        assert_eq!(r.on_error(at(2900), d.clone()), NextTry::RetryAt(at(3000)));
        assert_eq!(r.on_error(at(3000), d.clone()), NextTry::Fail(d));
    }

    #[test]
    fn what_an_operation_does_after_its_member_let_the_file_go() {
        use MemberLeft::*;
        let e = OpError::Disconnected(Duration::ZERO);
        let lost = super::super::LostWrites {
            path: "f".into(),
            cause: super::super::LossCause::Session(super::super::SessionLossReason::MemberLost),
            dirty_pages: 0,
            unsynced_writes: true,
            remap_error: None,
            pages: Vec::new(),
            unsynced_pages: vec![2].into(),
        };
        // An atomic sent to a member out of reach is not run again.
        assert_eq!(
            Unreachable.stayed(e.clone(), Again::IfRefused),
            Err(e.clone())
        );
        assert_eq!(Unreachable.stayed(e.clone(), Again::Yes), Ok(()));
        assert_eq!(HandedOver.stayed(e.clone(), Again::IfRefused), Ok(()));
        assert_eq!(LostThenMoved.stayed(e.clone(), Again::Yes), Err(e.clone()));
        // A move that lost writes says so, once, whatever the operation.
        assert_eq!(
            Unreachable.moved(e.clone(), Some(lost.clone()), Again::Yes),
            Err(OpError::SessionLost(lost.clone()))
        );
        assert_eq!(HandedOver.moved(e.clone(), None, Again::IfRefused), Ok(()));
        assert_eq!(
            Unreachable.moved(e.clone(), None, Again::IfRefused),
            Err(e.clone())
        );
        assert_eq!(
            LostThenMoved.moved(e.clone(), None, Again::Yes),
            Err(e.clone())
        );
        assert_eq!(
            MemberLeft::after_moved_elsewhere(Some(Unreachable), e.clone(), Again::IfRefused),
            Err(e.clone())
        );
        assert_eq!(
            MemberLeft::after_moved_elsewhere(None, e.clone(), Again::IfRefused),
            Ok(())
        );
    }

    #[test]
    fn errors_that_say_a_member_let_a_file_go() {
        assert_eq!(
            MemberLeft::of(&moved("b:1"), true),
            Some(MemberLeft::HandedOver)
        );
        assert_eq!(
            MemberLeft::of(&OpError::Disconnected(Duration::ZERO), true),
            Some(MemberLeft::Unreachable)
        );
        // A busy member hands the file over, in a cluster; a lone server's
        // busy is reported.
        assert_eq!(MemberLeft::of(&busy(), true), Some(MemberLeft::HandingOver));
        assert_eq!(MemberLeft::of(&busy(), false), None);
        assert!(MemberLeft::HandingOver.may_run_again(Again::IfRefused));
        let lost = |remap_error: Option<&str>| {
            OpError::SessionLost(super::super::LostWrites {
                path: "f".into(),
                cause: super::super::LossCause::Session(
                    super::super::SessionLossReason::LeaseExpired,
                ),
                dirty_pages: 0,
                unsynced_writes: false,
                remap_error: remap_error.map(Into::into),
                pages: Vec::new(),
                unsynced_pages: Box::default(),
            })
        };
        assert_eq!(
            MemberLeft::of(&lost(Some("moved: b:1")), true),
            Some(MemberLeft::LostThenMoved)
        );
        assert_eq!(MemberLeft::of(&lost(Some("not_found: f")), true), None);
        assert_eq!(MemberLeft::of(&lost(None), true), None);
    }

    fn busy() -> OpError {
        OpError::Server {
            code: ErrorCode::Busy,
            message: "no owner yet".into(),
        }
    }

    fn at(ms: u64) -> Instant {
        Instant::from_duration(Duration::from_millis(ms))
    }

    #[test]
    fn addresses_of_every_allowed_form_are_followed() {
        for a in [
            "member-1.example.com:7878",
            "localhost:1",
            "10.0.0.7:65535",
            "[::1]:7878",
            "[2001:db8::17]:443",
            "node_3:7878",
        ] {
            assert_eq!(MemberAddr::parse(a).map(|m| m.to_string()), Ok(a.into()));
        }
        let longest = format!("{}:7878", "a".repeat(MAX_MEMBER_ADDR_LEN - 5));
        assert!(MemberAddr::parse(&longest).is_ok());
    }

    #[test]
    fn addresses_with_anything_around_them_are_refused() {
        use BadMemberAddr::*;
        let too_long = format!("{}:7878", "a".repeat(MAX_MEMBER_ADDR_LEN - 4));
        for (a, why) in [
            ("", Empty),
            (too_long.as_str(), TooLong(MAX_MEMBER_ADDR_LEN + 1)),
            ("host", NoPort),
            ("host:", NoPort),
            ("host:0", BadPort),
            ("host:65536", BadPort),
            ("host:+80", BadPort),
            ("host:80 ", BadPort),
            (" host:80", BadHost),
            ("host:80\n", BadPort),
            ("ho st:80", BadHost),
            (":80", BadHost),
            ("::1:80", BadHost),
            ("[::1]x:80", BadHost),
            ("[not-an-ip]:80", BadHost),
            ("a..b:80", BadHost),
            ("host.:80", BadHost),
            ("tcp://host:80", BadHost),
            ("h\u{e9}te:80", BadHost),
        ] {
            assert_eq!(MemberAddr::parse(a), Err(why), "{a:?}");
        }
    }

    #[test]
    fn moved_sends_the_request_to_the_named_member() {
        let mut r = Redirects::new(RedirectPolicy::default(), at(0), false);
        assert_eq!(
            r.on_error(at(1), moved("b:2")),
            NextTry::SendTo(MemberAddr::parse("b:2").unwrap())
        );
        assert_eq!(r.redirects(), 1);
        assert!(r.in_cluster());
    }

    #[test]
    fn moved_more_than_the_bound_is_reported_unchanged() {
        let policy = RedirectPolicy::default();
        let mut r = Redirects::new(policy, at(0), true);
        for i in 0..policy.max_redirects {
            let to = format!("m{i}:1");
            assert_eq!(
                r.on_error(at(0), moved(&to)),
                NextTry::SendTo(MemberAddr::parse(&to).unwrap())
            );
        }
        assert_eq!(
            r.on_error(at(0), moved("m9:1")),
            NextTry::Fail(moved("m9:1"))
        );
    }

    #[test]
    fn moved_to_an_address_that_is_not_one_fails_saying_why() {
        let mut r = Redirects::new(RedirectPolicy::default(), at(0), true);
        let NextTry::Fail(OpError::Server { code, message }) = r.on_error(at(0), moved("b 2"))
        else {
            panic!("an address with a space must not be followed");
        };
        assert_eq!(code, ErrorCode::Moved);
        assert!(message.contains("no :port"), "{message}");
        assert_eq!(r.redirects(), 0);
    }

    #[test]
    fn busy_from_a_single_server_is_reported_at_once() {
        let mut r = Redirects::new(RedirectPolicy::default(), at(0), false);
        assert_eq!(r.on_error(at(0), busy()), NextTry::Fail(busy()));
    }

    #[test]
    fn busy_after_a_moved_is_retried_with_growing_waits() {
        let mut r = Redirects::new(RedirectPolicy::default(), at(0), false);
        assert!(matches!(
            r.on_error(at(0), moved("b:2")),
            NextTry::SendTo(_)
        ));
        assert_eq!(r.on_error(at(10), busy()), NextTry::RetryAt(at(30)));
        assert_eq!(r.on_error(at(30), busy()), NextTry::RetryAt(at(70)));
        assert_eq!(r.on_error(at(70), busy()), NextTry::RetryAt(at(150)));
        assert_eq!(r.on_error(at(150), busy()), NextTry::RetryAt(at(310)));
        assert_eq!(r.on_error(at(310), busy()), NextTry::RetryAt(at(560)));
    }

    #[test]
    fn busy_is_retried_for_at_most_the_patience_in_all() {
        let policy = RedirectPolicy::default();
        let mut r = Redirects::new(policy, at(0), true);
        let mut now = at(0);
        let mut tries = 0;
        while let NextTry::RetryAt(next) = r.on_error(now, busy()) {
            assert!(next > now && next <= at(2000), "{next:?}");
            now = next;
            tries += 1;
            assert!(tries < 100, "retries without end");
        }
        assert_eq!(now, at(2000));
        assert_eq!(r.on_error(now, busy()), NextTry::Fail(busy()));
    }

    #[test]
    fn other_failures_are_reported_as_they_are() {
        let mut r = Redirects::new(RedirectPolicy::default(), at(0), true);
        let not_found = OpError::Server {
            code: ErrorCode::NotFound,
            message: "no such file".into(),
        };
        assert_eq!(
            r.on_error(at(0), not_found.clone()),
            NextTry::Fail(not_found)
        );
        assert_eq!(
            r.on_error(at(0), OpError::OutcomeUnknown),
            NextTry::Fail(OpError::OutcomeUnknown)
        );
    }
}
