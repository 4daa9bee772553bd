//! The wire protocol: framing, messages, encoding and decoding.
//!
//! `docs/PROTOCOL.md` is the specification; this module is its reference
//! implementation.

mod decode;
mod encode;
mod error_code;
mod ids;
mod message;
mod outbox;
mod recv;
mod recycle;

pub use decode::{DecodeError, check_frame, decode_body, decode_frame};
pub use encode::ChunkQueue;
pub use error_code::ErrorCode;
pub use ids::*;
pub use message::*;
pub use outbox::{MAX_IOVECS, Outbox};
pub use recv::{FRAME_RESERVE_MAX, FrameCursor, READ_CHUNK, RETAIN_LIMIT, RecvBuffer, frame_rest};
pub use recycle::Chunks;

/// The protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// No frame may be longer than this (the length prefix excluded), whatever
/// the peers negotiate: 64 MiB.
pub const HARD_MAX_FRAME: u32 = 64 << 20;

/// Frames before the handshake completes are at most this long.
pub const HANDSHAKE_MAX_FRAME: u32 = 4096;

/// Paths are at most this many bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// Client names are at most this many bytes.
pub const MAX_NAME_LEN: usize = 256;

#[cfg(test)]
mod tests;
