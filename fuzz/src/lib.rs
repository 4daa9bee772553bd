//! Fuzz targets for `rmmap-core`, as plain functions over the input bytes.
//!
//! Each `fuzz_targets/*.rs` binary is one line that calls a function here, so
//! the same code also runs on stable: `cargo test` in this directory replays
//! every file of `corpus/` and `regressions/` through it (see
//! `tests/replay.rs`), and `core/tests/fuzz_regressions.rs` replays them
//! through the byte-level checks of [`codec`] in the workspace's own
//! `cargo test`.
//!
//! | target | function | property |
//! |---|---|---|
//! | `decode_frame` | [`codec::decode_frame_checks`] | arbitrary bytes never panic the decoder; accepted frames re-encode exactly |
//! | `roundtrip` | [`roundtrip`] | arbitrary canonical messages encode and decode to themselves; accepted bytes re-encode exactly |
//! | `server` | [`server::run`] | the server survives any sequence of connections, frames and time, and its directory invariants hold |
//! | `client` | [`client::run`] | the client survives any server frames between its commands and time |

use arbitrary::{Arbitrary, Unstructured};
use rmmap_core::protocol::{HARD_MAX_FRAME, Message};

pub mod client;
pub mod codec;
mod recipe;
pub mod seeds;
pub mod server;

/// Names of the targets, as `cargo fuzz` knows them.
pub const TARGETS: &[&str] = &["decode_frame", "roundtrip", "server", "client"];

/// Most messages built from one input by [`roundtrip`].
const MAX_MESSAGES: usize = 64;

/// The `roundtrip` target. The input is read twice:
///
/// * as bytes: every frame the decoder accepts re-encodes to the bytes it
///   consumed, and so does the input taken as a bare frame body;
/// * as a recipe for arbitrary canonical messages ([`Message`]'s
///   `Arbitrary`, in `rmmap_core::fuzzing`): each encodes and decodes to
///   itself, through every encoder.
pub fn roundtrip(data: &[u8]) {
    codec::decode_stream(data, HARD_MAX_FRAME);
    codec::body_checks(data);
    let mut u = Unstructured::new(data);
    for _ in 0..MAX_MESSAGES {
        match Message::arbitrary(&mut u) {
            Ok(m) => codec::message_round_trips(&m),
            Err(_) => break,
        }
        if u.is_empty() {
            break;
        }
    }
}

/// Whether to print what an input does (`RMMAP_FUZZ_TRACE=1`), to see how
/// deep a seed or a crash goes.
pub(crate) fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("RMMAP_FUZZ_TRACE").is_some())
}

/// Runs `data` through the named target; `false` for an unknown name.
pub fn run_target(target: &str, data: &[u8]) -> bool {
    match target {
        "decode_frame" => codec::decode_frame_checks(data),
        "roundtrip" => roundtrip(data),
        "server" => server::run(data),
        "client" => client::run(data),
        _ => return false,
    }
    true
}
