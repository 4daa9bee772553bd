//! Virtual time for the state machines.
//!
//! The core never reads a clock. Every entry point takes `now: Instant`, a
//! point in time counted in nanoseconds from an origin the caller chooses
//! (the adapters use the moment they started; the simulator uses zero). Only
//! differences between instants matter, which keeps runs reproducible.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::time::Duration;

/// A point in time, in nanoseconds since an origin chosen by the caller.
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The origin.
    pub const ZERO: Instant = Instant(0);

    /// An instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    /// An instant `d` after the origin (saturating at about 584 years).
    pub fn from_duration(d: Duration) -> Self {
        Instant(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_sub(nanos))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating: an `earlier` that is later gives zero.
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t+{:?}", Duration::from_nanos(self.0))
    }
}

/// Counts a real monotonic clock as core time: the instants an adapter
/// reads, as nanoseconds since an origin it chose (usually the moment it
/// started). The adapter reads the clock; this only converts, both ways.
#[derive(Copy, Clone, Debug)]
pub struct Epoch {
    origin: std::time::Instant,
}

impl Epoch {
    /// Core time counted from `origin`.
    pub fn new(origin: std::time::Instant) -> Self {
        Epoch { origin }
    }

    /// A real instant as core time (an instant before the origin is the
    /// origin).
    pub fn to_core(&self, at: std::time::Instant) -> Instant {
        Instant::from_duration(at.saturating_duration_since(self.origin))
    }

    /// A core instant (a deadline) as a real one.
    pub fn to_real(&self, at: Instant) -> std::time::Instant {
        self.origin + Duration::from_nanos(at.as_nanos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        let t = Instant::from_nanos(10);
        assert_eq!(t - Duration::from_nanos(20), Instant::ZERO);
        assert_eq!(Instant::ZERO - t, Duration::ZERO);
        assert_eq!(
            Instant::from_nanos(u64::MAX) + Duration::from_secs(1),
            Instant::from_nanos(u64::MAX)
        );
        assert_eq!(t + Duration::from_nanos(5) - t, Duration::from_nanos(5));
    }

    #[test]
    fn deadlines_round_trip_through_core_time() {
        let origin = std::time::Instant::now();
        let e = Epoch::new(origin);
        let later = origin + Duration::from_millis(1500);
        assert_eq!(e.to_real(e.to_core(later)), later);
        assert_eq!(e.to_core(origin), Instant::ZERO);
        let before = origin.checked_sub(Duration::from_secs(1));
        if let Some(b) = before {
            assert_eq!(e.to_core(b), Instant::ZERO);
        }
    }
}
