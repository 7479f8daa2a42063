//! The circuit breaker for one database: pure and clock-free.
//!
//! **What opens it**: failed calls, weighed against successful ones. A [`Window`] holds the
//! outcomes of the last `2 × threshold` calls that say something about the database's health,
//! and the circuit opens when `threshold` of them failed. Contention (deadlocks, serialization
//! failures, lock timeouts), a caller's own mistakes and warden's refusals are not recorded at
//! all (`WardenError::counts_against_circuit`). Probes are not recorded either: a database
//! that answers `SELECT 1` and times out every real query (overload, the case a breaker exists
//! for) must still open it, which it could not while every probe success reset a count.
//!
//! **What closes it**: `Open { until }` refuses calls until its cooldown ends; then it is
//! `HalfOpen`, and the database actor's next successful probe closes it. A successful
//! *reconnect* closes it at once: a lost connection is the actor's business (it backs off and
//! refuses calls with `Unavailable`), so failures that came from the old connection say nothing
//! about the new one, and calls must flow as soon as the database is back. A circuit opened by
//! failures on a live connection never sees a reconnect, and keeps its cooldown.
//!
//! Time is passed in, so every transition is unit-tested without a runtime;
//! [`crate::breaker`] owns the plumbing, and keeps each window in an atomic so that recording
//! a call's outcome never sends a message.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::settings::MAX_SUPERVISION_DELAY;

/// The largest `breaker.failure_threshold`: a window of twice that many outcomes fits in one
/// atomic word beside its length.
pub const MAX_THRESHOLD: u32 = 28;

/// The outcomes of the last calls, newest in the lowest bit (1: failed), with how many it
/// holds in the top byte: one `u64`, updated with a compare-and-swap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window(u64);

const LEN_SHIFT: u32 = 56;
const BITS: u64 = (1 << LEN_SHIFT) - 1;

impl Window {
    /// The window as stored.
    pub fn from_bits(raw: u64) -> Self {
        Self(raw)
    }

    /// The word to store.
    pub fn to_bits(self) -> u64 {
        self.0
    }

    /// With one more outcome, keeping the last `size` (at most 56).
    pub fn record(self, failed: bool, size: u32) -> Self {
        let size = size.clamp(1, LEN_SHIFT);
        let mask = (1u64 << size) - 1;
        let bits = ((self.0 & BITS) << 1 | u64::from(failed)) & mask;
        let len = (self.len() + 1).min(size);
        Self(bits | u64::from(len) << LEN_SHIFT)
    }

    /// Outcomes held.
    pub fn len(self) -> u32 {
        (self.0 >> LEN_SHIFT) as u32
    }

    /// Whether it holds no outcome.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// Failures among them.
    pub fn failures(self) -> u32 {
        (self.0 & BITS).count_ones()
    }
}

/// The circuit's state, with the data each state needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls pass.
    Closed,
    /// Calls are refused until `until`.
    Open {
        /// When the circuit opened.
        since: Instant,
        /// When the cooldown ends and the circuit becomes half-open.
        until: Instant,
    },
    /// Cooldown over: calls are still refused, the next probe decides.
    HalfOpen {
        /// When the circuit first opened, kept for health output.
        since: Instant,
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
    /// A closed circuit that opens when `threshold` (1 to [`MAX_THRESHOLD`]) of the last
    /// `2 × threshold` calls failed. `cooldown` is clamped to [`MAX_SUPERVISION_DELAY`], the
    /// bound settings are validated to, so that opening the circuit (`now + cooldown`) cannot
    /// overflow the clock whatever a program passes.
    pub fn new(threshold: u32, cooldown: Duration, half_open_retry: Duration) -> Self {
        Self {
            state: CircuitState::Closed,
            threshold: threshold.clamp(1, MAX_THRESHOLD),
            cooldown: cooldown.min(MAX_SUPERVISION_DELAY),
            half_open_retry,
        }
    }

    /// Failures in the window that open the circuit.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// How many of the last calls are weighed.
    pub fn window_size(&self) -> u32 {
        self.threshold * 2
    }

    /// Whether `window` holds enough failures to open the circuit.
    pub fn trips(&self, window: Window) -> bool {
        window.failures() >= self.threshold
    }

    /// The state as of `now`: an `Open` circuit whose cooldown has passed is `HalfOpen`, even
    /// before anyone calls [`Circuit::tick`].
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.state {
            CircuitState::Open { since, until } if now >= until => CircuitState::HalfOpen { since },
            s => s,
        }
    }

    /// The health name of the state as of `now`.
    pub fn status(&self, now: Instant) -> CircuitStatus {
        match self.state(now) {
            CircuitState::Closed => CircuitStatus::Closed,
            CircuitState::Open { .. } => CircuitStatus::Open,
            CircuitState::HalfOpen { .. } => CircuitStatus::HalfOpen,
        }
    }

    /// The state as last changed, without applying the end of a cooldown by the clock: what a
    /// transition goes from and to (an `Open` circuit read after its cooldown is still `Open`
    /// here until [`Circuit::tick`] makes it `HalfOpen`).
    pub fn recorded_status(&self) -> CircuitStatus {
        match self.state {
            CircuitState::Closed => CircuitStatus::Closed,
            CircuitState::Open { .. } => CircuitStatus::Open,
            CircuitState::HalfOpen { .. } => CircuitStatus::HalfOpen,
        }
    }

    /// Whether calls pass.
    pub fn is_closed(&self) -> bool {
        self.state == CircuitState::Closed
    }

    /// When the circuit opened, unless it is closed.
    pub fn opened_at(&self) -> Option<Instant> {
        match self.state {
            CircuitState::Closed => None,
            CircuitState::Open { since, .. } | CircuitState::HalfOpen { since } => Some(since),
        }
    }

    /// `Ok` when a call may pass; otherwise how long the caller should wait.
    pub fn check(&self, now: Instant) -> Result<(), Duration> {
        match self.state(now) {
            CircuitState::Closed => Ok(()),
            CircuitState::Open { until, .. } => Err(until - now),
            CircuitState::HalfOpen { .. } => Err(self.half_open_retry),
        }
    }

    /// Applies the cooldown's end; returns whether the state changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        let before = self.state;
        self.state = self.state(now);
        before != self.state
    }

    /// Opens a closed circuit for one cooldown; returns whether it changed.
    pub fn open(&mut self, now: Instant) -> bool {
        if self.state != CircuitState::Closed {
            return false;
        }
        self.state = CircuitState::Open {
            since: now,
            until: now + self.cooldown,
        };
        true
    }

    /// The actor's probe succeeded: the trial a half-open circuit waits for. An open circuit
    /// keeps its cooldown (the probe proves the connection, not that calls succeed again).
    pub fn probe_succeeded(&mut self, now: Instant) -> bool {
        self.tick(now);
        if let CircuitState::HalfOpen { .. } = self.state {
            self.state = CircuitState::Closed;
            return true;
        }
        false
    }

    /// The actor reconnected after losing its connection: whatever failed before came from
    /// the old one. Closes the circuit at once.
    pub fn reconnected(&mut self) -> bool {
        let changed = self.state != CircuitState::Closed;
        self.state = CircuitState::Closed;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit() -> Circuit {
        Circuit::new(3, Duration::from_secs(10), Duration::from_millis(500))
    }

    fn window(outcomes: &[bool], size: u32) -> Window {
        outcomes
            .iter()
            .fold(Window::default(), |w, failed| w.record(*failed, size))
    }

    #[test]
    fn a_window_keeps_the_last_outcomes() {
        let w = window(&[true, true, false, true], 6);
        assert_eq!((w.len(), w.failures()), (4, 3));
        // Older outcomes fall out once the window is full.
        let w = window(
            &[true, true, true, false, false, false, false, false, false],
            6,
        );
        assert_eq!((w.len(), w.failures()), (6, 0));
        let full = window(&[true; 100], 2 * MAX_THRESHOLD);
        assert_eq!((full.len(), full.failures()), (56, 56));
        assert_eq!(Window::from_bits(full.to_bits()), full);
    }

    #[test]
    fn failures_weighed_against_successes_open_it() {
        let c = circuit();
        // Three failures among the last six calls, however interleaved with successes: open.
        assert!(c.trips(window(&[true, false, true, false, false, true], 6)));
        // A success never wipes out the failures before it.
        assert!(!c.trips(window(&[true, true, false], 6)));
        assert!(c.trips(window(&[true, true, false, true], 6)));
        // Sporadic failures fall out of the window before they add up.
        let sporadic: Vec<bool> = (0..60).map(|i| i % 4 == 0).collect();
        assert!(!c.trips(window(&sporadic, 6)));
    }

    #[test]
    fn cooldown_leads_to_half_open_and_only_a_probe_closes() {
        let t = Instant::now();
        let mut c = circuit();
        assert!(c.open(t));
        assert!(!c.open(t), "opening an open circuit changes nothing");
        assert_eq!(
            c.check(t + Duration::from_secs(4)),
            Err(Duration::from_secs(6))
        );
        assert_eq!(c.opened_at(), Some(t));
        // The probe proves the connection, not that calls succeed: the cooldown stands.
        assert!(!c.probe_succeeded(t + Duration::from_secs(1)));
        assert_eq!(c.status(t + Duration::from_secs(1)), CircuitStatus::Open);

        let later = t + Duration::from_secs(10);
        assert_eq!(c.status(later), CircuitStatus::HalfOpen);
        assert_eq!(c.check(later), Err(Duration::from_millis(500)));
        assert!(c.probe_succeeded(later));
        assert_eq!(c.status(later), CircuitStatus::Closed);
        assert!(c.is_closed());
    }

    #[test]
    fn a_reconnect_closes_it_at_once() {
        let t = Instant::now();
        let mut c = circuit();
        c.open(t);
        assert!(c.reconnected());
        assert_eq!(c.check(t), Ok(()));
        assert!(!c.reconnected());
    }

    #[test]
    fn a_cooldown_too_long_for_the_clock_is_clamped_not_a_panic() {
        let t = Instant::now();
        let mut c = Circuit::new(1, Duration::MAX, Duration::from_millis(500));
        assert!(c.open(t));
        assert_eq!(c.check(t), Err(MAX_SUPERVISION_DELAY));
        assert_eq!(
            Circuit::new(1000, Duration::ZERO, Duration::ZERO).threshold(),
            MAX_THRESHOLD
        );
    }
}
