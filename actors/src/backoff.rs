//! The exponential backoff schedule, as a small pure value type.
//!
//! `delay(attempt) = min(max, initial × multiplier^attempt)`, then spread by a random factor in
//! `[1 - jitter, 1 + jitter]` so that several wardens restarting together do not hammer a
//! recovering database in lockstep. The same type paces reconnects (`[backoff]`) and the retries
//! of one call (`[retry]`, multiplier 2). It has no clock and no runtime, so it is unit- and
//! property-tested on its own.

use std::time::Duration;

use rand::Rng;

use crate::settings::{BackoffSettings, RetrySettings};

/// A validated schedule plus the number of delays handed out since the last reset.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
    attempt: u32,
}

impl Backoff {
    /// A schedule from explicit values, clamped into range: `max >= initial`,
    /// `multiplier >= 1`, `jitter` in `0..=1`. Settings are validated at startup, so clamping
    /// only ever matters for programmatic use.
    pub fn new(initial: Duration, max: Duration, multiplier: f64, jitter: f64) -> Self {
        let multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            1.0
        };
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Self {
            initial,
            max: max.max(initial),
            multiplier,
            jitter,
            attempt: 0,
        }
    }

    /// The reconnect schedule of `[backoff]`.
    pub fn reconnect(s: &BackoffSettings) -> Self {
        Self::new(s.initial, s.max, s.multiplier, s.jitter)
    }

    /// The retry schedule of `[retry]`: doubling, with the reconnect schedule's jitter.
    pub fn retry(s: &RetrySettings, jitter: f64) -> Self {
        Self::new(s.initial, s.max, 2.0, jitter)
    }

    /// The delay for `attempt` (0-based) before jitter.
    pub fn base(&self, attempt: u32) -> Duration {
        // powi saturates to infinity for large attempts, and min() then caps it at max.
        let factor = self.multiplier.powi(attempt.min(i32::MAX as u32) as i32);
        let secs = self.initial.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The bounds any jittered delay for `attempt` falls in.
    pub fn bounds(&self, attempt: u32) -> (Duration, Duration) {
        let base = self.base(attempt).as_secs_f64();
        (
            Duration::from_secs_f64(base * (1.0 - self.jitter)),
            Duration::from_secs_f64(base * (1.0 + self.jitter)),
        )
    }

    /// Hands out the next delay and counts the attempt.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let base = self.base(self.attempt).as_secs_f64();
        self.attempt = self.attempt.saturating_add(1);
        let spread = if self.jitter > 0.0 {
            rng.random_range(-self.jitter..=self.jitter)
        } else {
            0.0
        };
        Duration::from_secs_f64((base * (1.0 + spread)).max(0.0))
    }

    /// Back to `initial`, after a successful connect.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Delays handed out since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn default_schedule_doubles_to_the_cap() {
        let b = Backoff::reconnect(&BackoffSettings::default());
        let bases: Vec<_> = (0..7).map(|a| b.base(a).as_secs()).collect();
        assert_eq!(bases, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.base(10_000), Duration::from_secs(30));
    }

    #[test]
    fn reset_starts_over() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = Backoff::new(ms(100), ms(1000), 2.0, 0.0);
        assert_eq!(b.next_delay(&mut rng), ms(100));
        assert_eq!(b.next_delay(&mut rng), ms(200));
        assert_eq!(b.attempt(), 2);
        b.reset();
        assert_eq!(b.next_delay(&mut rng), ms(100));
    }

    #[test]
    fn retry_schedule_is_1_2_4_4() {
        let b = Backoff::retry(&RetrySettings::default(), 0.0);
        let bases: Vec<_> = (0..4).map(|a| b.base(a).as_secs()).collect();
        assert_eq!(bases, vec![1, 2, 4, 4]);
    }

    proptest! {
        /// Every delay stays within ±jitter of min(max, initial × multiplier^attempt), and the
        /// un-jittered schedule never decreases: no hot loop, never stuck at zero.
        #[test]
        fn delays_stay_within_bounds(
            initial_ms in 1u64..5_000,
            extra_ms in 0u64..60_000,
            multiplier in 1.0f64..4.0,
            jitter in 0.0f64..=1.0,
            seed in any::<u64>(),
            steps in 1usize..40,
        ) {
            let initial = ms(initial_ms);
            let max = ms(initial_ms + extra_ms);
            let mut b = Backoff::new(initial, max, multiplier, jitter);
            let mut rng = StdRng::seed_from_u64(seed);
            let mut last_base = Duration::ZERO;
            for attempt in 0..steps as u32 {
                let base = b.base(attempt);
                prop_assert!(base >= initial && base <= max);
                prop_assert!(base >= last_base);
                last_base = base;
                let (lo, hi) = b.bounds(attempt);
                let d = b.next_delay(&mut rng);
                // One microsecond of slack for float rounding.
                prop_assert!(d + Duration::from_micros(1) >= lo, "{d:?} < {lo:?}");
                prop_assert!(d <= hi + Duration::from_micros(1), "{d:?} > {hi:?}");
                if jitter < 1.0 {
                    prop_assert!(d > Duration::ZERO);
                }
            }
        }
    }
}
