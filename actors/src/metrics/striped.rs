//! Counts that every call adds to, kept in per-thread stripes.
//!
//! An atomic add is cheap while its cache line stays in one core's cache, and costs a
//! round trip between cores when two threads add to the same line in turn: with calls
//! running on every worker of a runtime, one shared counter per outcome and one shared
//! histogram made each call wait for lines the other workers had just written (perf, 8
//! callers on 2 workers). Each thread adds to the stripe it was given (round-robin, at its
//! first call); a scrape sums the stripes. Same totals, no line written by two busy threads
//! unless more than [`STRIPES`] threads record.

use std::sync::{
    atomic::{AtomicU64, AtomicUsize, Ordering},
    Arc,
};

use crossbeam_utils::CachePadded;
use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

/// Stripes per count: more than the worker threads a small service runs.
pub(crate) const STRIPES: usize = 8;

/// The stripe the current thread adds to.
pub(crate) fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

/// A monotonic counter in stripes, encoded as a Prometheus counter. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct StripedCounter(Arc<[CachePadded<AtomicU64>; STRIPES]>);

impl StripedCounter {
    /// Adds one: a relaxed add on this thread's stripe.
    pub fn inc(&self) {
        self.0[stripe()].fetch_add(1, Ordering::Relaxed);
    }

    /// The total of every stripe.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|l| l.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for StripedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for StripedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_counts_into_the_same_total() {
        let c = StripedCounter::default();
        std::thread::scope(|s| {
            for _ in 0..(STRIPES + 3) {
                let c = c.clone();
                s.spawn(move || {
                    for _ in 0..1000 {
                        c.inc();
                    }
                });
            }
        });
        assert_eq!(c.get(), 1000 * (STRIPES as u64 + 3));
    }
}
