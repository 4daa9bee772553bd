//! Every message of the protocol. The byte layouts are in `docs/PROTOCOL.md`
//! and in [`super::encode`] / [`super::decode`].

use bytes::Bytes;

use super::error_code::ErrorCode;
use super::ids::{
    FileHandle, Nonce, PageNo, ReqId, ResumeToken, RevId, SessionId, Version, WireMappingId,
};

/// The message type byte that follows the length prefix of every frame.
///
/// Client-to-server types lie in `0x01..=0x7f`, server-to-client types in
/// `0x80..=0xff` (docs/PROTOCOL.md, section 10).
pub mod kind {
    /// [`Hello`](super::Hello): the first frame of every connection.
    pub const HELLO: u8 = 0x01;
    /// [`Authenticate`](super::Authenticate): the answer to a challenge.
    pub const AUTHENTICATE: u8 = 0x02;
    /// [`Ping`](super::Ping): lease renewal.
    pub const PING: u8 = 0x03;
    /// `Bye`: the client ends its session.
    pub const BYE: u8 = 0x04;
    /// [`Map`](super::Map).
    pub const MAP: u8 = 0x10;
    /// [`Unmap`](super::Unmap).
    pub const UNMAP: u8 = 0x11;
    /// [`Fetch`](super::Fetch).
    pub const FETCH: u8 = 0x12;
    /// [`WriteBack`](super::WriteBack).
    pub const WRITE_BACK: u8 = 0x13;
    /// [`Sync`](super::Sync).
    pub const SYNC: u8 = 0x14;
    /// [`Release`](super::Release).
    pub const RELEASE: u8 = 0x15;
    /// [`Revalidate`](super::Revalidate).
    pub const REVALIDATE: u8 = 0x16;
    /// [`SetLen`](super::SetLen).
    pub const SET_LEN: u8 = 0x17;
    /// [`Atomic`](super::Atomic).
    pub const ATOMIC: u8 = 0x18;
    /// [`Refresh`](super::Refresh).
    pub const REFRESH: u8 = 0x19;
    /// [`InvalidateAck`](super::InvalidateAck).
    pub const INVALIDATE_ACK: u8 = 0x20;
    /// [`RecallAck`](super::RecallAck).
    pub const RECALL_ACK: u8 = 0x21;

    /// [`Challenge`](super::Challenge).
    pub const CHALLENGE: u8 = 0x81;
    /// [`Welcome`](super::Welcome): the handshake is done.
    pub const WELCOME: u8 = 0x82;
    /// [`Pong`](super::Pong).
    pub const PONG: u8 = 0x83;
    /// [`Goodbye`](super::Goodbye): the server shuts down.
    pub const GOODBYE: u8 = 0x84;
    /// [`ErrorMsg`](super::ErrorMsg).
    pub const ERROR: u8 = 0x85;
    /// [`Mapped`](super::Mapped).
    pub const MAPPED: u8 = 0x90;
    /// [`Unmapped`](super::Unmapped).
    pub const UNMAPPED: u8 = 0x91;
    /// [`Pages`](super::Pages).
    pub const PAGES: u8 = 0x92;
    /// [`WriteAck`](super::WriteAck).
    pub const WRITE_ACK: u8 = 0x93;
    /// [`Synced`](super::Synced).
    pub const SYNCED: u8 = 0x94;
    /// [`Revalidated`](super::Revalidated).
    pub const REVALIDATED: u8 = 0x96;
    /// [`LenSet`](super::LenSet).
    pub const LEN_SET: u8 = 0x97;
    /// [`AtomicDone`](super::AtomicDone).
    pub const ATOMIC_DONE: u8 = 0x98;
    /// [`Invalidate`](super::Invalidate).
    pub const INVALIDATE: u8 = 0xA0;
    /// [`Recall`](super::Recall).
    pub const RECALL: u8 = 0xA1;
}

/// One frame's content. The variants are listed in type-byte order: client
/// to server first, then server to client (see [`kind`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    // client -> server
    /// The first frame of every connection.
    Hello(Hello),
    /// The answer to a [`Challenge`].
    Authenticate(Authenticate),
    /// Lease renewal; answered by a [`Pong`].
    Ping(Ping),
    /// The client ends its session (after writing back everything dirty),
    /// or confirms a [`Goodbye`]. No reply: the server closes.
    Bye,
    /// Map a byte range of a file.
    Map(Map),
    /// End a mapping.
    Unmap(Unmap),
    /// Obtain pages, shared or exclusive.
    Fetch(Fetch),
    /// Send dirty bytes of owned pages, keeping ownership.
    WriteBack(WriteBack),
    /// Make a file durable.
    Sync(Sync),
    /// Drop clean pages (no reply).
    Release(Release),
    /// Have cached copies vouched for by version.
    Revalidate(Revalidate),
    /// Set a file's length.
    SetLen(SetLen),
    /// An atomic operation on a word, at the server.
    Atomic(Atomic),
    /// A shared fetch that leaves out the pages the client's copies match.
    Refresh(Refresh),
    /// The answer to an [`Invalidate`].
    InvalidateAck(InvalidateAck),
    /// The answer to a [`Recall`], with the dirty data.
    RecallAck(RecallAck),
    // server -> client
    /// The server authenticates the client.
    Challenge(Challenge),
    /// The handshake is done.
    Welcome(Welcome),
    /// The answer to a [`Ping`].
    Pong(Pong),
    /// The server shuts down.
    Goodbye(Goodbye),
    /// A request or the connection failed.
    Error(ErrorMsg),
    /// The answer to a [`Map`].
    Mapped(Mapped),
    /// The answer to an [`Unmap`].
    Unmapped(Unmapped),
    /// The answer to a [`Fetch`] or a [`Refresh`].
    Pages(Pages),
    /// The answer to a [`WriteBack`].
    WriteAck(WriteAck),
    /// The answer to a [`Sync`].
    Synced(Synced),
    /// The answer to a [`Revalidate`].
    Revalidated(Revalidated),
    /// The answer to a [`SetLen`].
    LenSet(LenSet),
    /// The answer to an [`Atomic`].
    AtomicDone(AtomicDone),
    /// Drop shared copies.
    Invalidate(Invalidate),
    /// Give back ownership (and dirty data).
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
            Message::Refresh(_) => REFRESH,
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
            Message::Refresh(_) => "Refresh",
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

/// Where a session should resume, carried in [`Hello`]: the fields of the
/// [`Welcome`] that began it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The session to resume.
    pub session: SessionId,
    /// Its resume token: proof that the client owns it.
    pub token: ResumeToken,
    /// The epoch of the server run it belongs to; another epoch means the
    /// server restarted and the session is gone.
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

/// Flags of a [`Map`] request; other bits must be zero.
pub mod map_flags {
    /// Map read-write (the session needs write rights).
    pub const WRITE: u8 = 0x01;
    /// Create a missing file and extend a short one (with zeros) to cover the
    /// range (the session needs write rights; without [`WRITE`] the
    /// mapping itself is read-only).
    pub const CREATE: u8 = 0x02;
}

/// Map `[offset, offset + len)` of the file at `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Map {
    /// The request's number.
    pub req: ReqId,
    /// [`map_flags`].
    pub flags: u8,
    /// First byte of the range in the file.
    pub offset: u64,
    /// Length of the range, at least 1.
    pub len: u64,
    /// Relative to the export root, `/`-separated.
    pub path: Bytes,
}

/// End a mapping; the session keeps only pages its other mappings cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmap {
    /// The request's number.
    pub req: ReqId,
    /// The mapping to end.
    pub mapping: WireMappingId,
}

/// Flags of a [`Fetch`] request; other bits must be zero.
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
pub struct Fetch {
    /// The request's number.
    pub req: ReqId,
    /// The mapping the pages are fetched through; they must lie within it.
    pub mapping: WireMappingId,
    /// The first page, counted from the start of the file.
    pub first_page: PageNo,
    /// How many pages, 1 to the session's `max_pages_per_request`.
    pub count: u32,
    /// [`fetch_flags`].
    pub flags: u8,
}

/// A run of bytes inside one page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PagePatch {
    /// The page, counted from the start of the file.
    pub page: PageNo,
    /// Offset inside the page.
    pub offset: u32,
    /// The bytes; `offset + data.len()` is at most the page size.
    pub data: Bytes,
}

/// Dirty data of pages the session owns; the session keeps ownership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteBack {
    /// The request's number.
    pub req: ReqId,
    /// A read-write mapping of the session that covers every patch.
    pub mapping: WireMappingId,
    /// The bytes, at most 65,535 patches.
    pub patches: Vec<PagePatch>,
}

/// Make every byte the session wrote to the mapping's file durable (fsync).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sync {
    /// The request's number.
    pub req: ReqId,
    /// A mapping of the file to sync.
    pub mapping: WireMappingId,
}

/// The client drops clean pages from its cache. No reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// The file, by the handle its [`Mapped`] named.
    pub file: FileHandle,
    /// The first page dropped.
    pub first_page: PageNo,
    /// How many pages; pages the session does not hold are skipped.
    pub count: u32,
}

/// A cached page and the version the client holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageVersion {
    /// The page, counted from the start of the file.
    pub page: PageNo,
    /// The version the cached copy had when it was granted.
    pub version: Version,
}

/// After a lost session: which of these cached pages are still current? The
/// current ones become shared copies of the new session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revalidate {
    /// The request's number.
    pub req: ReqId,
    /// The mapping the pages lie in.
    pub mapping: WireMappingId,
    /// The cached pages and their versions.
    pub pages: Vec<PageVersion>,
}

/// What identifies the contents of a page: the first 16 bytes of the
/// SHA-256 of its `page_size` bytes ([`PageDigest::of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageDigest(pub [u8; 16]);

impl PageDigest {
    /// The digest of a page's bytes.
    pub fn of(page: &[u8]) -> PageDigest {
        use sha2::Digest as _;
        let full = sha2::Sha256::digest(page);
        let mut d = [0u8; 16];
        d.copy_from_slice(&full[..16]);
        PageDigest(d)
    }
}

/// A shared fetch of pages `[first_page, first_page + digests.len())` from a
/// client that has copies of them whose versions the server cannot vouch for
/// (they are from an earlier server run). The reply is one [`Pages`] frame,
/// as for a shared [`Fetch`] with `WANT_DATA`, except that a page whose
/// current bytes have the digest the client sent comes without data: the
/// client's copy is current, at the version the reply names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refresh {
    /// The request's number.
    pub req: ReqId,
    /// The mapping the pages are fetched through; they must lie within it.
    pub mapping: WireMappingId,
    /// The first page, counted from the start of the file.
    pub first_page: PageNo,
    /// The digest of the client's copy of each page, in order: 1 to the
    /// session's `max_pages_per_request` of them.
    pub digests: Vec<PageDigest>,
}

/// Set the length of the file at `path`; with `create`, make it first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetLen {
    /// The request's number.
    pub req: ReqId,
    /// Create the file if it is missing.
    pub create: bool,
    /// The new length in bytes.
    pub len: u64,
    /// Relative to the export root, `/`-separated.
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
pub struct Atomic {
    /// The request's number.
    pub req: ReqId,
    /// A read-write mapping that covers the word.
    pub mapping: WireMappingId,
    /// File offset, a multiple of 8.
    pub offset: u64,
    /// What to do with the word.
    pub op: AtomicOp,
}

/// The client dropped the pages of an [`Invalidate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidateAck {
    /// The invalidation answered.
    pub rev: RevId,
}

/// The client gave up the pages of a [`Recall`], with their dirty data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecallAck {
    /// The recall answered.
    pub rev: RevId,
    /// The dirty bytes of the recalled pages (none if the client had none).
    pub patches: Vec<PagePatch>,
}

/// The server asks for an [`Authenticate`] proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Fresh random bytes the proof covers.
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
pub struct Welcome {
    /// Protocol version the server speaks (the client's).
    pub version: u16,
    /// New, resumed, or why the asked-for session is not.
    pub status: ResumeStatus,
    /// The session, to name when resuming.
    pub session: SessionId,
    /// The session's resume token (the same for the session's whole life).
    pub token: ResumeToken,
    /// This server run's epoch.
    pub epoch: u64,
    /// Page size in bytes, a power of two from 512 to 1 MiB.
    pub page_size: u32,
    /// Lease length in milliseconds.
    pub lease_ms: u32,
    /// The largest frame the server accepts.
    pub max_frame: u32,
    /// Most pages one [`Fetch`] may ask for: the server's limit, lowered so
    /// that a [`Pages`] reply fits the client's `max_frame`.
    pub max_pages_per_request: u32,
    /// Most requests of the session in progress (and the size of the
    /// server's memory of replies).
    pub max_inflight: u32,
    /// Most mappings the session may have.
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
pub struct Pong {
    /// The ping's nonce.
    pub nonce: u64,
    /// Whether the ping renewed the lease. It does not while a revocation to
    /// the session is unanswered.
    pub renewed: bool,
    /// The highest revocation whose acknowledgement the server has processed.
    pub rev_acked: RevId,
}

/// The server is ending the connection on purpose (shutdown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Goodbye {
    /// [`ErrorCode::ShuttingDown`] when every byte the client handed over is
    /// on the disk, [`ErrorCode::Io`] when some files could not be written.
    pub code: ErrorCode,
    /// A sentence for people (naming the files that could not be written).
    pub message: Bytes,
}

/// A request failed, or (with `req` 0) the connection failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorMsg {
    /// The failed request, or `ReqId(0)` for the connection.
    pub req: ReqId,
    /// What kind of failure.
    pub code: ErrorCode,
    /// The server closes the connection after a fatal error.
    pub fatal: bool,
    /// A sentence a person can act on.
    pub message: Bytes,
}

/// Reply to [`Map`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// The request answered.
    pub req: ReqId,
    /// The new mapping, to name in requests through it.
    pub mapping: WireMappingId,
    /// The mapped file's handle in this session (shared by every mapping
    /// of the same underlying file).
    pub file: FileHandle,
    /// The file's length once mapped.
    pub file_len: u64,
}

/// Reply to [`Unmap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmapped {
    /// The request answered.
    pub req: ReqId,
}

/// One page of a [`Pages`] reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageGrant {
    /// The page's version at the server.
    pub version: Version,
    /// `page_size` bytes, or `None` when the client's copy is current (or
    /// it asked for none: `OVERWRITE`).
    pub data: Option<Bytes>,
}

/// Reply to [`Fetch`]: the pages are now held in the granted state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pages {
    /// The request answered.
    pub req: ReqId,
    /// The file's handle in this session.
    pub file: FileHandle,
    /// The request's first page.
    pub first_page: PageNo,
    /// Whether the pages are now owned (otherwise shared).
    pub exclusive: bool,
    /// One grant per page asked for, in order.
    pub pages: Vec<PageGrant>,
}

/// Reply to [`WriteBack`]: the new version of each patched page, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteAck {
    /// The request answered.
    pub req: ReqId,
    /// One version per patch of the request.
    pub versions: Vec<Version>,
}

/// Reply to [`Sync`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Synced {
    /// The request answered.
    pub req: ReqId,
}

/// Reply to [`Revalidate`]: bit `i` (LSB first) says whether page `i` of the
/// request is current and now held shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revalidated {
    /// The request answered.
    pub req: ReqId,
    /// How many pages the request named.
    pub count: u32,
    /// `ceil(count / 8)` bytes of bits; see [`Revalidated::is_valid`].
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
pub struct LenSet {
    /// The request answered.
    pub req: ReqId,
    /// The file's length now.
    pub len: u64,
}

/// Reply to [`Atomic`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AtomicDone {
    /// The request answered.
    pub req: ReqId,
    /// The word before the operation.
    pub previous: u64,
    /// False only for a compare-exchange that found another value.
    pub applied: bool,
}

/// Drop your shared copies of these pages and acknowledge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalidate {
    /// The revocation's number, to name in the [`InvalidateAck`].
    pub rev: RevId,
    /// The file's handle in this session.
    pub file: FileHandle,
    /// The first page.
    pub first_page: PageNo,
    /// How many pages.
    pub count: u32,
}

/// Give back ownership of these pages with their dirty data; with
/// `downgrade`, keep a shared copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recall {
    /// The revocation's number, to name in the [`RecallAck`].
    pub rev: RevId,
    /// The file's handle in this session.
    pub file: FileHandle,
    /// The first page.
    pub first_page: PageNo,
    /// How many pages.
    pub count: u32,
    /// Keep a clean shared copy (otherwise drop every copy).
    pub downgrade: bool,
}
