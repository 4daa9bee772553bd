//! Every read and write command of the client checks its range before it
//! allocates anything or asks the server: with offsets and lengths drawn
//! near u64::MAX (and near the mapping's end), a command succeeds exactly
//! when the range lies in the mapping, with exactly the bytes asked for,
//! and fails with `OutOfRange` (or `ReversedRange`, `Misaligned`) otherwise.
//! A read that allocated before checking would abort this test process.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rmmap_core::client::{MapOptions, MappingId, OpError, Pending, Started};
use rmmap_core::harness::Cluster;
use rmmap_core::protocol::AtomicOp;
use rmmap_core::server::ServerConfig;
use rmmap_core::store::MemStore;

/// The file's length, and the mapped range in it (not page-aligned).
const FILE_LEN: u64 = 5 * 4096;
const BASE: u64 = 1000;
const LEN: u64 = 9000;

fn byte(at: u64) -> u8 {
    (at % 251) as u8
}

fn pattern(from: u64, n: u64) -> Vec<u8> {
    (from..from + n).map(byte).collect()
}

/// Offsets and lengths a careless or hostile caller passes.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0..=LEN + 16,
        1 => (1u64 << 32) - 2..(1u64 << 32) + 2,
        1 => Just(1_000_000_000_000u64),
        2 => u64::MAX - 16..=u64::MAX,
        1 => any::<u64>(),
    ]
}

/// Small lengths, for the commands whose caller owns the buffer.
fn small() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..64, 4090u64..4200]
}

#[derive(Clone, Debug)]
enum Call {
    Read { offset: u64, len: u64 },
    ReadBytes { offset: u64, len: u64 },
    ReadPages { offset: u64, len: u64 },
    ReadInto { offset: u64, len: u64 },
    TryRead { offset: u64, len: u64 },
    Write { offset: u64, len: u64 },
    WriteBytes { offset: u64, len: u64 },
    WriteFrom { offset: u64, len: u64 },
    TryWrite { offset: u64, len: u64 },
    Atomic { offset: u64 },
    Map { start: u64, end: u64 },
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        (number(), number()).prop_map(|(offset, len)| Call::Read { offset, len }),
        (number(), number()).prop_map(|(offset, len)| Call::ReadBytes { offset, len }),
        (number(), number()).prop_map(|(offset, len)| Call::ReadPages { offset, len }),
        (number(), small()).prop_map(|(offset, len)| Call::ReadInto { offset, len }),
        (number(), small()).prop_map(|(offset, len)| Call::TryRead { offset, len }),
        (number(), small()).prop_map(|(offset, len)| Call::Write { offset, len }),
        (number(), small()).prop_map(|(offset, len)| Call::WriteBytes { offset, len }),
        (number(), small()).prop_map(|(offset, len)| Call::WriteFrom { offset, len }),
        (number(), small()).prop_map(|(offset, len)| Call::TryWrite { offset, len }),
        number().prop_map(|offset| Call::Atomic { offset }),
        (number(), number()).prop_map(|(start, end)| Call::Map { start, end }),
    ]
}

fn in_range(offset: u64, len: u64) -> bool {
    offset.checked_add(len).is_some_and(|e| e <= LEN)
}

fn out_of_range(r: &Result<impl std::fmt::Debug, OpError>) -> bool {
    matches!(r, Err(OpError::OutOfRange { .. }))
}

struct World {
    c: Cluster,
    m: MappingId,
}

impl World {
    fn new() -> World {
        let store = MemStore::new();
        store.insert("f", pattern(0, FILE_LEN));
        let mut c = Cluster::new(ServerConfig::default(), store, 1, 5);
        c.settle();
        let m = c.map(0, "f", BASE, LEN, MapOptions::read_write()).unwrap();
        World { c, m }
    }

    /// Waits for an operation the command started.
    fn wait<T>(&mut self, p: Pending<T>) -> Result<T, OpError> {
        let r = self
            .c
            .wait(0, p, Duration::from_secs(60))
            .expect("an operation completes");
        p.finish(r)
    }

    fn done<T>(&mut self, s: Result<Started<T>, OpError>) -> Result<T, OpError> {
        match s? {
            Started::Done(t) => Ok(t),
            Started::Waiting(p) => self.wait(p),
        }
    }

    /// Runs one call; checks what the guarantee says about it.
    fn check(&mut self, call: Call) -> Result<(), TestCaseError> {
        let (m, now) = (self.m, self.c.now);
        match call {
            Call::Read { offset, len } => {
                let r = self.c.nodes[0].client.read(now, m, offset, len);
                let r = r.and_then(|p| self.wait(p));
                expect_bytes(r, offset, len)?;
            }
            Call::ReadBytes { offset, len } => {
                let r = self.c.nodes[0].client.read_bytes(now, m, offset, len);
                let r = self.done(r);
                expect_bytes(r, offset, len)?;
            }
            Call::ReadPages { offset, len } => {
                let r = self.c.nodes[0].client.read_pages(now, m, offset, len);
                let r = r.and_then(|p| self.wait(p));
                let r = r.and_then(|pages| {
                    let mut buf = vec![0u8; len as usize];
                    pages.copy_into(&mut buf).map(|()| Bytes::from(buf))
                });
                expect_bytes(r, offset, len)?;
            }
            Call::ReadInto { offset, len } => {
                let mut buf = vec![0u8; len as usize];
                let r = self.c.nodes[0].client.read_into(now, m, offset, &mut buf);
                let r = self.done(r).and_then(|pages| pages.copy_into(&mut buf));
                expect_bytes(r.map(|()| Bytes::from(buf)), offset, len)?;
            }
            Call::TryRead { offset, len } => {
                let mut buf = vec![0u8; len as usize];
                let r = self.c.nodes[0].client.try_read(now, m, offset, &mut buf);
                prop_assert_eq!(r.is_ok(), in_range(offset, len), "{:?}", r);
                prop_assert!(r.is_ok() || out_of_range(&r), "{:?}", r);
                if r == Ok(true) {
                    prop_assert_eq!(buf, pattern(BASE + offset, len));
                }
            }
            Call::Write { offset, len } => {
                let data = Bytes::from(same_bytes(offset, len));
                let r = self.c.nodes[0].client.write(now, m, offset, data);
                let r = r.and_then(|p| self.wait(p));
                expect_done(r, offset, len)?;
            }
            Call::WriteBytes { offset, len } => {
                let data = Bytes::from(same_bytes(offset, len));
                let r = self.c.nodes[0].client.write_bytes(now, m, offset, data);
                let r = self.done(r);
                expect_done(r, offset, len)?;
            }
            Call::WriteFrom { offset, len } => {
                let data = same_bytes(offset, len);
                let r = self.c.nodes[0].client.write_from(now, m, offset, &data);
                let r = self.done(r);
                expect_done(r, offset, len)?;
            }
            Call::TryWrite { offset, len } => {
                let data = same_bytes(offset, len);
                let r = self.c.nodes[0].client.try_write(now, m, offset, &data);
                prop_assert_eq!(r.is_ok(), in_range(offset, len), "{:?}", r);
                prop_assert!(r.is_ok() || out_of_range(&r), "{:?}", r);
            }
            Call::Atomic { offset } => {
                let r = self.c.nodes[0]
                    .client
                    .atomic(now, m, offset, AtomicOp::FetchAdd(0));
                let r = r.and_then(|p| self.wait(p));
                if !in_range(offset, 8) {
                    prop_assert!(out_of_range(&r), "{:?}", r);
                } else if (BASE + offset) % 8 != 0 {
                    prop_assert!(matches!(r, Err(OpError::Misaligned(_))), "{:?}", r);
                } else {
                    let word = u64::from_le_bytes(pattern(BASE + offset, 8).try_into().unwrap());
                    prop_assert_eq!(r, Ok((word, true)));
                }
            }
            Call::Map { start, end } => {
                let r = self.c.nodes[0]
                    .client
                    .map(now, "f", start..end, MapOptions::read_only());
                let r = r.and_then(|p| self.wait(p));
                if end < start {
                    prop_assert_eq!(r, Err(OpError::ReversedRange { start, end }));
                } else if end <= FILE_LEN && start < end {
                    let mapped = r.map_err(|e| TestCaseError::fail(format!("{e}")))?;
                    prop_assert_eq!(mapped.len, end - start);
                    let op = self.c.nodes[0].client.unmap(self.c.now, mapped.mapping);
                    let _ = op.and_then(|p| self.wait(p));
                } else {
                    prop_assert!(matches!(r, Err(OpError::Server { .. })), "{:?}", r);
                }
            }
        }
        Ok(())
    }
}

/// What is already there, so that writes leave the file as it was.
fn same_bytes(offset: u64, len: u64) -> Vec<u8> {
    match BASE.checked_add(offset) {
        Some(at) if in_range(offset, len) => pattern(at, len),
        _ => vec![0xee; len as usize],
    }
}

fn expect_bytes(r: Result<Bytes, OpError>, offset: u64, len: u64) -> Result<(), TestCaseError> {
    if in_range(offset, len) {
        let b = r.map_err(|e| TestCaseError::fail(format!("{offset}+{len}: {e}")))?;
        prop_assert_eq!(&b[..], &pattern(BASE + offset, len)[..]);
    } else {
        prop_assert!(out_of_range(&r), "{offset}+{len}: {:?}", r.map(|b| b.len()));
    }
    Ok(())
}

fn expect_done(r: Result<(), OpError>, offset: u64, len: u64) -> Result<(), TestCaseError> {
    if in_range(offset, len) {
        prop_assert_eq!(r, Ok(()), "{}+{}", offset, len);
    } else {
        prop_assert!(out_of_range(&r), "{offset}+{len}: {:?}", r);
    }
    Ok(())
}

#[test]
fn every_read_and_write_command_checks_its_range_before_anything_else() {
    let world = std::cell::RefCell::new(World::new());
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        ..Config::default()
    });
    runner
        .run(&call(), |c| world.borrow_mut().check(c))
        .unwrap_or_else(|e| panic!("{e}"));
}
