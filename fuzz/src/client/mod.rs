//! The `client` target: one [`Client`] facing a scripted server that the
//! input controls, with application commands and time in between.
//!
//! The scripted server can behave: it answers the handshake with a realistic
//! `Welcome` (and, when the client has a secret, a `Challenge` and a correct
//! proof), renews the lease, and replies to the requests the client really
//! sent with well-formed `Mapped`, `Pages`, `WriteAck`, ... frames, so the
//! client reaches its deep states (a warm cache, exclusive pages, write-backs
//! in flight, recalls, resumption). It can also misbehave in every way: wrong
//! replies, replies twice, errors, revocations for pages it never granted,
//! arbitrary frames, junk, disconnects.
//!
//! Checked after every action: nothing panicked, and every byte the client
//! wrote decodes as a client-to-server frame.
//!
//! The parts: the input grammar and the run (here), the harness that drives
//! the client and its commands (`harness.rs`), the scripted server that
//! answers it (`script.rs`), turning actions back into bytes (`unparse.rs`),
//! and the seed stories (`stories.rs`).
//!
//! [`Client`]: rmmap_core::client::Client

mod harness;
mod script;
mod stories;
mod unparse;

use arbitrary::{Arbitrary, Unstructured};
use rmmap_core::protocol::{AtomicOp, Message};

use harness::Harness;

/// Paths the application maps.
const PATHS: &[&str] = &["a", "b", "dir/c", "a", "", "../x"];

/// The client's name and secret when the setup asks for authentication.
const NAME: &str = "alice";
const SECRET: &[u8] = &[0xA1; 16];

/// The whole input: how things are set up, then what happens.
#[derive(Arbitrary, Debug)]
pub struct ClientInput {
    /// Bit 0: the client has a secret (the server must authenticate).
    /// Bits 1-3 not all set: the server answers handshakes by itself.
    /// Bits 4-6 not all set: the server answers pings by itself.
    /// Bit 7: 4 KiB pages (else 512 B).
    setup: u8,
    /// What happens, in order.
    actions: Vec<Action>,
}

/// One step.
#[derive(Arbitrary, Debug, PartialEq)]
enum Action {
    /// Answer the handshake on the current connection.
    Welcome { status: u8, tweak: u8 },
    /// Reply to one request in flight: properly, with an error, wrongly, or
    /// twice, as `how` says.
    Reply { which: u8, how: u8, seed: u16 },
    /// Reply properly to every request in flight.
    ReplyAll { seed: u16 },
    /// Push an invalidation or recall of pages of a file the client mapped.
    Revoke {
        recall: bool,
        file: u8,
        first: u8,
        count: u8,
        downgrade: bool,
    },
    /// Answer the client's ping.
    Pong { renewed: bool },
    /// Any frame at all.
    Frame { message: Message },
    /// Raw bytes.
    Junk { bytes: Vec<u8> },
    /// An application command.
    Command(Command),
    /// Time passes by this many milliseconds.
    Advance { ms: u16 },
    /// Time passes to the client's next timeout.
    AdvanceToTimeout,
    /// The connection breaks.
    Disconnect,
    /// Whether the next connection attempts succeed.
    Reachable { on: bool },
}

/// What the application asks of the client.
#[derive(Arbitrary, Debug, Clone, PartialEq)]
enum Command {
    Map {
        path: u8,
        offset: u16,
        len: u16,
        write: bool,
        create: bool,
    },
    Read {
        mapping: u8,
        offset: u16,
        len: u16,
    },
    Write {
        mapping: u8,
        offset: u16,
        len: u16,
        fill: u8,
    },
    TryRead {
        mapping: u8,
        offset: u16,
        len: u16,
    },
    TryWrite {
        mapping: u8,
        offset: u16,
        len: u16,
        fill: u8,
    },
    Sync {
        mapping: u8,
    },
    Unmap {
        mapping: u8,
    },
    SetLen {
        path: u8,
        len: u16,
        create: bool,
    },
    Atomic {
        mapping: u8,
        offset: u16,
        op: AtomicOp,
    },
    Close,
}

/// Runs one input; panics on any finding.
pub fn run(data: &[u8]) {
    let Ok(input) = ClientInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut h = Harness::new(input.setup);
    h.pump();
    for action in &input.actions {
        if crate::tracing() {
            eprintln!("[{:?}] {action:?}", h.now);
        }
        h.act(action);
        h.pump();
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
            let parsed = ClientInput::arbitrary_take_rest(Unstructured::new(&bytes)).unwrap();
            assert_eq!(parsed.setup, setup, "{name}");
            assert_eq!(parsed.actions, actions, "{name}");
        }
    }
}
