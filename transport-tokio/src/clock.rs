//! Tokio time as the core's virtual time.

use std::time::Duration;

/// Converts between `tokio::time::Instant` and [`rmmap_core::Instant`]
/// (nanoseconds since the moment the clock was made). Only `tokio::time`
/// is read, so simulated time (turmoil, a paused runtime) works.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Clock {
    origin: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            origin: tokio::time::Instant::now(),
        }
    }

    /// Now, as the core counts time.
    pub(crate) fn now(&self) -> rmmap_core::Instant {
        rmmap_core::Instant::from_duration(
            tokio::time::Instant::now().saturating_duration_since(self.origin),
        )
    }

    /// A core deadline as a Tokio instant.
    pub(crate) fn deadline(&self, at: rmmap_core::Instant) -> tokio::time::Instant {
        self.origin + Duration::from_nanos(at.as_nanos())
    }
}

/// 32 bytes from the operating system's random source, for the core's seeds.
pub(crate) fn random_seed() -> std::io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| std::io::Error::other(format!("no random seed: {e}")))?;
    Ok(seed)
}
