//! The seed corpus: stories that reach deep states.

use rmmap_core::protocol::AtomicOp;

use crate::recipe::input;

use super::{Action, Patch, Request};

/// Seed inputs, each a story that reaches somewhere deep: `(file name,
/// setup byte, actions)`.
pub(super) fn seed_inputs() -> Vec<(&'static str, u8, Vec<Action>)> {
    use Action::*;
    use Request as R;
    let connect = |slot, answers| Connect {
        slot,
        hello: 0,
        name: 0,
        answers_revocations: answers,
    };
    let send = |slot, request| Send {
        slot,
        req: 0,
        request,
    };
    // Path 0 is "a" (16 pages of 512 bytes); map flag choice 1 is WRITE.
    let map_rw = |slot| {
        send(
            slot,
            R::Map {
                path: 0,
                offset: 0,
                len: 8192,
                flags: 1,
            },
        )
    };
    // Fetch flag choices: 0 shared, 1 exclusive, 3 exclusive with data, 4 overwrite.
    let fetch = |slot, first, count, flags| {
        send(
            slot,
            R::Fetch {
                mapping: 0,
                first,
                count,
                flags,
            },
        )
    };
    let patch = |page, fill| Patch {
        page,
        offset: 16,
        len: 100,
        fill,
    };
    vec![
        (
            "map_fetch_write_sync",
            0,
            vec![
                connect(0, true),
                map_rw(0),
                fetch(0, 0, 3, 1),
                send(
                    0,
                    R::WriteBack {
                        mapping: 0,
                        patches: vec![patch(0, 0xAB), patch(1, 0xCD)],
                    },
                ),
                send(0, R::Sync { mapping: 0 }),
                send(
                    0,
                    R::Atomic {
                        mapping: 0,
                        word: 2,
                        op: AtomicOp::FetchAdd(5),
                    },
                ),
                send(0, R::Unmap { mapping: 0 }),
                send(0, R::Bye),
            ],
        ),
        (
            "two_sessions_recall_and_invalidate",
            0,
            vec![
                connect(0, true),
                connect(1, true),
                map_rw(0),
                map_rw(1),
                fetch(0, 0, 4, 3),
                send(
                    0,
                    R::WriteBack {
                        mapping: 0,
                        patches: vec![patch(2, 0x11)],
                    },
                ),
                fetch(1, 0, 2, 0),
                fetch(1, 1, 2, 1),
                fetch(0, 0, 4, 0),
                send(
                    1,
                    R::Atomic {
                        mapping: 0,
                        word: 0,
                        op: AtomicOp::CompareExchange {
                            expected: 0,
                            new: 9,
                        },
                    },
                ),
                Answer { slot: 0 },
                Answer { slot: 1 },
            ],
        ),
        (
            // Fetch flag values from 0xF0 are a `Refresh`; odd ones carry the
            // digests of "a" as first stored, so page 0 (written meanwhile)
            // comes with data and the rest without.
            "refresh_after_a_write",
            0,
            vec![
                connect(0, true),
                connect(1, true),
                map_rw(0),
                map_rw(1),
                fetch(0, 0, 1, 1),
                send(
                    0,
                    R::WriteBack {
                        mapping: 0,
                        patches: vec![patch(0, 0x5A)],
                    },
                ),
                fetch(1, 0, 4, 0xF1),
                fetch(1, 4, 2, 0xF0),
                Answer { slot: 0 },
            ],
        ),
        (
            "silent_owner_loses_its_lease",
            0,
            vec![
                connect(0, false),
                connect(1, true),
                map_rw(0),
                map_rw(1),
                fetch(0, 0, 4, 1),
                fetch(1, 0, 4, 1),
                Advance { ms: 600 },
                send(1, R::Ping { nonce: 1 }),
                Advance { ms: 600 },
                AdvanceToTimeout,
                fetch(1, 0, 4, 1),
            ],
        ),
        (
            "disconnect_then_resume",
            0,
            vec![
                connect(0, true),
                map_rw(0),
                fetch(0, 0, 2, 1),
                Disconnect { slot: 0 },
                Advance { ms: 100 },
                Connect {
                    slot: 1,
                    hello: 180,
                    name: 0,
                    answers_revocations: true,
                },
                fetch(1, 0, 2, 0),
                send(
                    1,
                    R::Revalidate {
                        mapping: 0,
                        pages: vec![(0, 0), (1, 0), (2, 250)],
                    },
                ),
                send(
                    1,
                    R::Release {
                        file: 0,
                        first: 0,
                        count: 2,
                    },
                ),
            ],
        ),
        (
            "shutdown_recalls_dirty_pages",
            0,
            vec![
                connect(0, true),
                connect(1, false),
                map_rw(0),
                map_rw(1),
                fetch(0, 0, 2, 1),
                fetch(1, 4, 2, 4),
                Shutdown,
                Answer { slot: 1 },
                AdvanceToTimeout,
                AdvanceToTimeout,
            ],
        ),
        (
            "authenticated_clients",
            1,
            vec![
                connect(0, true),
                Connect {
                    slot: 1,
                    hello: 0,
                    name: 1,
                    answers_revocations: true,
                },
                Connect {
                    slot: 2,
                    hello: 0,
                    name: 2,
                    answers_revocations: true,
                },
                map_rw(0),
                send(
                    1,
                    R::Map {
                        path: 0,
                        offset: 0,
                        len: 512,
                        flags: 0,
                    },
                ),
                send(
                    1,
                    R::SetLen {
                        path: 4,
                        len: 100,
                        create: true,
                    },
                ),
            ],
        ),
        (
            "limits_junk_and_shrink",
            0,
            vec![
                connect(0, true),
                send(
                    0,
                    R::Map {
                        path: 4,
                        offset: 0,
                        len: 4000,
                        flags: 2,
                    },
                ),
                send(
                    0,
                    R::SetLen {
                        path: 4,
                        len: 700,
                        create: false,
                    },
                ),
                send(0, R::Unmap { mapping: 0 }),
                send(
                    0,
                    R::SetLen {
                        path: 4,
                        len: 700,
                        create: false,
                    },
                ),
                SendPart {
                    slot: 0,
                    req: 224,
                    request: R::Ping { nonce: 7 },
                    keep: 3,
                },
                send(
                    0,
                    R::Map {
                        path: 7,
                        offset: 0,
                        len: 1,
                        flags: 0,
                    },
                ),
                Reading { slot: 0, on: false },
                fetch(0, 0, 8, 2),
                Reading { slot: 0, on: true },
                Connect {
                    slot: 3,
                    hello: 255,
                    name: 0,
                    answers_revocations: false,
                },
                Junk {
                    slot: 3,
                    bytes: vec![0xFF, 0xFF, 0xFF, 0xFF, 0x01],
                },
                Advance { ms: 3000 },
            ],
        ),
    ]
}

/// The seed corpus of the `server` target: `(file name, input)`.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    seed_inputs()
        .into_iter()
        .map(|(name, setup, actions)| (name.to_string(), input(setup, &actions)))
        .collect()
}
