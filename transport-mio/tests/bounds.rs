//! The blocking client's public read and write APIs with offsets and
//! lengths up to u64::MAX: each call succeeds exactly when its range lies in
//! the mapping and otherwise says `out_of_range`, allocating nothing for a
//! range that is not there (the property is in the Tokio tests'
//! `common/bounds.rs`, shared with them).

#[path = "../../transport-tokio/tests/common/bounds.rs"]
mod bounds;

use std::time::Duration;

use bounds::{BASE, Call, FILE_LEN, LEN, Outcome, call, check, pattern, same_bytes};
use bytes::Bytes;
use proptest::test_runner::{Config, TestRunner};
use rmmap_mio::{Access, AtomicOp, Client, ClientConfig, Mapping, Server, ServerConfig};

fn run(client: &Client, m: &Mapping, call: &Call) -> Outcome {
    match *call {
        Call::ReadBytes { offset, len } => Outcome::Bytes(m.read_bytes(offset, len)),
        Call::Read { offset, len } => {
            let mut buf = vec![0u8; len as usize];
            Outcome::Bytes(m.read(offset, &mut buf).map(|()| Bytes::from(buf)))
        }
        Call::TryRead { offset, len } => {
            let mut buf = vec![0u8; len as usize];
            Outcome::Tried(m.try_read(offset, &mut buf), Some(buf))
        }
        Call::Write { offset, len } => Outcome::Done(m.write(offset, &same_bytes(offset, len))),
        Call::WriteBytes { offset, len } => {
            Outcome::Done(m.write_bytes(offset, same_bytes(offset, len).into()))
        }
        Call::TryWrite { offset, len } => {
            Outcome::Tried(m.try_write(offset, &same_bytes(offset, len)), None)
        }
        Call::Atomic { offset } => Outcome::Atomic(m.atomic(offset, AtomicOp::FetchAdd(0))),
        Call::Map { start, end } => Outcome::Mapped(
            client
                .map("f", start..end, Access::ReadOnly)
                .map(|m| m.len()),
        ),
    }
}

#[test]
fn every_read_and_write_call_checks_its_range_before_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), pattern(0, FILE_LEN)).unwrap();
    let config = ServerConfig::new(dir.path())
        .lease(Duration::from_secs(2))
        .restart_grace(Some(Duration::ZERO));
    let server = Server::bind("127.0.0.1:0", config).unwrap();
    let client =
        Client::connect(&server.local_addr().to_string(), ClientConfig::default()).unwrap();
    let m = client
        .map("f", BASE..BASE + LEN, Access::ReadWrite)
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 1000,
        ..Config::default()
    });
    runner
        .run(&call(), |c| check(&c, run(&client, &m, &c)))
        .unwrap_or_else(|e| panic!("{e}"));
    drop(m);
    client.close().unwrap();
    server.shutdown().unwrap();
}
