//! [`DeathGuard`]: the fatal signal for actors that have no lifecycle of their own to mark an
//! orderly end (the breaker and health).
//!
//! A panic in an actix handler kills that actor and leaves the rest running. For the breaker
//! that would freeze every circuit as it was (a half-open circuit refuses every call for
//! ever); for health, a snapshot that never changes again. Neither can recover by itself, so
//! the guard fires the same signal as a dead database actor, and the daemon exits 70 for its
//! service manager to restart it. An orderly stop sets `stopping` first.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use crate::connection::FatalSender;

/// Held by an actor; fires `fatal` when dropped, unless warden is stopping in order.
pub(crate) struct DeathGuard {
    actor: &'static str,
    fatal: FatalSender,
    stopping: Arc<AtomicBool>,
}

impl DeathGuard {
    pub(crate) fn new(actor: &'static str, fatal: FatalSender, stopping: Arc<AtomicBool>) -> Self {
        Self {
            actor,
            fatal,
            stopping,
        }
    }
}

impl Drop for DeathGuard {
    fn drop(&mut self) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let reason = if std::thread::panicking() {
            format!("{} actor panicked", self.actor)
        } else {
            format!("{} actor stopped unexpectedly", self.actor)
        };
        tracing::error!(actor = self.actor, "{reason}");
        self.fatal.send_replace(Some(reason));
    }
}
