//! The client's internal bookkeeping: session, connection, mappings,
//! operations in progress, requests in flight.

use std::collections::BTreeSet;

use crate::protocol::{PageNo, ReqId};

use super::cache::FileId;
use super::{LostWrites, OpId};

#[derive(Clone, Debug)]
pub(crate) enum MappingStatus {
    /// A `Map` request is (or will be) in flight.
    Opening {
        req: Option<ReqId>,
    },
    Ready {
        wire: crate::protocol::WireMappingId,
    },
    /// Mapped again after a lost session.
    Reopening {
        req: Option<ReqId>,
    },
    Lost(LostWrites),
    Closing,
}

#[derive(Debug)]
pub(crate) struct MappingState {
    pub(crate) path: String,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) writable: bool,
    pub(crate) create: bool,
    pub(crate) status: MappingStatus,
    pub(crate) file: Option<FileId>,
    pub(crate) write_seq: u64,
    pub(crate) synced_seq: u64,
    pub(crate) waiters: BTreeSet<OpId>,
    /// Where the last read ended, to spot sequential readers.
    pub(crate) last_read_end: u64,
    /// Read-ahead has been asked for up to this page.
    pub(crate) readahead_to: PageNo,
    pub(crate) file_len: u64,
    /// Drop-behind has released the pages before this one.
    pub(crate) dropped_to: PageNo,
    /// Where the last write ended, to spot sequential writers.
    pub(crate) last_write_end: u64,
    /// Write-behind has sent the dirty pages before this one.
    pub(crate) written_back_to: PageNo,
    /// Write-ahead has asked for ownership up to this page.
    pub(crate) writeahead_to: PageNo,
    /// The memory of a memory mapping.
    pub(crate) memory: Option<super::memory::Memory>,
}

impl MappingState {
    pub(crate) fn end(&self) -> u64 {
        self.offset + self.len
    }

    pub(crate) fn pages(&self, ps: u64) -> (PageNo, PageNo) {
        (self.offset / ps, self.end().div_ceil(ps))
    }

    pub(crate) fn wire(&self) -> Option<crate::protocol::WireMappingId> {
        match self.status {
            MappingStatus::Ready { wire } => Some(wire),
            _ => None,
        }
    }
}
