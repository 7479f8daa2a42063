//! The circuit breaker state machine for one database, pure and clock-free.
//!
//! `Closed { failures }` counts consecutive failures and opens at the threshold.
//! `Open { until }` refuses calls until the cooldown ends; then the circuit is `HalfOpen`, and
//! the database actor's own probe is the trial (never a caller's query): a successful probe
//! closes it, a failed one opens it for another cooldown. Time is passed in, so every transition
//! is unit-tested without a runtime; [`crate::breaker::BreakerActor`] owns the plumbing.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::settings::MAX_SUPERVISION_DELAY;

/// Where an outcome came from: only probes may close a half-open circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The actor's periodic liveness probe (or its connect).
    Probe,
    /// A caller's query attempt.
    Query,
}

/// The circuit's state, with the data each state needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls pass; `failures` consecutive failures so far.
    Closed {
        /// Consecutive failures since the last success.
        failures: u32,
    },
    /// Calls are refused until `until`.
    Open {
        /// When the circuit opened.
        since: Instant,
        /// When the cooldown ends and the circuit becomes half-open.
        until: Instant,
        /// Consecutive failures, still counted while open.
        failures: u32,
    },
    /// Cooldown over: calls are still refused, the next probe decides.
    HalfOpen {
        /// When the circuit first opened, kept for health output.
        since: Instant,
        /// Consecutive failures so far.
        failures: u32,
    },
}

/// The state names shown in health output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitStatus {
    /// Calls pass.
    Closed,
    /// Calls are refused.
    Open,
    /// Calls are refused until the next probe succeeds.
    HalfOpen,
}

/// One database's circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Circuit {
    state: CircuitState,
    threshold: u32,
    cooldown: Duration,
    /// How long a caller refused by a half-open circuit should wait: the probe interval.
    half_open_retry: Duration,
}

impl Circuit {
    /// A closed circuit. `cooldown` is clamped to [`MAX_SUPERVISION_DELAY`], the bound settings
    /// are validated to, so that opening the circuit (`now + cooldown`) cannot overflow the
    /// clock whatever a program passes.
    pub fn new(threshold: u32, cooldown: Duration, half_open_retry: Duration) -> Self {
        Self {
            state: CircuitState::Closed { failures: 0 },
            threshold: threshold.max(1),
            cooldown: cooldown.min(MAX_SUPERVISION_DELAY),
            half_open_retry,
        }
    }

    /// The state as of `now`: an `Open` circuit whose cooldown has passed is `HalfOpen`, even
    /// before anyone calls [`Circuit::tick`].
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.state {
            CircuitState::Open {
                since,
                until,
                failures,
            } if now >= until => CircuitState::HalfOpen { since, failures },
            s => s,
        }
    }

    /// The health name of the state as of `now`.
    pub fn status(&self, now: Instant) -> CircuitStatus {
        match self.state(now) {
            CircuitState::Closed { .. } => CircuitStatus::Closed,
            CircuitState::Open { .. } => CircuitStatus::Open,
            CircuitState::HalfOpen { .. } => CircuitStatus::HalfOpen,
        }
    }

    /// Consecutive failures counted so far.
    pub fn failures(&self) -> u32 {
        match self.state {
            CircuitState::Closed { failures }
            | CircuitState::Open { failures, .. }
            | CircuitState::HalfOpen { failures, .. } => failures,
        }
    }

    /// When the circuit opened, unless it is closed.
    pub fn opened_at(&self) -> Option<Instant> {
        match self.state {
            CircuitState::Closed { .. } => None,
            CircuitState::Open { since, .. } | CircuitState::HalfOpen { since, .. } => Some(since),
        }
    }

    /// `Ok` when a call may pass; otherwise how long the caller should wait.
    pub fn check(&self, now: Instant) -> Result<(), Duration> {
        match self.state(now) {
            CircuitState::Closed { .. } => Ok(()),
            CircuitState::Open { until, .. } => Err(until - now),
            CircuitState::HalfOpen { .. } => Err(self.half_open_retry),
        }
    }

    /// Whether a success would change anything; lets callers skip reporting the common case.
    pub fn is_clean(&self) -> bool {
        self.state == CircuitState::Closed { failures: 0 }
    }

    /// Applies the cooldown's end; returns whether the state changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        let before = self.state;
        self.state = self.state(now);
        before != self.state
    }

    /// Records one outcome at `now`; returns whether the state's kind changed (closed, open,
    /// half-open), which is what gets logged and pushed to health.
    pub fn record(&mut self, success: bool, source: Source, now: Instant) -> bool {
        let before = self.status(now);
        let cooldown = self.cooldown;
        self.state = match (self.state(now), success, source) {
            // A success while closed resets the count of consecutive failures.
            (CircuitState::Closed { .. }, true, _) => CircuitState::Closed { failures: 0 },
            // Failures while closed accumulate, and open the circuit at the threshold.
            (CircuitState::Closed { failures }, false, _) => {
                let failures = failures.saturating_add(1);
                if failures >= self.threshold {
                    CircuitState::Open {
                        since: now,
                        until: now + cooldown,
                        failures,
                    }
                } else {
                    CircuitState::Closed { failures }
                }
            }
            // While open nothing closes it early: a success is a call that was already in
            // flight. Failures are counted but do not extend the cooldown.
            (
                CircuitState::Open {
                    since,
                    until,
                    failures,
                },
                success,
                _,
            ) => CircuitState::Open {
                since,
                until,
                failures: if success {
                    failures
                } else {
                    failures.saturating_add(1)
                },
            },
            // Half-open: the probe is the trial. Success closes, failure re-opens.
            (CircuitState::HalfOpen { .. }, true, Source::Probe) => {
                CircuitState::Closed { failures: 0 }
            }
            (CircuitState::HalfOpen { failures, .. }, false, Source::Probe) => CircuitState::Open {
                since: now,
                until: now + cooldown,
                failures: failures.saturating_add(1),
            },
            // A query outcome in half-open comes from a call started before the circuit opened;
            // it does not decide anything.
            (s @ CircuitState::HalfOpen { .. }, _, Source::Query) => s,
        };
        before != self.status(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit() -> Circuit {
        Circuit::new(3, Duration::from_secs(10), Duration::from_millis(500))
    }

    #[test]
    fn a_cooldown_too_long_for_the_clock_is_clamped_not_a_panic() {
        let t = Instant::now();
        let mut c = Circuit::new(1, Duration::MAX, Duration::from_millis(500));
        assert!(c.record(false, Source::Probe, t));
        assert_eq!(c.check(t), Err(MAX_SUPERVISION_DELAY));
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let t = Instant::now();
        let mut c = circuit();
        assert!(!c.record(false, Source::Query, t));
        assert!(!c.record(false, Source::Probe, t));
        assert_eq!(c.check(t), Ok(()));
        assert!(c.record(false, Source::Query, t));
        assert_eq!(c.status(t), CircuitStatus::Open);
        assert_eq!(
            c.check(t + Duration::from_secs(4)),
            Err(Duration::from_secs(6))
        );
        assert_eq!(c.opened_at(), Some(t));
    }

    #[test]
    fn a_success_resets_the_count() {
        let t = Instant::now();
        let mut c = circuit();
        c.record(false, Source::Query, t);
        c.record(false, Source::Query, t);
        c.record(true, Source::Query, t);
        assert!(c.is_clean());
        c.record(false, Source::Query, t);
        c.record(false, Source::Query, t);
        assert_eq!(c.status(t), CircuitStatus::Closed);
        assert_eq!(c.failures(), 2);
    }

    #[test]
    fn cooldown_leads_to_half_open_and_only_a_probe_closes() {
        let t = Instant::now();
        let mut c = circuit();
        for _ in 0..3 {
            c.record(false, Source::Query, t);
        }
        // Successes of in-flight calls do not close an open circuit.
        assert!(!c.record(true, Source::Query, t + Duration::from_secs(1)));
        assert_eq!(c.status(t + Duration::from_secs(1)), CircuitStatus::Open);

        let later = t + Duration::from_secs(10);
        assert_eq!(c.status(later), CircuitStatus::HalfOpen);
        assert_eq!(c.check(later), Err(Duration::from_millis(500)));
        assert!(c.tick(later));
        // A query success while half-open decides nothing.
        assert!(!c.record(true, Source::Query, later));
        assert_eq!(c.status(later), CircuitStatus::HalfOpen);
        assert!(c.record(true, Source::Probe, later));
        assert_eq!(c.status(later), CircuitStatus::Closed);
        assert!(c.is_clean());
    }

    #[test]
    fn a_failed_trial_reopens_for_another_cooldown() {
        let t = Instant::now();
        let mut c = circuit();
        for _ in 0..3 {
            c.record(false, Source::Probe, t);
        }
        let later = t + Duration::from_secs(11);
        assert!(c.record(false, Source::Probe, later));
        assert_eq!(c.status(later), CircuitStatus::Open);
        assert_eq!(c.check(later), Err(Duration::from_secs(10)));
        assert_eq!(c.opened_at(), Some(later));
    }
}
