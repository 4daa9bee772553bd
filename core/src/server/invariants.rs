//! The directory's invariants, checked after every step by the tests, the
//! simulator and the fuzzers.

use std::collections::BTreeMap;

use crate::protocol::SessionId;

use super::Server;

impl Server {
    /// Checks the directory's invariants: at most one owner per page and
    /// never an owner beside sharers; holders are live sessions whose
    /// mappings cover the page and whose bookkeeping agrees; locks and queues
    /// name live operations. For tests, the fuzzer and the simulator.
    pub fn check_invariants(&self) -> Result<(), String> {
        let ps = self.config.page_size as u64;
        let mut counted: BTreeMap<SessionId, u64> = BTreeMap::new();
        for (fid, f) in &self.files.files {
            for (p, e) in &f.pages {
                if e.owner.is_some() && !e.sharers.is_empty() {
                    return Err(format!(
                        "file {fid:?} page {p}: owner {:?} beside sharers {:?}",
                        e.owner, e.sharers
                    ));
                }
                if e.version > self.next_version {
                    return Err(format!(
                        "file {fid:?} page {p}: version {} was never issued",
                        e.version
                    ));
                }
                for h in e.owner.iter().chain(e.sharers.iter()) {
                    let Some(s) = self.sessions.get(h) else {
                        return Err(format!(
                            "file {fid:?} page {p}: holder {h:?} is not a live session"
                        ));
                    };
                    if !s.held.get(fid).is_some_and(|set| set.contains(p)) {
                        return Err(format!(
                            "file {fid:?} page {p}: {h:?} holds it but does not know"
                        ));
                    }
                    if !s.covers(*fid, *p, ps) {
                        return Err(format!(
                            "file {fid:?} page {p}: {h:?} holds it without a mapping"
                        ));
                    }
                    *counted.entry(*h).or_default() += 1;
                }
                if let Some(l) = e.lock
                    && !self.ops.contains_key(&l)
                {
                    return Err(format!(
                        "file {fid:?} page {p}: locked by finished op {l:?}"
                    ));
                }
                if let Some(q) = e.queue.iter().find(|q| !self.ops.contains_key(q)) {
                    return Err(format!("file {fid:?} page {p}: finished op {q:?} in queue"));
                }
            }
        }
        for (sid, s) in &self.sessions {
            let n = counted.get(sid).copied().unwrap_or(0);
            if n != s.held_count {
                return Err(format!(
                    "{sid:?} counts {} held pages, the directory {n}",
                    s.held_count
                ));
            }
        }
        Ok(())
    }
}
