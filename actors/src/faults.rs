//! Fault injection for tests, compiled in only with the `fault-injection` feature (which only
//! the workspace's dev-dependencies enable). A panic in an actix handler kills the actor and
//! its supervisor for good; these hooks cause one on purpose, so tests can check that warden
//! then shows the database `stopped` and the daemon exits non-zero instead of limping on.
//! `Stall` holds the actors' thread instead, so tests can tell what answers without it.

use crate::Warden;

/// Panics inside the receiving database actor's handler.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct Crash;

#[cfg(feature = "fault-injection")]
impl<D: crate::connection::Driver> actix::Handler<Crash> for crate::connection::ConnectionActor<D> {
    type Result = ();

    fn handle(&mut self, _: Crash, _: &mut Self::Context) {
        panic!(
            "injected fault: the {} actor was told to crash",
            D::DATABASE
        );
    }
}

#[cfg(feature = "fault-injection")]
impl actix::Handler<Crash> for crate::BreakerActor {
    type Result = ();

    fn handle(&mut self, _: Crash, _: &mut Self::Context) {
        panic!("injected fault: the breaker actor was told to crash");
    }
}

#[cfg(feature = "fault-injection")]
impl actix::Handler<Crash> for crate::HealthActor {
    type Result = ();

    fn handle(&mut self, _: Crash, _: &mut Self::Context) {
        panic!("injected fault: the health actor was told to crash");
    }
}

/// Holds the receiving database actor's thread, and so the whole dedicated arbiter (both
/// database actors, the breaker, health), from the moment it says so on `entered` until
/// `release` gets a message or is disconnected.
#[cfg(feature = "fault-injection")]
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct Stall {
    /// Told once the arbiter is held.
    pub entered: std::sync::mpsc::Sender<()>,
    /// Waited on while the arbiter is held.
    pub release: std::sync::mpsc::Receiver<()>,
}

#[cfg(feature = "fault-injection")]
impl<D: crate::connection::Driver> actix::Handler<Stall> for crate::connection::ConnectionActor<D> {
    type Result = ();

    fn handle(&mut self, stall: Stall, _: &mut Self::Context) {
        let _ = stall.entered.send(());
        let _ = stall.release.recv();
    }
}

/// Reads `WARDEN_FAULT_CRASH=<neo4j|postgres|breaker|health>:<delay>` and, when set, crashes
/// that actor after the delay. Does nothing without the `fault-injection` feature.
pub fn arm_from_env(warden: &Warden) {
    #[cfg(feature = "fault-injection")]
    {
        let Ok(spec) = std::env::var("WARDEN_FAULT_CRASH") else {
            return;
        };
        let Some((database, delay)) = spec.split_once(':') else {
            return;
        };
        let Ok(delay) = humantime::parse_duration(delay) else {
            return;
        };
        tracing::warn!(database, ?delay, "fault injection armed");
        let neo4j = warden.neo4j.clone();
        let postgres = warden.postgres.clone();
        let breaker = warden.breaker.clone();
        let health = warden.health.clone();
        let actor = database.to_owned();
        actix::spawn(async move {
            tokio::time::sleep(delay).await;
            match actor.as_str() {
                "neo4j" => neo4j.do_send(Crash),
                "breaker" => breaker.do_send(Crash),
                "health" => health.do_send(Crash),
                _ => postgres.do_send(Crash),
            }
        });
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = warden;
}
