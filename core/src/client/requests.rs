//! The requests of the current session and the retransmit log: every
//! request without a reply, and every recall acknowledgement that carried
//! dirty data and is not yet confirmed, in the order they were first sent,
//! to be sent again after a resume (the server applies each once).

use std::collections::BTreeMap;

use crate::protocol::{Message, PageNo, ReqId, RevId, Version};

use super::cache::FileId;
use super::{MappingId, OpId};

/// What a request is for, so its reply can be matched to it.
#[derive(Debug)]
pub(crate) enum ReqKind {
    Map {
        mapping: MappingId,
        op: Option<OpId>,
    },
    Unmap {
        mapping: MappingId,
        op: OpId,
    },
    Fetch {
        file: FileId,
        first: PageNo,
        count: u32,
    },
    /// `pages[i]` is the page of patch `i`.
    WriteBack {
        file: FileId,
        pages: Vec<PageNo>,
        op: Option<OpId>,
        mapping: MappingId,
    },
    Sync {
        op: OpId,
    },
    Revalidate {
        file: FileId,
        pages: Vec<(PageNo, Version)>,
    },
    /// Copies carried over a server restart, checked by their digests.
    Refresh {
        file: FileId,
        first: PageNo,
        count: u32,
    },
    SetLen {
        op: OpId,
    },
    Atomic {
        op: OpId,
    },
}

/// A request without a reply yet.
#[derive(Debug)]
pub(crate) struct Request {
    /// Its place in the log.
    seq: u64,
    /// As sent (and sent again after a resume).
    msg: Message,
    pub(crate) kind: ReqKind,
}

#[derive(Debug)]
enum LogEntry {
    Request(ReqId),
    /// A recall acknowledgement carrying dirty data: kept until the server
    /// confirms it (`rev_acked`), sent again after a resume.
    RecallAck(RevId, FileId, Message),
}

/// The session's requests in flight, numbered, and what to send again.
#[derive(Debug)]
pub(crate) struct RequestLog {
    next_req: u64,
    requests: BTreeMap<ReqId, Request>,
    next_seq: u64,
    log: BTreeMap<u64, LogEntry>,
}

impl RequestLog {
    pub(crate) fn new() -> Self {
        RequestLog {
            next_req: 1,
            requests: BTreeMap::new(),
            next_seq: 0,
            log: BTreeMap::new(),
        }
    }

    /// Requests without a reply.
    pub(crate) fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether one more request keeps the oldest unanswered one within
    /// `window` requests of the newest.
    pub(crate) fn has_room(&self, window: u64) -> bool {
        self.requests
            .first_key_value()
            .is_none_or(|(oldest, _)| self.next_req - oldest.0 < window)
    }

    /// Numbers a request and logs it; returns its number and the message to
    /// send.
    pub(crate) fn add(
        &mut self,
        build: impl FnOnce(ReqId) -> Message,
        kind: ReqKind,
    ) -> (ReqId, &Message) {
        let req = ReqId(self.next_req);
        self.next_req += 1;
        let msg = build(req);
        self.next_seq += 1;
        let seq = self.next_seq;
        self.log.insert(seq, LogEntry::Request(req));
        let r = self
            .requests
            .entry(req)
            .or_insert(Request { seq, msg, kind });
        (req, &r.msg)
    }

    /// The request a reply answers, if it is still in flight.
    pub(crate) fn get(&self, req: ReqId) -> Option<&Request> {
        self.requests.get(&req)
    }

    /// Removes an answered request.
    pub(crate) fn take(&mut self, req: ReqId) -> Option<Request> {
        let r = self.requests.remove(&req)?;
        self.log.remove(&r.seq);
        Some(r)
    }

    /// Logs a recall acknowledgement that carried dirty data of `file`.
    pub(crate) fn log_recall_ack(&mut self, rev: RevId, file: FileId, ack: Message) {
        self.next_seq += 1;
        self.log
            .insert(self.next_seq, LogEntry::RecallAck(rev, file, ack));
    }

    /// Every recall acknowledgement in the log reached the server.
    pub(crate) fn confirm_all_acks(&mut self) {
        self.log
            .retain(|_, e| !matches!(e, LogEntry::RecallAck(..)));
    }

    /// Drops the recall acknowledgements the server has processed.
    pub(crate) fn confirm_acks(&mut self, acked: RevId) {
        self.log
            .retain(|_, e| !matches!(e, LogEntry::RecallAck(rev, _, _) if *rev <= acked));
    }

    /// Every request without a reply and every recall acknowledgement not
    /// yet confirmed, in the order they were first sent.
    pub(crate) fn to_resend(&self) -> impl Iterator<Item = &Message> {
        self.log.values().filter_map(|e| match e {
            LogEntry::Request(r) => self.requests.get(r).map(|req| &req.msg),
            LogEntry::RecallAck(_, _, m) => Some(m),
        })
    }

    /// The pages whose dirty data went back in recall acknowledgements
    /// the server has not confirmed (one entry per acknowledgement and
    /// page).
    pub(crate) fn unconfirmed_recalled_pages(&self) -> Vec<(FileId, PageNo)> {
        let mut out = Vec::new();
        for e in self.log.values() {
            let LogEntry::RecallAck(_, file, Message::RecallAck(ack)) = e else {
                continue;
            };
            let mut pages: Vec<PageNo> = ack.patches.iter().map(|p| p.page).collect();
            pages.dedup();
            out.extend(pages.into_iter().map(|q| (*file, q)));
        }
        out
    }

    /// The session is gone: forgets the log and hands back the requests
    /// that were in flight.
    pub(crate) fn end_session(&mut self) -> Vec<Request> {
        self.log.clear();
        std::mem::take(&mut self.requests).into_values().collect()
    }
}
