//! The operating system's monotonic clock as the core's virtual time.

use std::time::Duration;

/// Converts between [`std::time::Instant`] and [`rmmap_core::Instant`]
/// (nanoseconds since the moment the clock was made).
#[derive(Copy, Clone, Debug)]
pub(crate) struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            origin: std::time::Instant::now(),
        }
    }

    /// Now, as the core counts time.
    pub(crate) fn now(&self) -> rmmap_core::Instant {
        self.core(std::time::Instant::now())
    }

    /// A real instant as the core counts time.
    pub(crate) fn core(&self, at: std::time::Instant) -> rmmap_core::Instant {
        rmmap_core::Instant::from_duration(at.saturating_duration_since(self.origin))
    }

    /// A core deadline as a real instant.
    pub(crate) fn deadline(&self, at: rmmap_core::Instant) -> std::time::Instant {
        self.origin + Duration::from_nanos(at.as_nanos())
    }
}

/// How long `mio::Poll::poll` may sleep to wake up at `deadline`.
pub(crate) fn until(deadline: Option<std::time::Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()))
}

/// 32 bytes from the operating system's random source, for the core's seeds.
pub(crate) fn random_seed() -> std::io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| std::io::Error::other(format!("no random seed: {e}")))?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_trip_through_core_time() {
        let c = Clock::new();
        let later = std::time::Instant::now() + Duration::from_millis(1500);
        let back = c.deadline(c.core(later));
        assert!(back <= later && later - back < Duration::from_micros(1));
        assert_eq!(c.core(c.origin), rmmap_core::Instant::ZERO);
    }
}
