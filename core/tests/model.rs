//! Model-based checking: random operations from several clients, random
//! delivery schedules, compared against a reference model of the file.
//!
//! Each round, every client issues at most one operation and the round runs
//! until all complete. The guarantee is per-page linearizability, so each
//! page is checked on its own: the round's reads of a page must match some
//! order of the round's pieces of operations on that page, applied to the
//! model (the operations are concurrent, so any order is allowed). The
//! possible contents of each page are tracked as a set.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use rmmap_core::client::{Completion, MapOptions, MappingId};
use rmmap_core::harness::{Cluster, Verdict};
use rmmap_core::server::{ServerBug, ServerConfig};
use rmmap_core::store::MemStore;

const PAGE: u64 = 512;
const PAGES: u64 = 3;
const LEN: u64 = PAGE * PAGES;

#[derive(Clone, Debug)]
enum Op {
    Read { offset: u64, len: u64 },
    Write { offset: u64, data: Vec<u8> },
    Sync,
}

fn op() -> impl Strategy<Value = Option<Op>> {
    let offset = 0..LEN - 1;
    prop_oneof![
        1 => Just(None),
        4 => (offset.clone(), 1u64..40).prop_map(|(o, l)| Some(Op::Read { offset: o, len: l.min(LEN - o) })),
        4 => (offset, proptest::collection::vec(any::<u8>(), 1..40)).prop_map(|(o, mut d)| {
            d.truncate((LEN - o) as usize);
            Some(Op::Write { offset: o, data: d })
        }),
        1 => Just(Some(Op::Sync)),
    ]
}

/// One operation's part in one page: `(offset in page, bytes)` written, or
/// `(offset in page, bytes)` read.
#[derive(Clone, Debug)]
enum Piece {
    Write(usize, Vec<u8>),
    Read(usize, Vec<u8>),
}

/// Splits completed operations into per-page pieces: reads and writes are
/// linearizable per page, not across pages.
fn pieces(done: &[(usize, Op, Completion)], page: u64) -> Vec<Piece> {
    let (lo, hi) = (page * PAGE, (page + 1) * PAGE);
    let mut out = Vec::new();
    for (_, op, comp) in done {
        let (offset, bytes, write) = match (op, comp) {
            (Op::Write { offset, data }, _) => (*offset, &data[..], true),
            (Op::Read { offset, .. }, Completion::Read(got)) => (*offset, &got[..], false),
            _ => continue,
        };
        let (a, b) = (offset.max(lo), (offset + bytes.len() as u64).min(hi));
        if a >= b {
            continue;
        }
        let part = bytes[(a - offset) as usize..(b - offset) as usize].to_vec();
        out.push(if write {
            Piece::Write((a - lo) as usize, part)
        } else {
            Piece::Read((a - lo) as usize, part)
        });
    }
    out
}

/// Applies `order` to a page; None if a read cannot be explained by it.
fn explain(state: &[u8], ps: &[Piece], order: &[usize]) -> Option<Vec<u8>> {
    let mut s = state.to_vec();
    for &i in order {
        match &ps[i] {
            Piece::Write(at, d) => s[*at..*at + d.len()].copy_from_slice(d),
            Piece::Read(at, d) => {
                if s[*at..*at + d.len()] != d[..] {
                    return None;
                }
            }
        }
    }
    Some(s)
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

/// Runs the rounds; returns a description of the first inconsistency.
fn run(rounds: &[Vec<Option<Op>>], seed: u64, bug: ServerBug) -> Result<(), String> {
    let clients = rounds.first().map_or(0, |r| r.len());
    let store = MemStore::new();
    store.insert("f", vec![0u8; LEN as usize]);
    let config = ServerConfig {
        page_size: PAGE as u32,
        max_frame: 1 << 20,
        lease: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let mut c = Cluster::new(config, store, clients, seed);
    c.server.inject_bug(bug);
    // The bug also breaks the directory's invariants; let the model be what
    // notices, which is what this test is about.
    c.check_invariants = bug == ServerBug::None;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for n in &mut c.nodes {
        n.latency = Duration::from_micros(10 + rng.next_u64() % 500);
    }
    let mut hook_rng = ChaCha8Rng::seed_from_u64(seed ^ 0xdead);
    c.set_hook(Box::new(move |_, _, _| match hook_rng.next_u32() % 8 {
        0 => Verdict::Delay(Duration::from_micros(hook_rng.next_u64() % 3000)),
        _ => Verdict::Deliver,
    }));
    c.settle();
    let maps: Vec<MappingId> = (0..clients)
        .map(|i| c.map(i, "f", 0, LEN, MapOptions::read_write()).unwrap())
        .collect();
    // Per page, every content the page may have now.
    let mut states: Vec<Vec<Vec<u8>>> = vec![vec![vec![0u8; PAGE as usize]]; PAGES as usize];
    for (r, round) in rounds.iter().enumerate() {
        let now = c.now;
        let mut issued = Vec::new();
        for (i, op) in round.iter().enumerate() {
            let Some(op) = op else { continue };
            let id = match op {
                Op::Read { offset, len } => c.nodes[i]
                    .client
                    .read(now, maps[i], *offset, *len)
                    .map(|p| p.id()),
                Op::Write { offset, data } => c.nodes[i]
                    .client
                    .write(now, maps[i], *offset, Bytes::from(data.clone()))
                    .map(|p| p.id()),
                Op::Sync => c.nodes[i].client.sync(now, maps[i]).map(|p| p.id()),
            }
            .map_err(|e| format!("round {r}: client {i} could not issue {op:?}: {e}"))?;
            issued.push((i, op.clone(), id));
        }
        let mut done = Vec::new();
        for (i, op, id) in issued {
            match c.wait(i, id, Duration::from_secs(60)) {
                Some(Ok(comp)) => done.push((i, op, comp)),
                other => return Err(format!("round {r}: client {i} {op:?} ended with {other:?}")),
            }
        }
        for (page, page_states) in states.iter_mut().enumerate() {
            let ps = pieces(&done, page as u64);
            let mut next: Vec<Vec<u8>> = Vec::new();
            for s in page_states.iter() {
                for order in permutations(ps.len()) {
                    if let Some(n) = explain(s, &ps, &order)
                        && !next.contains(&n)
                    {
                        next.push(n);
                    }
                }
            }
            if next.is_empty() {
                return Err(format!(
                    "round {r}, page {page}: no order of {ps:?} explains the reads"
                ));
            }
            *page_states = next;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn concurrent_reads_and_writes_match_the_file_model(
        rounds in proptest::collection::vec(proptest::collection::vec(op(), 3), 1..40),
        seed in any::<u64>(),
    ) {
        if let Err(e) = run(&rounds, seed, ServerBug::None) {
            return Err(TestCaseError::fail(e));
        }
    }
}

#[test]
fn the_model_check_fails_when_invalidation_is_disabled() {
    // Proof that the check can fail: with shared copies never invalidated,
    // random runs must soon read stale data.
    let mut seeds = ChaCha8Rng::seed_from_u64(42);
    let mut caught = None;
    for seed in 0..200u64 {
        let mut runner = proptest::test_runner::TestRunner::new_with_rng(
            ProptestConfig::default(),
            proptest::test_runner::TestRng::from_seed(
                proptest::test_runner::RngAlgorithm::ChaCha,
                &{
                    let mut s = [0u8; 32];
                    seeds.fill_bytes(&mut s);
                    s
                },
            ),
        );
        let rounds = proptest::collection::vec(proptest::collection::vec(op(), 3), 10..40)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        if let Err(e) = run(&rounds, seed, ServerBug::SkipInvalidation) {
            caught = Some((seed, e));
            break;
        }
    }
    let (seed, e) = caught.expect("a disabled invalidation went unnoticed for 200 runs");
    eprintln!("caught with seed {seed}: {e}");
    assert!(
        e.contains("explains the reads"),
        "caught by the model, not something else: {e}"
    );
}
