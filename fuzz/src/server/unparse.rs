//! Actions back into the bytes that decode to them (for the seed corpus).

use crate::recipe::{Unparse, variant};

use super::{Action, Patch, Request};

impl Unparse for Action {
    fn unparse(&self, out: &mut Vec<u8>) {
        const N: u32 = 11;
        match self {
            Action::Connect {
                slot,
                hello,
                name,
                answers_revocations,
            } => {
                variant(out, 0, N);
                (*slot, *hello).unparse(out);
                (*name, *answers_revocations).unparse(out);
            }
            Action::Send { slot, req, request } => {
                variant(out, 1, N);
                (*slot, *req).unparse(out);
                request.unparse(out);
            }
            Action::SendPart {
                slot,
                req,
                request,
                keep,
            } => {
                variant(out, 2, N);
                (*slot, *req).unparse(out);
                request.unparse(out);
                keep.unparse(out);
            }
            Action::Answer { slot } => {
                variant(out, 3, N);
                slot.unparse(out);
            }
            Action::Message { .. } => panic!("seeds are written without arbitrary messages"),
            Action::Junk { slot, bytes } => {
                variant(out, 5, N);
                slot.unparse(out);
                bytes.unparse(out);
            }
            Action::Reading { slot, on } => {
                variant(out, 6, N);
                (*slot, *on).unparse(out);
            }
            Action::Disconnect { slot } => {
                variant(out, 7, N);
                slot.unparse(out);
            }
            Action::Advance { ms } => {
                variant(out, 8, N);
                ms.unparse(out);
            }
            Action::AdvanceToTimeout => variant(out, 9, N),
            Action::Shutdown => variant(out, 10, N),
        }
    }
}

impl Unparse for Request {
    fn unparse(&self, out: &mut Vec<u8>) {
        const N: u32 = 11;
        match self {
            Request::Map {
                path,
                offset,
                len,
                flags,
            } => {
                variant(out, 0, N);
                (*path, (*offset, (*len, *flags))).unparse(out);
            }
            Request::Unmap { mapping } => {
                variant(out, 1, N);
                mapping.unparse(out);
            }
            Request::Fetch {
                mapping,
                first,
                count,
                flags,
            } => {
                variant(out, 2, N);
                ((*mapping, *first), (*count, *flags)).unparse(out);
            }
            Request::WriteBack { mapping, patches } => {
                variant(out, 3, N);
                mapping.unparse(out);
                patches.unparse(out);
            }
            Request::Sync { mapping } => {
                variant(out, 4, N);
                mapping.unparse(out);
            }
            Request::Release { file, first, count } => {
                variant(out, 5, N);
                (*file, (*first, *count)).unparse(out);
            }
            Request::Revalidate { mapping, pages } => {
                variant(out, 6, N);
                mapping.unparse(out);
                pages.unparse(out);
            }
            Request::SetLen { path, len, create } => {
                variant(out, 7, N);
                (*path, (*len, *create)).unparse(out);
            }
            Request::Atomic { mapping, word, op } => {
                variant(out, 8, N);
                (*mapping, *word).unparse(out);
                op.unparse(out);
            }
            Request::Ping { nonce } => {
                variant(out, 9, N);
                nonce.unparse(out);
            }
            Request::Bye => variant(out, 10, N),
        }
    }
}

impl Unparse for Patch {
    fn unparse(&self, out: &mut Vec<u8>) {
        (self.page, (self.offset, (self.len, self.fill))).unparse(out);
    }
}
