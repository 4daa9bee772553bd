//! Every message of the protocol. The byte layouts are in `docs/PROTOCOL.md`
//! and in [`super::encode`] / [`super::decode`].

use bytes::Bytes;

use super::error_code::ErrorCode;
use super::ids::{
    FileHandle, Nonce, PageNo, ReqId, ResumeToken, RevId, SessionId, Version, WireMappingId,
};

/// The message type byte that follows the length prefix of every frame.
#[allow(missing_docs)]
pub mod kind {
    pub const HELLO: u8 = 0x01;
    pub const AUTHENTICATE: u8 = 0x02;
    pub const PING: u8 = 0x03;
    pub const BYE: u8 = 0x04;
    pub const MAP: u8 = 0x10;
    pub const UNMAP: u8 = 0x11;
    pub const FETCH: u8 = 0x12;
    pub const WRITE_BACK: u8 = 0x13;
    pub const SYNC: u8 = 0x14;
    pub const RELEASE: u8 = 0x15;
    pub const REVALIDATE: u8 = 0x16;
    pub const SET_LEN: u8 = 0x17;
    pub const ATOMIC: u8 = 0x18;
    pub const INVALIDATE_ACK: u8 = 0x20;
    pub const RECALL_ACK: u8 = 0x21;

    pub const CHALLENGE: u8 = 0x81;
    pub const WELCOME: u8 = 0x82;
    pub const PONG: u8 = 0x83;
    pub const GOODBYE: u8 = 0x84;
    pub const ERROR: u8 = 0x85;
    pub const MAPPED: u8 = 0x90;
    pub const UNMAPPED: u8 = 0x91;
    pub const PAGES: u8 = 0x92;
    pub const WRITE_ACK: u8 = 0x93;
    pub const SYNCED: u8 = 0x94;
    pub const REVALIDATED: u8 = 0x96;
    pub const LEN_SET: u8 = 0x97;
    pub const ATOMIC_DONE: u8 = 0x98;
    pub const INVALIDATE: u8 = 0xA0;
    pub const RECALL: u8 = 0xA1;
}

/// One frame's content.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Message {
    // client -> server
    Hello(Hello),
    Authenticate(Authenticate),
    Ping(Ping),
    Bye,
    Map(Map),
    Unmap(Unmap),
    Fetch(Fetch),
    WriteBack(WriteBack),
    Sync(Sync),
    Release(Release),
    Revalidate(Revalidate),
    SetLen(SetLen),
    Atomic(Atomic),
    InvalidateAck(InvalidateAck),
    RecallAck(RecallAck),
    // server -> client
    Challenge(Challenge),
    Welcome(Welcome),
    Pong(Pong),
    Goodbye(Goodbye),
    Error(ErrorMsg),
    Mapped(Mapped),
    Unmapped(Unmapped),
    Pages(Pages),
    WriteAck(WriteAck),
    Synced(Synced),
    Revalidated(Revalidated),
    LenSet(LenSet),
    AtomicDone(AtomicDone),
    Invalidate(Invalidate),
    Recall(Recall),
}

impl Message {
    /// The type byte of this message.
    pub fn kind(&self) -> u8 {
        use kind::*;
        match self {
            Message::Hello(_) => HELLO,
            Message::Authenticate(_) => AUTHENTICATE,
            Message::Ping(_) => PING,
            Message::Bye => BYE,
            Message::Map(_) => MAP,
            Message::Unmap(_) => UNMAP,
            Message::Fetch(_) => FETCH,
            Message::WriteBack(_) => WRITE_BACK,
            Message::Sync(_) => SYNC,
            Message::Release(_) => RELEASE,
            Message::Revalidate(_) => REVALIDATE,
            Message::SetLen(_) => SET_LEN,
            Message::Atomic(_) => ATOMIC,
            Message::InvalidateAck(_) => INVALIDATE_ACK,
            Message::RecallAck(_) => RECALL_ACK,
            Message::Challenge(_) => CHALLENGE,
            Message::Welcome(_) => WELCOME,
            Message::Pong(_) => PONG,
            Message::Goodbye(_) => GOODBYE,
            Message::Error(_) => ERROR,
            Message::Mapped(_) => MAPPED,
            Message::Unmapped(_) => UNMAPPED,
            Message::Pages(_) => PAGES,
            Message::WriteAck(_) => WRITE_ACK,
            Message::Synced(_) => SYNCED,
            Message::Revalidated(_) => REVALIDATED,
            Message::LenSet(_) => LEN_SET,
            Message::AtomicDone(_) => ATOMIC_DONE,
            Message::Invalidate(_) => INVALIDATE,
            Message::Recall(_) => RECALL,
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Authenticate(_) => "Authenticate",
            Message::Ping(_) => "Ping",
            Message::Bye => "Bye",
            Message::Map(_) => "Map",
            Message::Unmap(_) => "Unmap",
            Message::Fetch(_) => "Fetch",
            Message::WriteBack(_) => "WriteBack",
            Message::Sync(_) => "Sync",
            Message::Release(_) => "Release",
            Message::Revalidate(_) => "Revalidate",
            Message::SetLen(_) => "SetLen",
            Message::Atomic(_) => "Atomic",
            Message::InvalidateAck(_) => "InvalidateAck",
            Message::RecallAck(_) => "RecallAck",
            Message::Challenge(_) => "Challenge",
            Message::Welcome(_) => "Welcome",
            Message::Pong(_) => "Pong",
            Message::Goodbye(_) => "Goodbye",
            Message::Error(_) => "Error",
            Message::Mapped(_) => "Mapped",
            Message::Unmapped(_) => "Unmapped",
            Message::Pages(_) => "Pages",
            Message::WriteAck(_) => "WriteAck",
            Message::Synced(_) => "Synced",
            Message::Revalidated(_) => "Revalidated",
            Message::LenSet(_) => "LenSet",
            Message::AtomicDone(_) => "AtomicDone",
            Message::Invalidate(_) => "Invalidate",
            Message::Recall(_) => "Recall",
        }
    }
}

/// Where a session should resume, carried in [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Resume {
    pub session: SessionId,
    pub token: ResumeToken,
    pub epoch: u64,
}

/// First frame of every connection, client to server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the client speaks ([`super::PROTOCOL_VERSION`]).
    pub version: u16,
    /// The largest frame the client accepts.
    pub max_frame: u32,
    /// Fresh random bytes for the authentication proof.
    pub client_nonce: Nonce,
    /// The client's name in the server's access list; empty when the server
    /// does not authenticate.
    pub client_name: Bytes,
    /// The session to resume, if any.
    pub resume: Option<Resume>,
}

/// The client's proof that it knows its secret: HMAC-SHA256 over the nonces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticate {
    /// See `docs/PROTOCOL.md`, "Authentication".
    pub proof: [u8; 32],
}

/// Lease renewal request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ping {
    /// Echoed in the [`Pong`].
    pub nonce: u64,
}

/// Flags of a [`Map`] request.
#[allow(missing_docs)]
pub mod map_flags {
    pub const WRITE: u8 = 0x01;
    pub const CREATE: u8 = 0x02;
}

/// Map `[offset, offset + len)` of the file at `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Map {
    pub req: ReqId,
    /// [`map_flags`].
    pub flags: u8,
    pub offset: u64,
    pub len: u64,
    /// Relative to the export root, `/`-separated.
    pub path: Bytes,
}

/// End a mapping; the session keeps only pages its other mappings cover.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Unmap {
    pub req: ReqId,
    pub mapping: WireMappingId,
}

/// Flags of a [`Fetch`] request.
#[allow(missing_docs)]
pub mod fetch_flags {
    /// Ask for exclusive (write) ownership; without it, a shared copy.
    pub const EXCLUSIVE: u8 = 0x01;
    /// Send page data even where the session already holds the page.
    pub const WANT_DATA: u8 = 0x02;
    /// Never send page data: the client overwrites every byte of every page
    /// (exclusive fetches only).
    pub const OVERWRITE: u8 = 0x04;
}

/// Obtain pages `[first_page, first_page + count)` in shared or exclusive
/// state. The reply is one [`Pages`] frame.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Fetch {
    pub req: ReqId,
    pub mapping: WireMappingId,
    pub first_page: PageNo,
    pub count: u32,
    /// [`fetch_flags`].
    pub flags: u8,
}

/// A run of bytes inside one page.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct PagePatch {
    pub page: PageNo,
    /// Offset inside the page.
    pub offset: u32,
    pub data: Bytes,
}

/// Dirty data of pages the session owns; the session keeps ownership.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct WriteBack {
    pub req: ReqId,
    pub mapping: WireMappingId,
    pub patches: Vec<PagePatch>,
}

/// Make every byte of the mapping's file durable (fsync).
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Sync {
    pub req: ReqId,
    pub mapping: WireMappingId,
}

/// The client drops clean pages from its cache. No reply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Release {
    pub file: FileHandle,
    pub first_page: PageNo,
    pub count: u32,
}

/// A cached page and the version the client holds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct PageVersion {
    pub page: PageNo,
    pub version: Version,
}

/// After a lost session: which of these cached pages are still current? The
/// current ones become shared copies of the new session.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Revalidate {
    pub req: ReqId,
    pub mapping: WireMappingId,
    pub pages: Vec<PageVersion>,
}

/// Set the length of the file at `path`; with `create`, make it first.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SetLen {
    pub req: ReqId,
    pub create: bool,
    pub len: u64,
    pub path: Bytes,
}

/// An atomic operation on one aligned little-endian 64-bit word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomicOp {
    /// Add (wrapping); the reply carries the previous value.
    FetchAdd(u64),
    /// Store; the reply carries the previous value.
    Swap(u64),
    /// Store `new` if the word equals `expected`; the reply carries the
    /// previous value and whether it stored.
    CompareExchange {
        /// The value the word must hold.
        expected: u64,
        /// The value stored when it does.
        new: u64,
    },
}

/// Run an [`AtomicOp`] at the server on the word at `offset` of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Atomic {
    pub req: ReqId,
    pub mapping: WireMappingId,
    /// File offset, a multiple of 8.
    pub offset: u64,
    pub op: AtomicOp,
}

/// The client dropped the pages of an [`Invalidate`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct InvalidateAck {
    pub rev: RevId,
}

/// The client gave up the pages of a [`Recall`], with their dirty data.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RecallAck {
    pub rev: RevId,
    pub patches: Vec<PagePatch>,
}

/// The server asks for an [`Authenticate`] proof.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Challenge {
    pub server_nonce: Nonce,
}

/// What became of the session a [`Hello`] asked to resume.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ResumeStatus {
    /// The Hello asked for no session: this is a new one.
    New,
    /// The session lives on; requests in flight may be sent again.
    Resumed,
    /// The server restarted (another epoch): the session and every page
    /// version of the old epoch are gone. This is a new session.
    ServerRestarted,
    /// The session's lease ran out and the server ended it. Page versions
    /// are still meaningful. This is a new session.
    Expired,
}

impl ResumeStatus {
    /// The byte on the wire.
    pub fn to_u8(self) -> u8 {
        match self {
            ResumeStatus::New => 0,
            ResumeStatus::Resumed => 1,
            ResumeStatus::ServerRestarted => 2,
            ResumeStatus::Expired => 3,
        }
    }

    /// The status for a byte from the wire.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => ResumeStatus::New,
            1 => ResumeStatus::Resumed,
            2 => ResumeStatus::ServerRestarted,
            3 => ResumeStatus::Expired,
            _ => return None,
        })
    }
}

/// The handshake is done.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Welcome {
    pub version: u16,
    pub status: ResumeStatus,
    pub session: SessionId,
    pub token: ResumeToken,
    pub epoch: u64,
    pub page_size: u32,
    /// Lease length in milliseconds.
    pub lease_ms: u32,
    /// The largest frame the server accepts.
    pub max_frame: u32,
    pub max_pages_per_request: u32,
    pub max_inflight: u32,
    pub max_mappings: u32,
    /// Bit 0: the session may write.
    pub rights: u8,
    /// The highest revocation whose acknowledgement the server has processed.
    pub rev_acked: RevId,
    /// The server's proof that it knows the client's secret (zeros when the
    /// server does not authenticate).
    pub server_proof: [u8; 32],
}

/// Reply to a [`Ping`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Pong {
    pub nonce: u64,
    /// Whether the ping renewed the lease. It does not while a revocation to
    /// the session is unanswered.
    pub renewed: bool,
    /// The highest revocation whose acknowledgement the server has processed.
    pub rev_acked: RevId,
}

/// The server is ending the connection on purpose (shutdown).
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Goodbye {
    pub code: ErrorCode,
    pub message: Bytes,
}

/// A request failed, or (with `req` 0) the connection failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ErrorMsg {
    /// The failed request, or `ReqId(0)` for the connection.
    pub req: ReqId,
    pub code: ErrorCode,
    /// The server closes the connection after a fatal error.
    pub fatal: bool,
    /// A sentence a person can act on.
    pub message: Bytes,
}

/// Reply to [`Map`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Mapped {
    pub req: ReqId,
    pub mapping: WireMappingId,
    pub file: FileHandle,
    pub file_len: u64,
}

/// Reply to [`Unmap`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Unmapped {
    pub req: ReqId,
}

/// One page of a [`Pages`] reply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct PageGrant {
    pub version: Version,
    /// `page_size` bytes, or `None` when the client's copy is current.
    pub data: Option<Bytes>,
}

/// Reply to [`Fetch`]: the pages are now held in the granted state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Pages {
    pub req: ReqId,
    pub file: FileHandle,
    pub first_page: PageNo,
    pub exclusive: bool,
    pub pages: Vec<PageGrant>,
}

/// Reply to [`WriteBack`]: the new version of each patched page, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct WriteAck {
    pub req: ReqId,
    pub versions: Vec<Version>,
}

/// Reply to [`Sync`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Synced {
    pub req: ReqId,
}

/// Reply to [`Revalidate`]: bit `i` (LSB first) says whether page `i` of the
/// request is current and now held shared.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Revalidated {
    pub req: ReqId,
    pub count: u32,
    pub valid: Bytes,
}

impl Revalidated {
    /// Whether entry `i` of the request was current.
    pub fn is_valid(&self, i: usize) -> bool {
        self.valid
            .get(i / 8)
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
    }
}

/// Reply to [`SetLen`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct LenSet {
    pub req: ReqId,
    pub len: u64,
}

/// Reply to [`Atomic`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct AtomicDone {
    pub req: ReqId,
    /// The word before the operation.
    pub previous: u64,
    /// False only for a compare-exchange that found another value.
    pub applied: bool,
}

/// Drop your shared copies of these pages and acknowledge.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Invalidate {
    pub rev: RevId,
    pub file: FileHandle,
    pub first_page: PageNo,
    pub count: u32,
}

/// Give back ownership of these pages with their dirty data; with
/// `downgrade`, keep a shared copy.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Recall {
    pub rev: RevId,
    pub file: FileHandle,
    pub first_page: PageNo,
    pub count: u32,
    pub downgrade: bool,
}
