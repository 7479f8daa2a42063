//! [`Heartbeat`]: proof that every actor still drains its mailbox, for a service manager's
//! watchdog (the daemon pings systemd only after [`Warden::heartbeat`] succeeds).
//!
//! Each actor answers the message itself, in its handler, without touching a database: a
//! database outage never stops the answers (the actors keep running their backoff and
//! probes), while an actor whose mailbox no longer drains (a handler stuck in `ctx.wait`, a
//! blocked arbiter thread) does. Waiting for a database here would get warden restarted by
//! its watchdog during every outage, which is the opposite of what it is for.

use std::time::Duration;

use actix::prelude::*;

use crate::{connection::ConnectionActor, BreakerActor, HealthActor, Warden};

/// Answered at once by the actor that receives it.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Heartbeat;

impl<D: crate::connection::Driver> Handler<Heartbeat> for ConnectionActor<D> {
    type Result = ();

    fn handle(&mut self, _: Heartbeat, _: &mut Self::Context) {}
}

impl Handler<Heartbeat> for BreakerActor {
    type Result = ();

    fn handle(&mut self, _: Heartbeat, _: &mut Self::Context) {}
}

impl Handler<Heartbeat> for HealthActor {
    type Result = ();

    fn handle(&mut self, _: Heartbeat, _: &mut Self::Context) {}
}

/// Some actor did not answer a [`Heartbeat`] in time. Never transient from a caller's point
/// of view: it is warden that is stuck, not a database; a service manager should restart it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    /// These actors' mailboxes did not drain within the deadline.
    #[error("no heartbeat from the {} actor{} within {}ms", .actors.join(", "), if .actors.len() > 1 { "s" } else { "" }, .within.as_millis())]
    Unanswered {
        /// `neo4j`, `postgres`, `breaker`, `health`.
        actors: Vec<&'static str>,
        /// The deadline.
        within: Duration,
    },
    /// This actor is gone (shut down, or dead from a bug; [`Warden::fatal`] says which).
    #[error("the {actor} actor has stopped")]
    Stopped {
        /// Which actor.
        actor: &'static str,
    },
}

impl Warden {
    /// Sends a [`Heartbeat`] to all four actors at once and waits up to `within` for every
    /// answer. `Ok` means each mailbox drained within `within`; an `Unanswered` error names
    /// the actors that did not.
    pub async fn heartbeat(&self, within: Duration) -> Result<(), HeartbeatError> {
        let (neo4j, postgres, breaker, health) = futures_util::future::join4(
            self.neo4j.send(Heartbeat).timeout(within),
            self.postgres.send(Heartbeat).timeout(within),
            self.breaker.send(Heartbeat).timeout(within),
            self.health.send(Heartbeat).timeout(within),
        )
        .await;
        let mut unanswered = Vec::new();
        for (actor, answer) in [
            ("neo4j", neo4j),
            ("postgres", postgres),
            ("breaker", breaker),
            ("health", health),
        ] {
            match answer {
                Ok(()) => {}
                Err(MailboxError::Timeout) => unanswered.push(actor),
                Err(MailboxError::Closed) => return Err(HeartbeatError::Stopped { actor }),
            }
        }
        if unanswered.is_empty() {
            Ok(())
        } else {
            Err(HeartbeatError::Unanswered {
                actors: unanswered,
                within,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_names_every_silent_actor() {
        let one = HeartbeatError::Unanswered {
            actors: vec!["breaker"],
            within: Duration::from_millis(500),
        };
        assert_eq!(
            one.to_string(),
            "no heartbeat from the breaker actor within 500ms"
        );
        let two = HeartbeatError::Unanswered {
            actors: vec!["neo4j", "postgres"],
            within: Duration::from_millis(250),
        };
        assert_eq!(
            two.to_string(),
            "no heartbeat from the neo4j, postgres actors within 250ms"
        );
    }
}
