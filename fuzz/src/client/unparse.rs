//! Actions back into the bytes that decode to them (for the seed corpus).

use crate::recipe::{Unparse, variant};

use super::{Action, Command};

impl Unparse for Action {
    fn unparse(&self, out: &mut Vec<u8>) {
        const N: u32 = 12;
        match self {
            Action::Welcome { status, tweak } => {
                variant(out, 0, N);
                (*status, *tweak).unparse(out);
            }
            Action::Reply { which, how, seed } => {
                variant(out, 1, N);
                (*which, (*how, *seed)).unparse(out);
            }
            Action::ReplyAll { seed } => {
                variant(out, 2, N);
                seed.unparse(out);
            }
            Action::Revoke {
                recall,
                file,
                first,
                count,
                downgrade,
            } => {
                variant(out, 3, N);
                ((*recall, *file), (*first, (*count, *downgrade))).unparse(out);
            }
            Action::Pong { renewed } => {
                variant(out, 4, N);
                renewed.unparse(out);
            }
            Action::Frame { .. } => panic!("seeds are written without arbitrary messages"),
            Action::Junk { bytes } => {
                variant(out, 6, N);
                bytes.unparse(out);
            }
            Action::Command(c) => {
                variant(out, 7, N);
                c.unparse(out);
            }
            Action::Advance { ms } => {
                variant(out, 8, N);
                ms.unparse(out);
            }
            Action::AdvanceToTimeout => variant(out, 9, N),
            Action::Disconnect => variant(out, 10, N),
            Action::Reachable { on } => {
                variant(out, 11, N);
                on.unparse(out);
            }
        }
    }
}

impl Unparse for Command {
    fn unparse(&self, out: &mut Vec<u8>) {
        const N: u32 = 10;
        match self {
            Command::Map {
                path,
                offset,
                len,
                write,
                create,
            } => {
                variant(out, 0, N);
                ((*path, *offset), (*len, (*write, *create))).unparse(out);
            }
            Command::Read {
                mapping,
                offset,
                len,
            } => {
                variant(out, 1, N);
                (*mapping, (*offset, *len)).unparse(out);
            }
            Command::Write {
                mapping,
                offset,
                len,
                fill,
            } => {
                variant(out, 2, N);
                ((*mapping, *offset), (*len, *fill)).unparse(out);
            }
            Command::TryRead {
                mapping,
                offset,
                len,
            } => {
                variant(out, 3, N);
                (*mapping, (*offset, *len)).unparse(out);
            }
            Command::TryWrite {
                mapping,
                offset,
                len,
                fill,
            } => {
                variant(out, 4, N);
                ((*mapping, *offset), (*len, *fill)).unparse(out);
            }
            Command::Sync { mapping } => {
                variant(out, 5, N);
                mapping.unparse(out);
            }
            Command::Unmap { mapping } => {
                variant(out, 6, N);
                mapping.unparse(out);
            }
            Command::SetLen { path, len, create } => {
                variant(out, 7, N);
                (*path, (*len, *create)).unparse(out);
            }
            Command::Atomic {
                mapping,
                offset,
                op,
            } => {
                variant(out, 8, N);
                (*mapping, *offset).unparse(out);
                op.unparse(out);
            }
            Command::Close => variant(out, 9, N),
        }
    }
}
