//! Running under systemd (`Type=notify`): the notify protocol of sd_notify(3), through the
//! `sd-notify` crate (one datagram per message to `$NOTIFY_SOCKET`; nothing at all without it).
//!
//! - `READY=1` once the HTTP listener is bound and the actors are started, never waiting for a
//!   database: warden starts degraded by design, and a unit waiting for a database would be
//!   killed by `TimeoutStartSec` during an outage at boot.
//! - `STATUS=` one line from the health view ([`status`]), on every change, at most once a
//!   second, so `systemctl status warden` tells the story.
//! - `WATCHDOG=1` every `WATCHDOG_USEC / 2`, only after a liveness check passed
//!   ([`watchdog`]): a wedged actor or event loop stops the pings and systemd restarts warden;
//!   a database outage does not. No `WATCHDOG_USEC` (or a `WATCHDOG_PID` naming another
//!   process, which the crate checks): no pings.
//! - `STOPPING=1` when the drain starts, then `EXTEND_TIMEOUT_USEC` every second while a drain
//!   or `warden migrate` runs, so that a `shutdown_timeout` or a migration longer than the
//!   unit's `TimeoutStopSec`/`TimeoutStartSec` is not cut short, while a wedged one still is
//!   within [`EXTEND_BY`].
//!
//! `NOTIFY_SOCKET` is left in the environment (unsetting it is `unsafe` in a threaded
//! process, and the workspace forbids `unsafe`): warden starts no child processes that could
//! inherit it. An abstract socket (`@name`) is not supported by sd-notify 0.5; systemd itself
//! hands out a path.

pub mod status;
pub mod watchdog;

use std::{
    cell::{Cell, RefCell},
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use chrono::Utc;
use sd_notify::NotifyState;
use warden_actors::{HealthHandle, HealthView, Warden};

use self::status::StatusThrottle;

/// How often the health view is looked at for a `STATUS=` change: well under the throttle's
/// one second, and a view costs microseconds.
const STATUS_POLL: Duration = Duration::from_millis(250);

/// How often `EXTEND_TIMEOUT_USEC` is repeated while a drain or a migration runs.
pub const EXTEND_EVERY: Duration = Duration::from_secs(1);

/// How far each `EXTEND_TIMEOUT_USEC` pushes systemd's timeout: a few repetitions, so that a
/// busy machine delaying one tick does not get warden killed, and a stuck drain still is soon.
pub const EXTEND_BY: Duration = Duration::from_secs(5);

/// The service manager, as far as warden talks to it.
pub struct Systemd {
    /// `NOTIFY_SOCKET` is set: a service manager listens.
    notify: bool,
    /// `WATCHDOG_USEC`, when systemd wants pings from this process.
    watchdog: Option<Duration>,
    throttle: RefCell<StatusThrottle>,
    /// A failed send was logged already (the next ones would say the same).
    send_failed: Cell<bool>,
}

impl Systemd {
    /// What the environment systemd set says: `NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`.
    pub fn from_env() -> Self {
        let notify = std::env::var_os("NOTIFY_SOCKET").is_some();
        // `watchdog_enabled` applies WATCHDOG_PID: a value naming another process means the
        // variables were inherited, not meant for us. Zero would mean "ping constantly".
        let watchdog = sd_notify::watchdog_enabled().filter(|d| !d.is_zero());
        Self {
            notify,
            watchdog: watchdog.filter(|_| notify),
            throttle: RefCell::default(),
            send_failed: Cell::new(false),
        }
    }

    /// Whether anyone listens.
    pub fn enabled(&self) -> bool {
        self.notify
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.notify {
            return;
        }
        match sd_notify::notify(states) {
            Ok(()) => {
                if self.send_failed.replace(false) {
                    tracing::info!("systemd notifications go through again");
                }
            }
            Err(error) => {
                if !self.send_failed.replace(true) {
                    tracing::warn!(%error, "cannot notify systemd (NOTIFY_SOCKET)");
                }
            }
        }
    }

    /// `READY=1`, with the first `STATUS=`.
    pub fn ready(&self, view: &HealthView) {
        if !self.notify {
            return;
        }
        let line = status::render(view, Utc::now());
        let text = line.text.clone();
        let _ = self.throttle.borrow_mut().offer(line, Instant::now());
        self.send(&[NotifyState::Ready, NotifyState::Status(&text)]);
        tracing::info!(
            watchdog_ms = self.watchdog.map(|d| d.as_millis() as u64),
            "told systemd warden is ready"
        );
    }

    /// A `STATUS=` line of the daemon's own (exiting, migrating), outside the throttle.
    pub fn status(&self, text: &str) {
        self.send(&[NotifyState::Status(text)]);
    }

    /// `STOPPING=1`, with a status line saying why.
    pub fn stopping(&self, why: &str) {
        let text = format!("stopping ({why}): draining calls in flight");
        self.send(&[NotifyState::Stopping, NotifyState::Status(&text)]);
    }

    /// Runs `work`, repeating `EXTEND_TIMEOUT_USEC` every [`EXTEND_EVERY`] (the first at once)
    /// while it runs.
    pub async fn extend_while<F: Future>(&self, work: F) -> F::Output {
        if !self.notify {
            return work.await;
        }
        let usec = u32::try_from(EXTEND_BY.as_micros()).unwrap_or(u32::MAX);
        // The first before `work` is polled at all: in a `select!` with a tick due at once, a
        // `work` that is ready at once (nothing in flight to drain) won half the time and no
        // extension was sent.
        self.send(&[NotifyState::ExtendTimeoutUsec(usec)]);
        let start = tokio::time::Instant::now() + EXTEND_EVERY;
        let mut ticks = tokio::time::interval_at(start, EXTEND_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = ticks.tick() => self.send(&[NotifyState::ExtendTimeoutUsec(usec)]),
            }
        }
    }

    /// Sends `STATUS=` changes and watchdog pings for as long as it is polled; never returns.
    /// `http` is where the health server listens (its first address).
    pub async fn supervise(
        &self,
        warden: &Warden,
        health: HealthHandle,
        http: Option<SocketAddr>,
    ) -> Infallible {
        if !self.notify {
            return std::future::pending().await;
        }
        let statuses = async {
            let mut poll = tokio::time::interval(STATUS_POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                poll.tick().await;
                let line = status::render(&health.view(), Utc::now());
                let send = self.throttle.borrow_mut().offer(line, Instant::now());
                if let Some(text) = send {
                    self.send(&[NotifyState::Status(&text)]);
                }
            }
        };
        let pings = async {
            let (Some(timeout), Some(http)) = (self.watchdog, http) else {
                return std::future::pending::<Infallible>().await;
            };
            let (every, within) = watchdog::cadence(timeout);
            let http = watchdog::probe_address(http);
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut withheld = false;
            loop {
                ticks.tick().await;
                match watchdog::check(warden, http, within).await {
                    Ok(()) => {
                        self.send(&[NotifyState::Watchdog]);
                        if std::mem::take(&mut withheld) {
                            tracing::info!("watchdog pings resumed");
                        }
                    }
                    Err(error) => {
                        withheld = true;
                        tracing::warn!(%error, "watchdog ping withheld: systemd restarts warden if this goes on");
                    }
                }
            }
        };
        tokio::join!(statuses, pings).1
    }
}
