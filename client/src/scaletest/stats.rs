//! Latency samples: a bounded reservoir per metric and nearest-rank percentiles.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Samples kept per metric at most. Past it, reservoir sampling (Algorithm R) keeps a uniform
/// random subset, so memory stays bounded whatever chats × turns × tokens is; `count` and `max`
/// stay exact, percentiles become estimates from the kept subset.
pub const RESERVOIR_CAPACITY: usize = 200_000;

/// One metric's samples, in milliseconds.
pub struct Reservoir {
    capacity: usize,
    samples: Vec<f64>,
    /// Every value ever recorded, kept or not.
    count: u64,
    max: Option<f64>,
    rng: StdRng,
}

/// What the report says about one metric (milliseconds). Percentiles are `None` without samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Reservoir {
    pub fn new(capacity: usize) -> Reservoir {
        Reservoir::with_rng(capacity, StdRng::from_entropy())
    }

    fn with_rng(capacity: usize, rng: StdRng) -> Reservoir {
        Reservoir {
            capacity: capacity.max(1),
            samples: Vec::new(),
            count: 0,
            max: None,
            rng,
        }
    }

    pub fn record(&mut self, value: f64) {
        self.count += 1;
        if self.max.is_none_or(|max| value > max) {
            self.max = Some(value);
        }
        if self.samples.len() < self.capacity {
            self.samples.push(value);
        } else {
            // Algorithm R: the n-th value replaces a kept one with probability capacity / n.
            let slot = self.rng.gen_range(0..self.count);
            if let Some(kept) = self.samples.get_mut(slot as usize) {
                *kept = value;
            }
        }
    }

    /// Values kept for percentiles (≤ capacity).
    pub fn stored(&self) -> usize {
        self.samples.len()
    }

    pub fn summary(&self) -> Summary {
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        Summary {
            count: self.count,
            p50: percentile(&sorted, 50.0).map(round_us),
            p90: percentile(&sorted, 90.0).map(round_us),
            p99: percentile(&sorted, 99.0).map(round_us),
            max: self.max.map(round_us),
        }
    }
}

/// Nearest-rank percentile of ascending `sorted` values: the smallest value with at least
/// `percent` % of all values at or below it. `None` when there are no values.
pub fn percentile(sorted: &[f64], percent: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Milliseconds to three decimals (microsecond resolution) for the report.
fn round_us(milliseconds: f64) -> f64 {
    (milliseconds * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 90.0), Some(90.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        assert_eq!(percentile(&values, 0.0), Some(1.0));

        let few = [3.0, 7.0, 9.0];
        assert_eq!(percentile(&few, 50.0), Some(7.0));
        assert_eq!(percentile(&few, 90.0), Some(9.0));
        assert_eq!(percentile(&few, 99.0), Some(9.0));
        assert_eq!(percentile(&[4.5], 99.0), Some(4.5));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_sorts_before_picking() {
        let mut reservoir = Reservoir::new(10);
        for value in [5.0, 1.0, 4.0, 2.0, 3.0] {
            reservoir.record(value);
        }
        let summary = reservoir.summary();
        assert_eq!(summary.count, 5);
        assert_eq!(summary.p50, Some(3.0));
        assert_eq!(summary.p90, Some(5.0));
        assert_eq!(summary.max, Some(5.0));
    }

    #[test]
    fn empty_summary_has_no_percentiles() {
        let summary = Reservoir::new(4).summary();
        assert_eq!(summary.count, 0);
        assert_eq!(summary.p50, None);
        assert_eq!(summary.max, None);
    }

    #[test]
    fn reservoir_stays_bounded_and_keeps_exact_count_and_max() {
        let mut reservoir = Reservoir::with_rng(100, StdRng::seed_from_u64(7));
        for value in 0..10_000 {
            reservoir.record(f64::from(value));
        }
        assert_eq!(reservoir.stored(), 100);
        let summary = reservoir.summary();
        assert_eq!(summary.count, 10_000);
        assert_eq!(summary.max, Some(9_999.0));
        // A uniform sample of 0..10000: the median lands near 5000, not at the first values.
        let median = summary.p50.unwrap_or_default();
        assert!((3_000.0..7_000.0).contains(&median), "median {median}");
    }
}
