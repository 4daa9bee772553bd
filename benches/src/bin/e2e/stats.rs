//! Small numeric helpers: percentiles, medians, a seeded shuffle, the file
//! pattern, and the `key=value` result lines child processes print.

use std::collections::BTreeMap;
use std::time::Duration;

/// The metrics one run reports, by name.
pub(crate) type Metrics = BTreeMap<String, f64>;

/// The `q`-quantile (0..=1) of `samples` (sorted in place), nearest rank.
pub(crate) fn quantile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// The median of several runs' values (NaN when there is none).
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    quantile(&mut values, 0.5)
}

/// Microseconds in a duration, as a float.
pub(crate) fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// MiB per second for `bytes` in `d`.
pub(crate) fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

/// A small deterministic generator (xorshift64*), so runs pick the same pages.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `count` distinct numbers below `n`, in random order.
    pub(crate) fn distinct(&mut self, n: u64, count: usize) -> Vec<u64> {
        let mut all: Vec<u64> = (0..n).collect();
        let count = count.min(all.len());
        for i in 0..count {
            let j = i + (self.next() % (all.len() - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(count);
        all
    }
}

/// The byte at `offset` of the benchmark's data file: never constant over a
/// page, so a wrong page shows.
pub(crate) fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8 ^ (offset >> 12) as u8
}

/// Formats a result line: `result k=v k=v`.
pub(crate) fn result_line(m: &Metrics) -> String {
    let mut s = String::from("result");
    for (k, v) in m {
        s.push_str(&format!(" {k}={v}"));
    }
    s
}

/// Parses a result line printed by [`result_line`].
pub(crate) fn parse_result(line: &str) -> Option<Metrics> {
    let rest = line.strip_prefix("result")?;
    let mut m = Metrics::new();
    for kv in rest.split_whitespace() {
        let (k, v) = kv.split_once('=')?;
        m.insert(k.to_owned(), v.parse().ok()?);
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), 51.0);
        assert_eq!(quantile(&mut v, 0.99), 99.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn distinct_numbers_are_distinct_and_in_range() {
        let mut v = Rng::new(7).distinct(1000, 500);
        assert!(v.iter().all(|&x| x < 1000));
        v.sort_unstable();
        v.dedup();
        assert_eq!(v.len(), 500);
    }

    #[test]
    fn result_lines_round_trip() {
        let mut m = Metrics::new();
        m.insert("mib_s".into(), 1234.5);
        m.insert("p50_us".into(), 17.25);
        assert_eq!(parse_result(&result_line(&m)), Some(m));
    }
}
