//! The property both transports' public read and write APIs must keep,
//! whatever offsets and lengths they are given (up to u64::MAX): a call
//! succeeds exactly when its range lies in the mapping, with exactly the
//! bytes asked for, and otherwise fails with `out_of_range` (or says the
//! range is reversed, or the word misaligned), having allocated nothing for
//! it. Each transport's test runs the calls its own way (awaited, or
//! blocking) and checks them here.

#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use proptest::prelude::*;
use rmmap_core::client::OpError;

/// The file's length, and the mapped range in it (not page-aligned).
pub const FILE_LEN: u64 = 5 * 4096;
pub const BASE: u64 = 1000;
pub const LEN: u64 = 9000;

/// The file's contents: byte `at` is `at % 251`.
pub fn pattern(from: u64, n: u64) -> Vec<u8> {
    (from..from + n).map(|at| (at % 251) as u8).collect()
}

/// Offsets and lengths a careless or hostile caller passes.
pub fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0..=LEN + 16,
        1 => (1u64 << 32) - 2..(1u64 << 32) + 2,
        1 => Just(1_000_000_000_000u64),
        2 => u64::MAX - 16..=u64::MAX,
        1 => any::<u64>(),
    ]
}

/// Lengths of buffers the caller owns.
pub fn small() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..64, 4090u64..4200]
}

/// One call of the public API.
#[derive(Clone, Debug)]
pub enum Call {
    /// `Mapping::read_bytes`
    ReadBytes { offset: u64, len: u64 },
    /// `Mapping::read` into a buffer of `len` bytes
    Read { offset: u64, len: u64 },
    /// `Mapping::try_read`
    TryRead { offset: u64, len: u64 },
    /// `Mapping::write` of `len` bytes
    Write { offset: u64, len: u64 },
    /// `Mapping::write_bytes`
    WriteBytes { offset: u64, len: u64 },
    /// `Mapping::try_write`
    TryWrite { offset: u64, len: u64 },
    /// `Mapping::atomic` (a fetch-add of 0)
    Atomic { offset: u64 },
    /// `Client::map` of `start..end`
    Map { start: u64, end: u64 },
}

pub fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        (number(), number()).prop_map(|(offset, len)| Call::ReadBytes { offset, len }),
        (number(), small()).prop_map(|(offset, len)| Call::Read { offset, len }),
        (number(), small()).prop_map(|(offset, len)| Call::TryRead { offset, len }),
        (number(), small()).prop_map(|(offset, len)| Call::Write { offset, len }),
        (number(), small()).prop_map(|(offset, len)| Call::WriteBytes { offset, len }),
        (number(), small()).prop_map(|(offset, len)| Call::TryWrite { offset, len }),
        number().prop_map(|offset| Call::Atomic { offset }),
        (number(), number()).prop_map(|(start, end)| Call::Map { start, end }),
    ]
}

/// What a call came to.
#[derive(Debug)]
pub enum Outcome {
    Bytes(Result<Bytes, OpError>),
    Done(Result<(), OpError>),
    /// A `try_` call, and the buffer it filled (reads).
    Tried(Result<bool, OpError>, Option<Vec<u8>>),
    Atomic(Result<(u64, bool), OpError>),
    /// The new mapping's length.
    Mapped(Result<u64, OpError>),
}

pub fn in_range(offset: u64, len: u64) -> bool {
    offset.checked_add(len).is_some_and(|e| e <= LEN)
}

/// What is already there, so that writes leave the file as it was.
pub fn same_bytes(offset: u64, len: u64) -> Vec<u8> {
    match BASE.checked_add(offset) {
        Some(at) if in_range(offset, len) => pattern(at, len),
        _ => vec![0xee; len as usize],
    }
}

fn out_of_range<T: std::fmt::Debug>(r: &Result<T, OpError>) -> bool {
    matches!(r, Err(e) if e.kind() == "out_of_range")
}

/// Checks what `call` came to against the property.
pub fn check(call: &Call, outcome: Outcome) -> Result<(), TestCaseError> {
    match (call, outcome) {
        (Call::ReadBytes { offset, len } | Call::Read { offset, len }, Outcome::Bytes(r)) => {
            if in_range(*offset, *len) {
                let b = r.map_err(|e| TestCaseError::fail(format!("{offset}+{len}: {e}")))?;
                prop_assert_eq!(&b[..], &pattern(BASE + offset, *len)[..]);
            } else {
                prop_assert!(out_of_range(&r), "{offset}+{len}: {:?}", r.map(|b| b.len()));
            }
        }
        (Call::Write { offset, len } | Call::WriteBytes { offset, len }, Outcome::Done(r)) => {
            if in_range(*offset, *len) {
                prop_assert!(r.is_ok(), "{offset}+{len}: {:?}", r);
            } else {
                prop_assert!(out_of_range(&r), "{offset}+{len}: {:?}", r);
            }
        }
        (
            Call::TryRead { offset, len } | Call::TryWrite { offset, len },
            Outcome::Tried(r, buf),
        ) => {
            prop_assert_eq!(r.is_ok(), in_range(*offset, *len), "{:?}", r);
            prop_assert!(r.is_ok() || out_of_range(&r), "{:?}", r);
            if let (Ok(true), Some(buf)) = (&r, buf) {
                prop_assert_eq!(buf, pattern(BASE + offset, *len));
            }
        }
        (Call::Atomic { offset }, Outcome::Atomic(r)) => {
            if !in_range(*offset, 8) {
                prop_assert!(out_of_range(&r), "{offset}: {:?}", r);
            } else if (BASE + offset) % 8 != 0 {
                prop_assert!(matches!(r, Err(OpError::Misaligned(_))), "{:?}", r);
            } else {
                let word = u64::from_le_bytes(pattern(BASE + offset, 8).try_into().unwrap());
                prop_assert_eq!(r, Ok((word, true)));
            }
        }
        (Call::Map { start, end }, Outcome::Mapped(r)) => {
            if end < start {
                prop_assert_eq!(
                    r,
                    Err(OpError::ReversedRange {
                        start: *start,
                        end: *end
                    })
                );
            } else if *end <= FILE_LEN && start < end {
                prop_assert_eq!(r, Ok(end - start));
            } else {
                prop_assert!(matches!(r, Err(OpError::Server { .. })), "{:?}", r);
            }
        }
        (call, outcome) => {
            return Err(TestCaseError::fail(format!(
                "the test ran {call:?} into {outcome:?}"
            )));
        }
    }
    Ok(())
}
