//! The `server` target: one [`Server`] over a [`MemStore`] with a few
//! files, fed an arbitrary sequence of actions from up to [`SLOTS`]
//! connections.
//!
//! Most connections start with a well-formed handshake (and answer the
//! authentication challenge when the server asks), requests name mappings,
//! file handles, pages and revocations the server really handed out, and
//! some clients answer every invalidation and recall as a good client would,
//! so the fuzzer reaches deep states: pages shared and owned by several
//! sessions, recalls waiting for acknowledgements, leases running out,
//! sessions resumed on new connections, shutdown with dirty pages. Mixed in:
//! raw junk, arbitrary messages, replayed and skipped request numbers,
//! clients that stop reading, disconnects and time jumps.
//!
//! After every action the output is drained through the drive loop and:
//! nothing panicked, [`Server::check_invariants`] holds, and every byte the
//! server wrote decodes as a server-to-client frame.
//!
//! The parts: the input grammar and the run (here), the harness that drives
//! the server and plays the clients (`harness.rs`), what a client knows of
//! its session (`view.rs`), turning actions back into bytes (`unparse.rs`),
//! and the seed stories (`stories.rs`).
//!
//! [`Server`]: rmmap_core::server::Server
//! [`Server::check_invariants`]: rmmap_core::server::Server::check_invariants
//! [`MemStore`]: rmmap_core::store::MemStore

mod harness;

use harness::Harness;
pub(crate) use harness::brief;
mod stories;
mod unparse;
mod view;

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use rmmap_core::path::ExportPath;
use rmmap_core::protocol::*;
use rmmap_core::server::{AccessList, ClientEntry, Rights, ServerConfig};

/// Connections open at once (more are refused by the fuzz harness, not the
/// server: a slot is reused once its connection is gone).
pub const SLOTS: usize = 4;

/// Paths a request may name: files that exist, one that is read-only at the
/// store, ones to create, and paths the server must refuse.
const PATHS: &[&[u8]] = &[
    b"a",
    b"dir/b",
    b"a",
    b"ro",
    b"new",
    b"dir/new",
    b"missing",
    b"../a",
    b"/a",
    b"a/",
    b"dir",
    b"",
    b"a\0b",
    b"dir/../a",
    b"\xff\xfe",
];

/// Names the handshake may use: two in the access list (one read-only and
/// confined to `dir`), one unknown.
const NAMES: &[(&str, &[u8])] = &[
    ("alice", &[0xA1; 16]),
    ("bob", &[0xB0; 16]),
    ("mallory", &[0x66; 16]),
];

/// The whole input: how the server is set up, then what happens.
#[derive(Arbitrary, Debug)]
pub struct ServerInput {
    /// Bit 0: authenticate clients. Bits 1-3 all set: read-only export.
    /// Bits 4-5 both set: 4 KiB pages (else 512 B). Bit 6: a restart grace
    /// period of one lease (else none).
    setup: u8,
    /// What happens, in order.
    actions: Vec<Action>,
}

/// One step.
#[derive(Arbitrary, Debug, PartialEq)]
enum Action {
    /// Open a connection in a free slot. `hello` picks the handshake:
    /// mostly a fresh well-formed Hello, sometimes resuming a session seen
    /// before (with its token, or a wrong one), a wrong version, or nothing.
    Connect {
        slot: u8,
        hello: u8,
        name: u8,
        answers_revocations: bool,
    },
    /// A structure-aware request over the slot's connection.
    Send { slot: u8, req: u8, request: Request },
    /// As `Send`, but only the first bytes of the frame go out now; the rest
    /// goes before whatever the slot sends next.
    SendPart {
        slot: u8,
        req: u8,
        request: Request,
        keep: u16,
    },
    /// Answer every revocation outstanding on the slot, as a good client.
    Answer { slot: u8 },
    /// Any message at all, canonical but meaningless.
    Message { slot: u8, message: Message },
    /// Raw bytes.
    Junk { slot: u8, bytes: Vec<u8> },
    /// The client stops (or resumes) reading what the server sends.
    Reading { slot: u8, on: bool },
    /// The connection drops.
    Disconnect { slot: u8 },
    /// Time passes by this many milliseconds.
    Advance { ms: u16 },
    /// Time passes to the server's next timeout.
    AdvanceToTimeout,
    /// The server begins its graceful shutdown.
    Shutdown,
}

/// A client request, with its references resolved against what the server
/// really said (an index picks among the mappings, handles, pages known).
#[derive(Arbitrary, Debug, PartialEq)]
enum Request {
    Map {
        path: u8,
        offset: u16,
        len: u16,
        flags: u8,
    },
    Unmap {
        mapping: u8,
    },
    Fetch {
        mapping: u8,
        first: u8,
        count: u8,
        flags: u8,
    },
    WriteBack {
        mapping: u8,
        patches: Vec<Patch>,
    },
    Sync {
        mapping: u8,
    },
    Release {
        file: u8,
        first: u8,
        count: u8,
    },
    Revalidate {
        mapping: u8,
        pages: Vec<(u8, u8)>,
    },
    SetLen {
        path: u8,
        len: u16,
        create: bool,
    },
    Atomic {
        mapping: u8,
        word: u8,
        op: AtomicOp,
    },
    Ping {
        nonce: u64,
    },
    Bye,
}

/// Dirty bytes for a write-back.
#[derive(Arbitrary, Debug, PartialEq)]
struct Patch {
    page: u8,
    offset: u16,
    len: u16,
    fill: u8,
}

/// Largest file the fuzz store holds. `MemStore` keeps every byte in a
/// `Vec`; a `SetLen` of petabytes once aborted the process on allocation
/// (`regressions/server/memstore-set-len-huge-allocation`, fixed in the core:
/// MemStore now refuses files over 1 GiB). Far smaller files keep each
/// execution fast and the fuzzer's memory flat, and test the same path: the
/// store refuses, as a full file system would.
const MAX_FILE_LEN: u64 = 1 << 20;

/// Runs one input; panics on any finding.
pub fn run(data: &[u8]) {
    let Ok(input) = ServerInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut h = Harness::new(input.setup);
    for action in &input.actions {
        if crate::tracing() {
            eprintln!("[{:?}] {action:?}", h.now);
        }
        h.act(action);
        h.pump();
        if let Err(e) = h.server.check_invariants() {
            panic!("directory invariant broken after {action:?}: {e}");
        }
    }
}

// Fields the core adds later take their defaults.
#[allow(clippy::needless_update)]
fn config(setup: u8) -> ServerConfig {
    let page_size: u32 = if setup & 0x30 == 0x30 { 4096 } else { 512 };
    let max_pages = 8;
    let access = (setup & 1 != 0).then(|| {
        let mut a = AccessList::default();
        a.clients.insert(
            NAMES[0].0.into(),
            ClientEntry {
                secret: NAMES[0].1.to_vec(),
                rights: Rights::full(),
            },
        );
        let scope = ExportPath::parse(b"dir").ok();
        a.clients.insert(
            NAMES[1].0.into(),
            ClientEntry {
                secret: NAMES[1].1.to_vec(),
                rights: Rights {
                    write: false,
                    scope,
                },
            },
        );
        a
    });
    ServerConfig {
        page_size,
        lease: Duration::from_secs(1),
        // Mostly a fresh export; sometimes a restarted server that grants no
        // write ownership for one lease.
        restart_grace: if setup & 0x40 != 0 {
            Some(Duration::from_secs(1))
        } else {
            Some(Duration::ZERO)
        },
        read_only: setup & 0x0e == 0x0e,
        access,
        max_frame: (max_pages * (page_size + 16) + 4096).max(16 << 10),
        max_pages_per_request: max_pages,
        max_inflight: 6,
        max_mappings: 6,
        max_sessions: 3,
        max_held_pages: 48,
        max_handshaking: 3,
        handshake_timeout: Duration::from_secs(2),
        output_soft_limit: 16 << 10,
        output_hard_limit: 64 << 10,
        ..ServerConfig::default()
    }
}

pub use stories::seeds;

#[cfg(test)]
mod tests {
    use super::stories::seed_inputs;
    use super::*;
    use crate::recipe::input;

    #[test]
    fn seeds_parse_back_to_their_stories() {
        for (name, setup, actions) in seed_inputs() {
            let bytes = input(setup, &actions);
            let parsed = ServerInput::arbitrary_take_rest(Unstructured::new(&bytes)).unwrap();
            assert_eq!(parsed.setup, setup, "{name}");
            assert_eq!(parsed.actions, actions, "{name}");
        }
    }
}
