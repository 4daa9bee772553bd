//! What one run of a server over an export tells the next: kept in the
//! export as [`RUN_STATE_NAME`](crate::store::RUN_STATE_NAME), replaced
//! atomically and durably by the store.
//!
//! - `grace_ms`: how long the next run must wait, from its start, before it
//!   grants write ownership, because clients of this run may still trust
//!   their leases and serve reads from their caches. A running server records
//!   its lease (or more, if it started inside an earlier run's grace), so
//!   that a crash is covered whatever lease the next run is given; a clean
//!   shutdown records what is left of the leases of clients that did not
//!   confirm its goodbye (usually nothing), or of the grace it started
//!   with, if that is more.
//! - `version_floor`: every page version this run issues is below it, so a
//!   later run starts numbering there and a version means the same page
//!   contents in every run.
//!
//! The format is text, one `key value` per line after a header line, so
//! that an operator can read it; unknown keys are ignored.

use std::time::Duration;

use bytes::Bytes;

/// The first line of the file.
const HEADER: &str = "rmmap run state 1";

/// Versions reserved per recording: a running server records a floor this
/// far above its next version, and records again when it has used half.
pub(crate) const VERSION_BLOCK: u64 = 1 << 32;

/// A decoded run state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RunState {
    /// Whether the run that wrote it was still running (it crashed, if a
    /// later run reads this).
    pub(crate) running: bool,
    pub(crate) grace: Duration,
    pub(crate) version_floor: u64,
}

impl RunState {
    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(format!(
            "{HEADER}\nrunning {}\ngrace_ms {}\nversion_floor {}\n",
            self.running as u8,
            self.grace.as_millis(),
            self.version_floor
        ))
    }

    pub(crate) fn decode(raw: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(raw).map_err(|_| "it is not text".to_string())?;
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(format!("its first line is not `{HEADER}`"));
        }
        let (mut running, mut grace, mut floor) = (None, None, None);
        for line in lines {
            let Some((key, value)) = line.split_once(' ') else {
                continue;
            };
            let n = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("`{key}` is not a number: {value:?}"))
            };
            match key {
                "running" => running = Some(n()? != 0),
                "grace_ms" => grace = Some(Duration::from_millis(n()?)),
                "version_floor" => floor = Some(n()?),
                _ => {}
            }
        }
        Ok(RunState {
            running: running.ok_or("`running` is missing")?,
            grace: grace.ok_or("`grace_ms` is missing")?,
            version_floor: floor.ok_or("`version_floor` is missing")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_state_reads_back_as_written_and_bad_ones_say_why() {
        let s = RunState {
            running: true,
            grace: Duration::from_millis(10_000),
            version_floor: 1 << 33,
        };
        assert_eq!(RunState::decode(&s.encode()).unwrap(), s);
        assert!(
            RunState::decode(b"junk")
                .unwrap_err()
                .contains("first line")
        );
        assert!(
            RunState::decode(b"rmmap run state 1\nrunning 1\n")
                .unwrap_err()
                .contains("grace_ms")
        );
        assert!(
            RunState::decode(b"rmmap run state 1\nrunning x\ngrace_ms 1\nversion_floor 2\n")
                .unwrap_err()
                .contains("not a number")
        );
    }
}
