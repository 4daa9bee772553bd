//! Tokio time as the core's virtual time.

use rmmap_core::time::Epoch;

/// Reads `tokio::time::Instant` and counts it as core time from the moment
/// the clock was made (the conversion is the core's [`Epoch`]). Only
/// `tokio::time` is read, so simulated time (turmoil, a paused runtime)
/// works.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Clock(Epoch);

impl Clock {
    pub(crate) fn new() -> Self {
        Clock(Epoch::new(tokio::time::Instant::now().into_std()))
    }

    /// Now, as the core counts time.
    pub(crate) fn now(&self) -> rmmap_core::Instant {
        self.0.to_core(tokio::time::Instant::now().into_std())
    }

    /// A core deadline as a Tokio instant.
    pub(crate) fn deadline(&self, at: rmmap_core::Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.0.to_real(at))
    }
}
