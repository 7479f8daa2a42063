//! Fault injection for tests, compiled in only with the `fault-injection` feature (which only
//! the workspace's dev-dependencies enable). A panic in an actix handler kills the actor and
//! its supervisor for good; these hooks cause one on purpose, so tests can check that warden
//! then shows the database `stopped` and the daemon exits non-zero instead of limping on.
//! `Stall` holds the actors' thread instead, so tests can tell what answers without it;
//! `StallMailbox` wedges one actor's mailbox while its thread and the other actors run on, as
//! a handler stuck on a future that never resolves would (what a watchdog must notice).

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

/// Stops the receiving actor from handling anything else (its mailbox, its timers) for
/// `duration`, or for good when `None`; the arbiter's thread and the other actors run on.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub struct StallMailbox {
    /// How long; `None`: for good.
    pub duration: Option<std::time::Duration>,
}

#[cfg(feature = "fault-injection")]
fn stall_mailbox<A>(msg: StallMailbox, ctx: &mut A::Context)
where
    A: actix::Actor<Context = actix::Context<A>>,
{
    use actix::AsyncContext;
    ctx.wait(actix::fut::wrap_future(async move {
        match msg.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    }));
}

#[cfg(feature = "fault-injection")]
impl<D: crate::connection::Driver> actix::Handler<StallMailbox>
    for crate::connection::ConnectionActor<D>
{
    type Result = ();

    fn handle(&mut self, msg: StallMailbox, ctx: &mut Self::Context) {
        stall_mailbox::<Self>(msg, ctx);
    }
}

#[cfg(feature = "fault-injection")]
impl actix::Handler<StallMailbox> for crate::BreakerActor {
    type Result = ();

    fn handle(&mut self, msg: StallMailbox, ctx: &mut Self::Context) {
        stall_mailbox::<Self>(msg, ctx);
    }
}

#[cfg(feature = "fault-injection")]
impl actix::Handler<StallMailbox> for crate::HealthActor {
    type Result = ();

    fn handle(&mut self, msg: StallMailbox, ctx: &mut Self::Context) {
        stall_mailbox::<Self>(msg, ctx);
    }
}

/// Reads the fault variables and, when set, injects that fault after its delay. Does nothing
/// without the `fault-injection` feature.
///
/// - `WARDEN_FAULT_CRASH=<neo4j|postgres|breaker|health>:<delay>` crashes that actor.
/// - `WARDEN_FAULT_STALL=<neo4j|postgres|breaker|health|arbiter>:<delay>[:<duration>]` stalls
///   that actor's mailbox (`StallMailbox`), or with `arbiter` holds the actors' whole thread
///   (`Stall`), for `duration` (for good without one).
pub fn arm_from_env(warden: &Warden) {
    #[cfg(feature = "fault-injection")]
    {
        if let Some((actor, delay, _)) = fault_spec("WARDEN_FAULT_CRASH") {
            tracing::warn!(database = actor.as_str(), ?delay, "fault injection armed");
            let neo4j = warden.neo4j.clone();
            let postgres = warden.postgres.clone();
            let breaker = warden.breaker.clone();
            let health = warden.health.clone();
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
        if let Some((actor, delay, duration)) = fault_spec("WARDEN_FAULT_STALL") {
            tracing::warn!(
                actor = actor.as_str(),
                ?delay,
                ?duration,
                "stall fault armed"
            );
            let neo4j = warden.neo4j.clone();
            let postgres = warden.postgres.clone();
            let breaker = warden.breaker.clone();
            let health = warden.health.clone();
            actix::spawn(async move {
                tokio::time::sleep(delay).await;
                let stall = StallMailbox { duration };
                match actor.as_str() {
                    "neo4j" => neo4j.do_send(stall),
                    "breaker" => breaker.do_send(stall),
                    "health" => health.do_send(stall),
                    "arbiter" => hold_arbiter(&postgres, duration),
                    _ => postgres.do_send(stall),
                }
            });
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = warden;
}

/// `<actor>:<delay>[:<duration>]` from the variable `name`.
#[cfg(feature = "fault-injection")]
fn fault_spec(name: &str) -> Option<(String, std::time::Duration, Option<std::time::Duration>)> {
    let spec = std::env::var(name).ok()?;
    let mut parts = spec.split(':');
    let actor = parts.next()?.to_owned();
    let delay = humantime::parse_duration(parts.next()?).ok()?;
    let duration = match parts.next() {
        Some(d) => Some(humantime::parse_duration(d).ok()?),
        None => None,
    };
    Some((actor, delay, duration))
}

/// Holds the actors' thread (through the PostgreSQL actor) for `duration`, or for good.
#[cfg(feature = "fault-injection")]
fn hold_arbiter(
    postgres: &actix::Addr<crate::PostgresActor>,
    duration: Option<std::time::Duration>,
) {
    let (entered, _) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    postgres.do_send(Stall {
        entered,
        release: release_rx,
    });
    match duration {
        Some(d) => {
            std::thread::spawn(move || {
                std::thread::sleep(d);
                let _ = release.send(());
            });
        }
        // Never released: the sender must outlive the process.
        None => std::mem::forget(release),
    }
}
