//! Byte-level checks of the wire codec, shared by the `decode_frame` and
//! `roundtrip` targets and by `core/tests/fuzz_regressions.rs` (which
//! includes this file with `#[path]`, so that plain `cargo test` replays the
//! corpus through exactly these checks). It therefore uses only `bytes` and
//! `rmmap_core`, nothing of the fuzz crate.

use bytes::{Bytes, BytesMut};
use rmmap_core::protocol::{
    ChunkQueue, DecodeError, HANDSHAKE_MAX_FRAME, HARD_MAX_FRAME, Message, check_frame,
    decode_body, decode_frame,
};

/// What decoding a byte stream gave: the frames, then how it stopped.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    /// The frames taken off the front, in order.
    pub messages: Vec<Message>,
    /// `None`: the rest is an incomplete frame (or nothing).
    pub error: Option<DecodeError>,
}

/// The `decode_frame` target. Arbitrary bytes, as one stream of frames:
///
/// * decoding never panics;
/// * every frame accepted re-encodes to exactly the bytes it consumed
///   ([`decode_stream`]);
/// * fed one byte at a time, the decoder gives the same frames and the same
///   error as fed everything at once (`Ok(None)` consumes nothing);
/// * under the handshake limit it accepts a prefix of the same frames and
///   stops only with `FrameTooLarge` where the large limit went on.
pub fn decode_frame_checks(data: &[u8]) {
    let whole = decode_stream(data, HARD_MAX_FRAME);
    assert_eq!(
        decode_byte_by_byte(data, HARD_MAX_FRAME),
        whole,
        "streaming decode differs from whole-buffer decode"
    );

    let small = decode_stream(data, HANDSHAKE_MAX_FRAME);
    let k = small.messages.len();
    assert!(
        k <= whole.messages.len(),
        "a smaller limit accepted more frames"
    );
    assert_eq!(
        small.messages[..],
        whole.messages[..k],
        "a smaller limit changed the frames"
    );
    if k < whole.messages.len() || small.error != whole.error {
        assert!(
            matches!(small.error, Some(DecodeError::FrameTooLarge { len, max }) if len > max && max == HANDSHAKE_MAX_FRAME),
            "the limit alone should explain the difference: {:?} vs {:?}",
            small.error,
            whole.error,
        );
    }

    // The same bytes as a frame body without its length prefix.
    body_checks(data);
}

/// Decodes frames off the front of `data` until the decoder needs more bytes
/// or fails, checking each accepted frame against the bytes it consumed.
pub fn decode_stream(data: &[u8], max: u32) -> Decoded {
    let mut buf = BytesMut::from(data);
    let mut messages = Vec::new();
    loop {
        let before = Bytes::copy_from_slice(&buf);
        let checked = check_frame(&before, max);
        match decode_frame(&mut buf, max) {
            Ok(Some(m)) => {
                let used = before.len() - buf.len();
                assert_eq!(
                    checked,
                    Ok(Some(used)),
                    "check_frame disagrees with decode_frame"
                );
                assert_reencodes(&m, &before[..used]);
                messages.push(m);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before.len(), "Ok(None) must consume nothing");
                assert_eq!(checked, Ok(None), "check_frame disagrees with decode_frame");
                return Decoded {
                    messages,
                    error: None,
                };
            }
            Err(e) => {
                if let Err(c) = checked {
                    assert_eq!(c, e, "check_frame disagrees with decode_frame");
                }
                return Decoded {
                    messages,
                    error: Some(e),
                };
            }
        }
    }
}

/// The stream fed to the decoder one byte at a time, draining whole frames
/// after each byte, as a slow socket would.
fn decode_byte_by_byte(data: &[u8], max: u32) -> Decoded {
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    for &b in data {
        buf.extend_from_slice(&[b]);
        loop {
            match decode_frame(&mut buf, max) {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => break,
                Err(e) => {
                    return Decoded {
                        messages,
                        error: Some(e),
                    };
                }
            }
        }
    }
    Decoded {
        messages,
        error: None,
    }
}

/// `data` as a frame body (type byte first): if the decoder accepts it, the
/// encoder writes the same body back.
pub fn body_checks(data: &[u8]) {
    if let Ok(m) = decode_body(Bytes::copy_from_slice(data)) {
        let framed = m.to_bytes();
        assert_eq!(
            &framed[4..],
            data,
            "decode_body then encode changed the body of {}",
            m.name()
        );
        assert_eq!(
            &framed[..4],
            &(data.len() as u32).to_be_bytes(),
            "wrong length prefix for {}",
            m.name()
        );
    }
}

/// An accepted frame re-encodes to exactly `consumed`, by every encoder.
fn assert_reencodes(m: &Message, consumed: &[u8]) {
    let bytes = m.to_bytes();
    assert_eq!(
        &bytes[..],
        consumed,
        "decode then encode changed a {} frame",
        m.name()
    );
    assert_eq!(
        m.frame_len(),
        consumed.len(),
        "frame_len of {} is wrong",
        m.name()
    );
    assert_eq!(
        &chunked(m)[..],
        consumed,
        "ChunkQueue encoding of {} differs",
        m.name()
    );
}

/// The message encoded through a [`ChunkQueue`] (payloads queued by
/// reference), gathered back into one buffer.
fn chunked(m: &Message) -> Vec<u8> {
    let mut q = ChunkQueue::new();
    q.push_message(m);
    let queued = q.len();
    let mut out = Vec::with_capacity(queued);
    while let Some(c) = q.pop() {
        out.extend_from_slice(&c);
    }
    assert_eq!(
        out.len(),
        queued,
        "ChunkQueue::len disagrees with its chunks"
    );
    assert!(q.is_empty());
    out
}

/// A message, encoded, decodes to itself (`m` must be canonical): through
/// `to_bytes` + `decode_frame`, through `encode` into a `BytesMut`, and
/// through a [`ChunkQueue`].
pub fn message_round_trips(m: &Message) {
    let bytes = m.to_bytes();
    assert_eq!(
        bytes.len(),
        m.frame_len(),
        "frame_len of {} is wrong",
        m.name()
    );
    let mut other = BytesMut::new();
    m.encode(&mut other);
    assert_eq!(
        &other[..],
        &bytes[..],
        "encode and to_bytes differ for {}",
        m.name()
    );
    assert_eq!(
        &chunked(m)[..],
        &bytes[..],
        "ChunkQueue encoding of {} differs",
        m.name()
    );

    let mut buf = BytesMut::from(&bytes[..]);
    let back = match decode_frame(&mut buf, u32::MAX) {
        Ok(Some(back)) => back,
        other => panic!(
            "our own {} frame did not decode: {other:?}\n{m:?}",
            m.name()
        ),
    };
    assert!(
        buf.is_empty(),
        "decoding a {} frame left {} bytes",
        m.name(),
        buf.len()
    );
    assert_eq!(&back, m, "a {} frame does not decode to itself", m.name());
    assert_eq!(
        decode_body(bytes.slice(4..)).as_ref(),
        Ok(m),
        "decode_body disagrees for {}",
        m.name()
    );
}
