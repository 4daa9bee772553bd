//! Results from the store, routed to what waits for them.

use crate::Instant;
use crate::store::{StoreDone, StoreError, StoreId};

use super::disk::Purpose;
use super::{Server, ServerEvent};

impl Server {
    pub(super) fn on_store_done(
        &mut self,
        now: Instant,
        id: StoreId,
        result: Result<StoreDone, StoreError>,
    ) {
        #[cfg(feature = "bug-injection")]
        let result = self.bug_ignores_store_error(id, result);
        let Some(done) = self.disk.complete(id, result) else {
            return;
        };
        let result = done.result;
        match done.purpose {
            Purpose::OpenFor(op) => self.op_opened(now, op, result),
            Purpose::ReadFor(op) => self.op_read(
                now,
                op,
                result.and_then(|d| match d {
                    StoreDone::Read(b) => Ok(b),
                    other => Err(odd(other)),
                }),
            ),
            Purpose::SetLenFor(op) => self.op_len_set(op, result.map(|_| ())),
            Purpose::Write { file, op } => {
                if let Err(e) = &result {
                    self.disk_trouble(now, file, e.clone());
                }
                if let Some(op) = op {
                    self.write_back_written(op);
                }
                self.forget_file_if_unused(file);
            }
            Purpose::Sync { file, op, .. } => {
                if let Err(e) = &result {
                    self.disk_trouble(now, file, e.clone());
                }
                match op {
                    Some(op) => self.sync_done(op),
                    None => {
                        self.shutdown_sync_done(now, id);
                        self.drain_sync_done(id);
                    }
                }
                self.forget_file_if_unused(file);
            }
            Purpose::Reopen(file) => {
                if let Err(e) = &result {
                    self.disk_trouble(now, file, e.clone());
                }
            }
            Purpose::Close => {}
            Purpose::SaveRunState => self.run_state_recorded(now, result.map(|_| ())),
        }
    }

    /// A write or fsync failed: the data stays in memory; tell the
    /// operator, and write it again later.
    fn disk_trouble(&mut self, now: Instant, file: super::ids::FileId, error: StoreError) {
        let path = self.files.files.get(&file).map(|f| f.path.clone());
        self.events
            .push_back(ServerEvent::DiskTrouble { path, error });
        self.schedule_store_retry(now);
    }
}

fn odd(d: StoreDone) -> StoreError {
    StoreError::Io(format!("the store answered with {d:?}, not what was asked"))
}
