//! A duration histogram whose `observe` is two atomic adds: no lock, no allocation, and no
//! cache line another busy thread writes (per-thread stripes, see `striped.rs`).
//!
//! prometheus-client's own `Histogram` keeps its buckets behind a `Mutex` (0.26), so every
//! call would take a lock that 32 callers on two I/O threads would contend for. This one keeps
//! each bucket in an `AtomicU64` and the sum in nanoseconds, and is encoded through
//! prometheus-client's encoders like any of its metrics (it implements `EncodeMetric`), so the
//! exposition format stays the crate's.
//!
//! A scrape reads the buckets one by one while calls go on, so the total it shows is the sum
//! of the buckets it read (the `+Inf` bucket and `_count` always agree); `_sum` may include an
//! observation or two that the buckets do not yet. Prometheus' `rate()` does not mind.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use super::striped::{stripe, STRIPES};
use crossbeam_utils::CachePadded;
use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

/// Upper bounds of the call and probe duration buckets, in seconds: from half a millisecond
/// (a `SELECT 1` on a warm pooled connection) to 10 s (beyond any sane `query_timeout`).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const LEN: usize = DURATION_BUCKETS.len();

/// A cheap handle to one histogram; clones share it.
#[derive(Debug, Clone, Default)]
pub struct DurationHistogram(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Upper bounds in nanoseconds, compared without a float conversion per call.
    bounds_ns: [u64; LEN],
    /// One per thread stripe (see `striped.rs`): a call adds to its own thread's.
    stripes: [CachePadded<Stripe>; STRIPES],
}

/// One stripe's observations: 128 bytes, on cache lines of their own (`CachePadded`).
#[derive(Debug)]
struct Stripe {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; LEN + 1],
    sum_ns: AtomicU64,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            bounds_ns: DURATION_BUCKETS.map(|s| (s * 1e9) as u64),
            stripes: std::array::from_fn(|_| {
                CachePadded::new(Stripe {
                    buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                    sum_ns: AtomicU64::new(0),
                })
            }),
        }
    }
}

impl DurationHistogram {
    /// Records one duration: two relaxed atomic adds on this thread's stripe.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = self
            .0
            .bounds_ns
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(LEN);
        let stripe = &self.0.stripes[stripe()];
        stripe.buckets[i].fetch_add(1, Ordering::Relaxed);
        stripe.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far (the sum of the buckets).
    pub fn count(&self) -> u64 {
        self.buckets().iter().map(|(_, n)| n).sum()
    }

    /// The sum of the observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        let ns: u64 = (self.0.stripes.iter())
            .map(|s| s.sum_ns.load(Ordering::Relaxed))
            .sum();
        ns as f64 / 1e9
    }

    /// `(upper bound in seconds, observations in that bucket)`, `+Inf` last.
    fn buckets(&self) -> Vec<(f64, u64)> {
        DURATION_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .enumerate()
            .map(|(i, bound)| {
                let n = (self.0.stripes.iter())
                    .map(|s| s.buckets[i].load(Ordering::Relaxed))
                    .sum();
                (bound, n)
            })
            .collect()
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets = self.buckets();
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum_seconds(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = DurationHistogram::default();
        h.observe(Duration::from_micros(500)); // on a bound: that bucket (le is inclusive)
        h.observe(Duration::from_micros(501));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60)); // past every bound: +Inf
        let b = h.buckets();
        assert_eq!(b.len(), DURATION_BUCKETS.len() + 1);
        assert_eq!(b[0], (0.0005, 1));
        assert_eq!(b[1], (0.001, 1));
        assert_eq!(b[6], (0.05, 1));
        assert_eq!(b[LEN], (f64::INFINITY, 1));
        assert_eq!(h.count(), 4);
        assert!(
            (h.sum_seconds() - 60.031001).abs() < 1e-9,
            "{}",
            h.sum_seconds()
        );
    }

    #[test]
    fn encodes_cumulative_buckets_with_a_count_that_matches_inf() {
        let mut registry = prometheus_client::registry::Registry::default();
        let h = DurationHistogram::default();
        registry.register_with_unit(
            "t",
            "test",
            prometheus_client::registry::Unit::Seconds,
            h.clone(),
        );
        h.observe(Duration::from_millis(2));
        h.observe(Duration::from_millis(3));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("t_seconds_bucket{le=\"0.0025\"} 1\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("t_seconds_count 2\n"), "{out}");
    }
}
