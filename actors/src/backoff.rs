//! The exponential backoff schedule, as a small pure value type.
//!
//! `base(attempt) = min(max, initial × multiplier^attempt)`, then spread uniformly over
//! `[base × (1 - jitter), min(max, base × (1 + jitter))]` so that several wardens restarting
//! together do not hammer a recovering database in lockstep. `max` is a promise to the operator
//! ("never wait longer than this"), so jitter never pushes a delay above it: at the cap the spread
//! only goes down. The range is narrowed rather than the sample clamped, so that delays at the
//! cap stay spread out instead of piling up on exactly `max`. The same type paces reconnects
//! (`[backoff]`) and the retries of one call (`[retry]`, multiplier 2). It has no clock and no
//! runtime, so it is unit- and property-tested on its own.

use std::time::Duration;

use rand::Rng;

use crate::settings::{
    BackoffSettings, RetrySettings, MAX_BACKOFF_MULTIPLIER, MAX_SUPERVISION_DELAY,
};

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
    /// A schedule from explicit values, clamped into the range settings are validated to:
    /// `initial <= max <= MAX_SUPERVISION_DELAY`, `multiplier` in `1..=MAX_BACKOFF_MULTIPLIER`,
    /// `jitter` in `0..=1`. Settings are validated at startup, so clamping only ever matters
    /// for programmatic use; it keeps every delay under two hours, so that callers can add
    /// one to `Instant::now()` or to the wall clock without overflow.
    pub fn new(initial: Duration, max: Duration, multiplier: f64, jitter: f64) -> Self {
        let multiplier = if multiplier.is_finite() {
            multiplier.clamp(1.0, MAX_BACKOFF_MULTIPLIER)
        } else {
            1.0
        };
        let initial = initial.min(MAX_SUPERVISION_DELAY);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Self {
            initial,
            max: max.clamp(initial, MAX_SUPERVISION_DELAY),
            multiplier,
            jitter,
            attempt: 0,
        }
    }

    /// The reconnect schedule of `[backoff]`.
    pub fn reconnect(s: &BackoffSettings) -> Self {
        Self::new(s.initial, s.max, s.multiplier, s.jitter)
    }

    /// The reconnect schedule of `[backoff]` as changed at run time, at the same attempt: the
    /// next delay follows the new values from where the old schedule had got to.
    pub fn retuned(&self, s: &BackoffSettings) -> Self {
        Self {
            attempt: self.attempt,
            ..Self::reconnect(s)
        }
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
            saturating_secs(secs)
        }
    }

    /// The bounds any jittered delay for `attempt` falls in: `base × (1 ± jitter)`, the upper
    /// end capped at `max`.
    pub fn bounds(&self, attempt: u32) -> (Duration, Duration) {
        let (lo, hi) = self.bounds_secs(attempt);
        (saturating_secs(lo), saturating_secs(hi))
    }

    /// [`Backoff::bounds`] in seconds; `lo <= hi` always, since `base <= max`.
    fn bounds_secs(&self, attempt: u32) -> (f64, f64) {
        let base = self.base(attempt).as_secs_f64();
        let lo = base * (1.0 - self.jitter);
        let hi = (base * (1.0 + self.jitter)).min(self.max.as_secs_f64());
        (lo, hi.max(lo))
    }

    /// Hands out the next delay and counts the attempt.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let (lo, hi) = self.bounds_secs(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let secs = if hi > lo {
            rng.random_range(lo..=hi)
        } else {
            lo
        };
        // The float-to-Duration conversion may round up by a nanosecond; `max` stays a cap.
        saturating_secs(secs).min(self.max)
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

/// Seconds as a `Duration`, never panicking: `Duration::from_secs_f64` does on a negative,
/// NaN or too large value, which float rounding at the edges of the range could produce.
fn saturating_secs(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
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

    /// At the cap, jitter only shortens the delay, and the delays stay spread out rather than
    /// all landing on `max` (which would put restarting instances back in lockstep).
    #[test]
    fn jitter_at_the_cap_stays_under_max_and_spread() {
        let mut rng = StdRng::seed_from_u64(11);
        let max = ms(30_000);
        let mut b = Backoff::new(ms(1_000), max, 2.0, 0.2);
        b.attempt = 10;
        let delays: Vec<_> = (0..200).map(|_| b.next_delay(&mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= max), "{delays:?}");
        assert!(delays.iter().all(|d| *d >= ms(24_000)), "{delays:?}");
        let at_max = delays.iter().filter(|d| **d == max).count();
        assert!(at_max <= 2, "{at_max} of 200 delays exactly at max");
        let lowest = delays.iter().min().unwrap();
        assert!(*lowest < ms(25_000), "spread too narrow: lowest {lowest:?}");
        assert_eq!(b.bounds(10), (ms(24_000), max));
    }

    #[test]
    fn retry_schedule_is_1_2_4_4() {
        let b = Backoff::retry(&RetrySettings::default(), 0.0);
        let bases: Vec<_> = (0..4).map(|a| b.base(a).as_secs()).collect();
        assert_eq!(bases, vec![1, 2, 4, 4]);
    }

    /// Adds a delay to both clocks the actors add delays to, the way they do it: panics if
    /// either overflows.
    fn add_to_clocks(d: Duration) {
        let _ = std::time::Instant::now() + d;
        let _ = chrono::Utc::now() + chrono::Duration::from_std(d).unwrap();
    }

    proptest! {
        /// For every value `WardenSettings::validate` accepts, and any attempt count, the
        /// schedule never panics, and its delays stay under twice the largest accepted delay,
        /// so that adding one to a clock cannot overflow.
        #[test]
        fn accepted_settings_never_panic(
            initial_ns in 1u64..=MAX_SUPERVISION_DELAY.as_nanos() as u64,
            max_ns in 1u64..=MAX_SUPERVISION_DELAY.as_nanos() as u64,
            multiplier in 1.0f64..=MAX_BACKOFF_MULTIPLIER,
            jitter in 0.0f64..=1.0,
            attempt in any::<u32>(),
            seed in any::<u64>(),
        ) {
            let initial = Duration::from_nanos(initial_ns.min(max_ns));
            let s = BackoffSettings {
                initial,
                max: Duration::from_nanos(max_ns),
                multiplier,
                jitter,
            };
            let settings = crate::WardenSettings { backoff: s, ..Default::default() };
            prop_assert_eq!(settings.validate(), Ok(()));
            let ceiling = 2 * MAX_SUPERVISION_DELAY;
            for mut b in [Backoff::reconnect(&s), Backoff::retry(&RetrySettings {
                max_attempts: 3,
                initial: initial.min(crate::settings::MAX_RETRY_DELAY),
                max: crate::settings::MAX_RETRY_DELAY,
            }, jitter)] {
                prop_assert!(b.base(attempt) <= ceiling);
                let (lo, hi) = b.bounds(attempt);
                prop_assert!(lo <= hi && hi <= ceiling);
                let mut rng = StdRng::seed_from_u64(seed);
                b.attempt = attempt;
                for _ in 0..3 {
                    let d = b.next_delay(&mut rng);
                    prop_assert!(d <= ceiling, "{d:?}");
                    add_to_clocks(d);
                }
            }
        }

        /// Whatever a program passes to `Backoff::new` (a `Duration::MAX`, a NaN or infinite
        /// multiplier or jitter), nothing panics and every delay stays under two hours.
        #[test]
        fn any_explicit_values_never_panic(
            initial in any::<Duration>(),
            max in any::<Duration>(),
            multiplier in prop_oneof![any::<f64>(), Just(f64::INFINITY), Just(f64::NAN), Just(1e300)],
            jitter in prop_oneof![any::<f64>(), Just(f64::INFINITY), Just(f64::NAN), 0.0f64..=1.0],
            attempt in any::<u32>(),
            seed in any::<u64>(),
        ) {
            let mut b = Backoff::new(initial, max, multiplier, jitter);
            let ceiling = 2 * MAX_SUPERVISION_DELAY;
            let (_, hi) = b.bounds(attempt);
            prop_assert!(hi <= ceiling);
            let mut rng = StdRng::seed_from_u64(seed);
            b.attempt = attempt;
            let d = b.next_delay(&mut rng);
            prop_assert!(d <= ceiling, "{d:?}");
            add_to_clocks(d);
        }

        /// Whatever the schedule and attempt, a jittered delay never exceeds `max`, the
        /// operator's "never wait longer than this" (for reconnects and for retries).
        #[test]
        fn jitter_never_exceeds_max(
            initial_ms in 1u64..60_000,
            extra_ms in 0u64..60_000,
            multiplier in 1.0f64..=MAX_BACKOFF_MULTIPLIER,
            jitter in 0.0f64..=1.0,
            attempt in 0u32..64,
            seed in any::<u64>(),
        ) {
            let max = ms(initial_ms + extra_ms);
            let mut b = Backoff::new(ms(initial_ms), max, multiplier, jitter);
            prop_assert!(b.bounds(attempt).1 <= max);
            b.attempt = attempt;
            let mut rng = StdRng::seed_from_u64(seed);
            for _ in 0..8 {
                let d = b.next_delay(&mut rng);
                prop_assert!(d <= max, "{d:?} > max {max:?}");
            }
        }

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
