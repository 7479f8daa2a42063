//! The one-line `STATUS=` systemd shows in `systemctl status`, made from the health view, and
//! the throttle that sends it on every change but at most once a [`STATUS_MIN_GAP`].
//!
//! Pure: no socket, no clock of its own, so the rules are unit tested.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use warden_actors::{
    circuit::CircuitStatus,
    health::{ComponentHealth, ComponentStatus},
    Database, HealthView,
};

/// The shortest time between two `STATUS=` messages. A database flapping many times a
/// second must not turn into as many datagrams; the last line is always sent once the gap
/// is over, so `systemctl status` never stays behind for longer than this.
pub const STATUS_MIN_GAP: Duration = Duration::from_secs(1);

/// What `STATUS=` says, and what decides whether it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    /// The states shown, without the countdown to the next attempt: a countdown ticking down
    /// is not a change worth a message.
    pub key: String,
    /// The line itself, e.g. `postgres: connected · neo4j: backoff, retry in 4s, circuit open`.
    pub text: String,
}

/// The order databases are named in: the one most applications depend on first.
const ORDER: [Database; 2] = [Database::Postgres, Database::Neo4j];

/// The line for `view`, with countdowns counted from `now`.
pub fn render(view: &HealthView, now: DateTime<Utc>) -> StatusLine {
    let mut key = Vec::new();
    let mut text = Vec::new();
    for db in ORDER {
        let Some(c) = view.components.get(&db) else {
            continue;
        };
        let (k, t) = component(db, c, now);
        key.push(k);
        text.push(t);
    }
    StatusLine {
        key: key.join(" · "),
        text: text.join(" · "),
    }
}

/// One database's part: (without countdown, with it).
fn component(db: Database, c: &ComponentHealth, now: DateTime<Utc>) -> (String, String) {
    let state = match c.status {
        ComponentStatus::Connecting => "connecting",
        ComponentStatus::Connected => "connected",
        ComponentStatus::Backoff => "backoff",
        ComponentStatus::Stale => "stale (no report from its actor)",
        ComponentStatus::Stopped => "stopped",
    };
    let circuit = match c.circuit.state {
        CircuitStatus::Closed => "",
        CircuitStatus::Open => ", circuit open",
        CircuitStatus::HalfOpen => ", circuit half-open",
    };
    let key = format!("{db}: {state}{circuit}");
    let retry = match (c.status, c.next_attempt_at) {
        (ComponentStatus::Backoff, Some(at)) => {
            // Rounded up: "retry in 0s" while an attempt is still ahead would read as "now".
            let ms = (at - now).num_milliseconds().max(0);
            format!(", retry in {}s", (ms + 999) / 1000)
        }
        _ => String::new(),
    };
    (key, format!("{db}: {state}{retry}{circuit}"))
}

/// Decides when a status line goes out: on every change of its key, at most once per
/// [`STATUS_MIN_GAP`], and the latest line once a held-back change's gap is over.
#[derive(Debug, Default)]
pub struct StatusThrottle {
    /// The key of the last line sent, and when.
    sent: Option<(String, Instant)>,
}

impl StatusThrottle {
    /// Offers the current line at `now`; returns it when it should be sent now.
    pub fn offer(&mut self, line: StatusLine, now: Instant) -> Option<String> {
        match &self.sent {
            Some((key, _)) if *key == line.key => None,
            Some((_, at)) if now.saturating_duration_since(*at) < STATUS_MIN_GAP => None,
            _ => {
                self.sent = Some((line.key, now));
                Some(line.text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use warden_actors::health::CircuitHealth;

    use super::*;

    fn component(status: ComponentStatus, circuit: CircuitStatus) -> ComponentHealth {
        ComponentHealth {
            status,
            healthy: status == ComponentStatus::Connected && circuit == CircuitStatus::Closed,
            latency_ms: None,
            last_ok_at: None,
            last_error: None,
            consecutive_failures: 0,
            restarts: 0,
            next_attempt_at: None,
            circuit: CircuitHealth {
                state: circuit,
                recent_failures: 0,
                window: 10,
                threshold: 5,
                opened_at: None,
                retry_after_ms: None,
            },
            reason: None,
        }
    }

    fn view(pg: ComponentHealth, graph: ComponentHealth) -> HealthView {
        HealthView {
            components: BTreeMap::from([(Database::Postgres, pg), (Database::Neo4j, graph)]),
            graph_sync: None,
        }
    }

    #[test]
    fn the_line_names_each_database_its_state_its_next_attempt_and_its_circuit() {
        let now = Utc::now();
        let mut graph = component(ComponentStatus::Backoff, CircuitStatus::Open);
        graph.next_attempt_at = Some(now + chrono::Duration::milliseconds(3_400));
        let line = render(
            &view(
                component(ComponentStatus::Connected, CircuitStatus::Closed),
                graph,
            ),
            now,
        );
        assert_eq!(
            line.text,
            "postgres: connected · neo4j: backoff, retry in 4s, circuit open"
        );
        assert_eq!(
            line.key,
            "postgres: connected · neo4j: backoff, circuit open"
        );

        let stale = render(
            &view(
                component(ComponentStatus::Stale, CircuitStatus::HalfOpen),
                component(ComponentStatus::Stopped, CircuitStatus::Closed),
            ),
            now,
        );
        assert_eq!(
            stale.text,
            "postgres: stale (no report from its actor), circuit half-open · neo4j: stopped"
        );
    }

    #[test]
    fn a_countdown_alone_is_no_change() {
        let now = Utc::now();
        let at = |secs| {
            let mut graph = component(ComponentStatus::Backoff, CircuitStatus::Closed);
            graph.next_attempt_at = Some(now + chrono::Duration::seconds(secs));
            render(
                &view(
                    component(ComponentStatus::Connected, CircuitStatus::Closed),
                    graph,
                ),
                now,
            )
        };
        let mut throttle = StatusThrottle::default();
        let t0 = Instant::now();
        assert!(throttle.offer(at(8), t0).is_some());
        assert_eq!(throttle.offer(at(4), t0 + Duration::from_secs(4)), None);
    }

    #[test]
    fn changes_are_sent_at_most_once_a_second_and_the_latest_is_never_lost() {
        let line = |key: &str| StatusLine {
            key: key.into(),
            text: format!("{key}!"),
        };
        let mut throttle = StatusThrottle::default();
        let t0 = Instant::now();
        assert_eq!(throttle.offer(line("a"), t0).as_deref(), Some("a!"));
        // Same state: nothing, however long after.
        assert_eq!(throttle.offer(line("a"), t0 + Duration::from_secs(5)), None);
        // A change within the gap is held back, not dropped...
        let t1 = t0 + Duration::from_secs(6);
        assert_eq!(throttle.offer(line("b"), t1).as_deref(), Some("b!"));
        assert_eq!(
            throttle.offer(line("c"), t1 + Duration::from_millis(300)),
            None
        );
        assert_eq!(
            throttle.offer(line("d"), t1 + Duration::from_millis(600)),
            None
        );
        // ...and the latest one goes out when the gap is over.
        assert_eq!(
            throttle.offer(line("d"), t1 + STATUS_MIN_GAP).as_deref(),
            Some("d!")
        );
        // Back to the state last sent before the gap ended: nothing to say.
        let t2 = t1 + STATUS_MIN_GAP + Duration::from_millis(100);
        assert_eq!(throttle.offer(line("d"), t2), None);
    }
}
