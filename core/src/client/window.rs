//! How far ahead of a sequential reader or writer the client asks for
//! pages: a window that grows, as TCP's receive window does, while the
//! stream catches up with pages still on their way (the window did not
//! cover a round trip's worth of the stream), and shrinks when the cache is
//! full.
//!
//! The bound: one window is at most half the page cache
//! (`ClientConfig::max_cached_pages / 2`: 32 MiB of 4 KiB pages by
//! default), and every window halves (down to
//! `ClientConfig::readahead_pages`, where it starts) each time a stream
//! asks for more while the cache is full. Pages read or written behind the
//! stream are dropped once the cache is half full (drop-behind), and pages
//! that arrive count as just used, so eviction takes the pages behind a
//! stream before the ones ahead of it.

use crate::protocol::PageNo;

/// One stream's window, in pages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AheadWindow {
    pages: u64,
    /// The window grows again only once the stream reaches this page: at
    /// most once per window's worth of the stream, which is about once per
    /// round trip when the window is what limits it.
    grow_at: PageNo,
}

impl AheadWindow {
    /// A window of `initial` pages.
    pub(crate) fn new(initial: u64) -> Self {
        AheadWindow {
            pages: initial.max(1),
            grow_at: 0,
        }
    }

    /// Its size in pages.
    pub(crate) fn pages(&self) -> u64 {
        self.pages
    }

    /// The stream had to wait at page `at` for a page already asked for:
    /// doubles the window, up to `max` pages.
    pub(crate) fn stalled(&mut self, at: PageNo, max: u64) {
        if at < self.grow_at || self.pages >= max {
            return;
        }
        self.pages = self.pages.saturating_mul(2).min(max);
        self.grow_at = at.saturating_add(self.pages);
    }

    /// The cache is full: halves the window, down to `min` pages.
    pub(crate) fn squeezed(&mut self, min: u64) {
        self.pages = (self.pages / 2).max(min).max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_once_per_window_up_to_the_cap_and_halves_when_squeezed() {
        let mut w = AheadWindow::new(4);
        w.stalled(10, 64);
        assert_eq!(w.pages(), 8);
        // Stalls within the window just grown count once.
        w.stalled(12, 64);
        w.stalled(17, 64);
        assert_eq!(w.pages(), 8);
        w.stalled(18, 64);
        assert_eq!(w.pages(), 16);
        for at in [34, 50, 82, 200] {
            w.stalled(at, 64);
        }
        assert_eq!(w.pages(), 64, "capped");
        w.squeezed(4);
        assert_eq!(w.pages(), 32);
        for _ in 0..10 {
            w.squeezed(4);
        }
        assert_eq!(w.pages(), 4, "never below where it started");
    }
}
