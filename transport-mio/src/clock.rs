//! The operating system's monotonic clock as the core's virtual time.

use std::time::Duration;

use rmmap_core::time::Epoch;

/// Reads `std::time::Instant` and counts it as core time from the moment
/// the clock was made (the conversion is the core's [`Epoch`]).
#[derive(Copy, Clone, Debug)]
pub(crate) struct Clock(Epoch);

impl Clock {
    pub(crate) fn new() -> Self {
        Clock(Epoch::new(std::time::Instant::now()))
    }

    /// Now, as the core counts time.
    pub(crate) fn now(&self) -> rmmap_core::Instant {
        self.0.to_core(std::time::Instant::now())
    }

    /// A core deadline as a real instant.
    pub(crate) fn deadline(&self, at: rmmap_core::Instant) -> std::time::Instant {
        self.0.to_real(at)
    }
}

/// How long `mio::Poll::poll` may sleep to wake up at `deadline`.
pub(crate) fn until(deadline: Option<std::time::Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()))
}
