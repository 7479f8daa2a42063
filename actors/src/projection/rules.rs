//! The projector's pure rules: what a failure costs an event, and how long a rejected event
//! waits. No clock, no database: unit tested here.

use std::time::Duration;

use crate::WardenError;

/// What becomes of the claimed events after a graph failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// An outage, a timeout, an open circuit, a commit whose outcome is unknown: release the
    /// lease, count nothing, and wait for the graph. Replaying is safe: every write is
    /// idempotent and guarded by the recording's version.
    Release,
    /// The graph (or the projector, reading the payload) refused the event for a reason that
    /// will not go away by itself: count an attempt.
    Reject,
}

/// Classifies a graph failure. Only a deterministic refusal of the statement counts: a
/// `Query` error the server does not call transient (`Neo.ClientError.*`, a type error), a
/// value that cannot be converted, a call warden refuses as malformed. Everything that says
/// the graph is unreachable, slow, overloaded or may have committed is an outage.
pub fn disposition(error: &WardenError) -> Disposition {
    match error {
        WardenError::Query {
            transient: false, ..
        }
        | WardenError::Conversion { .. }
        | WardenError::Usage { .. } => Disposition::Reject,
        WardenError::Query {
            transient: true, ..
        }
        | WardenError::CircuitOpen { .. }
        | WardenError::Unavailable { .. }
        | WardenError::Timeout { .. }
        | WardenError::Connection { .. }
        | WardenError::Authentication { .. }
        | WardenError::CommitOutcomeUnknown { .. }
        | WardenError::Stopped { .. }
        | WardenError::CallRuntimeGone { .. } => Disposition::Release,
    }
}

/// The first wait after a rejection; it doubles with every further one, up to the cap.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

/// What a rejection does to an event that had `attempts` before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// The new count.
    pub attempts: u32,
    /// The event turns `dead`: it stays, with its error, and blocks its recording until an
    /// operator re-drives it.
    pub dead: bool,
    /// How long it waits before the next try (`run_at = now() + this`).
    pub retry_after: Duration,
}

/// `attempts + 1`; dead at `max_attempts`; otherwise `FIRST_RETRY × 2^(attempts)`, capped.
pub fn rejection(attempts: u32, max_attempts: u32, cap: Duration) -> Rejection {
    let attempts = attempts.saturating_add(1);
    let doublings = attempts.saturating_sub(1).min(20);
    let retry_after = FIRST_RETRY.saturating_mul(1u32 << doublings).min(cap);
    Rejection {
        attempts,
        dead: attempts >= max_attempts,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Database;

    #[test]
    fn only_deterministic_refusals_count() {
        let db = Database::Neo4j;
        let rejected = [
            WardenError::Query {
                database: db,
                code: "Neo.ClientError.Statement.TypeError".into(),
                message: "map".into(),
                transient: false,
            },
            WardenError::Conversion {
                database: db,
                message: "x".into(),
            },
        ];
        for e in rejected {
            assert_eq!(disposition(&e), Disposition::Reject, "{e}");
        }
        let released = [
            WardenError::CircuitOpen {
                database: db,
                retry_after: Duration::from_secs(1),
            },
            WardenError::Unavailable {
                database: db,
                retry_after: Duration::from_secs(1),
            },
            WardenError::Timeout {
                database: db,
                phase: crate::TimeoutPhase::Query,
                after: Duration::from_secs(1),
            },
            WardenError::Connection {
                database: db,
                message: "reset".into(),
            },
            WardenError::CommitOutcomeUnknown {
                database: db,
                message: "eof".into(),
            },
            WardenError::Query {
                database: db,
                code: "Neo.TransientError.Transaction.DeadlockDetected".into(),
                message: "deadlock".into(),
                transient: true,
            },
        ];
        for e in released {
            assert_eq!(disposition(&e), Disposition::Release, "{e}");
        }
    }

    #[test]
    fn rejections_back_off_exponentially_to_the_cap_and_die_at_the_limit() {
        let cap = Duration::from_secs(600);
        let r = rejection(0, 3, cap);
        assert_eq!((r.attempts, r.dead, r.retry_after), (1, false, FIRST_RETRY));
        let r = rejection(1, 3, cap);
        assert_eq!(
            (r.attempts, r.dead, r.retry_after),
            (2, false, FIRST_RETRY * 2)
        );
        let r = rejection(2, 3, cap);
        assert_eq!((r.attempts, r.dead), (3, true));
        assert_eq!(rejection(15, 100, cap).retry_after, cap);
        assert_eq!(
            rejection(u32::MAX, 100, cap).attempts,
            u32::MAX,
            "saturates instead of wrapping"
        );
        assert_eq!(
            rejection(0, 12, Duration::from_millis(50)).retry_after,
            Duration::from_millis(50)
        );
    }
}
