//! The seed corpus: stories that reach deep states.

use rmmap_core::protocol::AtomicOp;

use crate::recipe::input;

use super::Action;

/// Seed inputs, each a story that reaches somewhere deep: `(file name,
/// setup byte, actions)`.
pub(super) fn seed_inputs() -> Vec<(&'static str, u8, Vec<Action>)> {
    use super::Command as C;
    use Action::*;
    // Path 0 is "a"; with 512-byte pages 4096 bytes are 8 pages.
    let map_rw = || {
        Command(C::Map {
            path: 0,
            offset: 0,
            len: 4096,
            write: true,
            create: false,
        })
    };
    let read = |offset, len| {
        Command(C::Read {
            mapping: 0,
            offset,
            len,
        })
    };
    let write = |offset, len, fill| {
        Command(C::Write {
            mapping: 0,
            offset,
            len,
            fill,
        })
    };
    vec![
        (
            "map_read_write_sync_close",
            0,
            vec![
                map_rw(),
                ReplyAll { seed: 0 },
                read(0, 600),
                ReplyAll { seed: 0 },
                Command(C::TryRead {
                    mapping: 0,
                    offset: 10,
                    len: 100,
                }),
                write(100, 50, 0xAB),
                ReplyAll { seed: 0 },
                Command(C::TryWrite {
                    mapping: 0,
                    offset: 120,
                    len: 8,
                    fill: 0xCD,
                }),
                Command(C::Sync { mapping: 0 }),
                ReplyAll { seed: 0 },
                ReplyAll { seed: 0 },
                Command(C::Atomic {
                    mapping: 0,
                    offset: 64,
                    op: AtomicOp::Swap(3),
                }),
                ReplyAll { seed: 1 },
                Command(C::Close),
                ReplyAll { seed: 0 },
                ReplyAll { seed: 0 },
            ],
        ),
        (
            "recalls_and_invalidations",
            0,
            vec![
                map_rw(),
                ReplyAll { seed: 0 },
                read(0, 1500),
                ReplyAll { seed: 0 },
                write(0, 700, 0x11),
                ReplyAll { seed: 0 },
                Revoke {
                    recall: true,
                    file: 0,
                    first: 0,
                    count: 2,
                    downgrade: true,
                },
                Revoke {
                    recall: false,
                    file: 0,
                    first: 2,
                    count: 2,
                    downgrade: false,
                },
                read(0, 1500),
                ReplyAll { seed: 0 },
                Advance { ms: 300 },
                Revoke {
                    recall: true,
                    file: 0,
                    first: 0,
                    count: 8,
                    downgrade: false,
                },
            ],
        ),
        (
            "reconnect_and_resume",
            0,
            vec![
                map_rw(),
                ReplyAll { seed: 0 },
                read(0, 1000),
                ReplyAll { seed: 0 },
                write(0, 10, 0x22),
                Disconnect,
                AdvanceToTimeout,
                ReplyAll { seed: 0 },
                ReplyAll { seed: 0 },
                read(0, 1000),
            ],
        ),
        (
            "session_lost_and_revalidated",
            0x0e,
            vec![
                Welcome {
                    status: 0,
                    tweak: 0,
                },
                Pong { renewed: true },
                map_rw(),
                ReplyAll { seed: 0 },
                read(0, 2000),
                ReplyAll { seed: 0xFFFF },
                write(600, 10, 0x33),
                Disconnect,
                AdvanceToTimeout,
                Welcome {
                    status: 2,
                    tweak: 0,
                },
                ReplyAll { seed: 0x00FF },
                ReplyAll { seed: 0 },
                read(0, 2000),
            ],
        ),
        (
            "authenticated_handshake",
            1,
            vec![
                Command(C::Map {
                    path: 1,
                    offset: 512,
                    len: 1024,
                    write: false,
                    create: true,
                }),
                ReplyAll { seed: 0 },
                read(0, 100),
                ReplyAll { seed: 0 },
                Command(C::SetLen {
                    path: 2,
                    len: 4096,
                    create: true,
                }),
                ReplyAll { seed: 0 },
            ],
        ),
        (
            "wrong_and_duplicate_replies",
            0,
            vec![
                map_rw(),
                Reply {
                    which: 0,
                    how: 250,
                    seed: 0,
                },
                read(0, 100),
                Reply {
                    which: 0,
                    how: 240,
                    seed: 0,
                },
                AdvanceToTimeout,
                read(0, 100),
                Reply {
                    which: 0,
                    how: 200,
                    seed: 0,
                },
                Junk {
                    bytes: vec![0, 0, 0, 5, 0x92, 1, 2],
                },
                Reachable { on: false },
                Disconnect,
                AdvanceToTimeout,
                Reachable { on: true },
                AdvanceToTimeout,
                Welcome {
                    status: 1,
                    tweak: 252,
                },
            ],
        ),
    ]
}

/// The seed corpus of the `client` target: `(file name, input)`.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    seed_inputs()
        .into_iter()
        .map(|(name, setup, actions)| (name.to_string(), input(setup, &actions)))
        .collect()
}
