//! What a database plugs into the supervised actor: connect, probe, close and the time
//! bounds, and the slot its shared pool lives in.

use std::time::Duration;

use futures_util::future::LocalBoxFuture;

use crate::error::{Database, WardenError};

/// The time bounds a driver runs under.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Bound on one connect, the first round trip (and any one-time setup) included.
    pub connect_timeout: Duration,
    /// Bound on one call, retries included.
    pub query_timeout: Duration,
    /// Time between probes (and between heartbeats to health while not connected).
    pub probe_interval: Duration,
    /// Bound on one probe.
    pub probe_timeout: Duration,
    /// Calls that may hold a pooled connection at once: the pool's size.
    pub call_slots: usize,
}

/// A connect in progress: the shared client and this generation's probe connection.
pub type ConnectFuture<C, P> = LocalBoxFuture<'static, Result<(C, P), WardenError>>;

/// What a database needs to plug into [`ConnectionActor`](super::ConnectionActor).
pub trait Driver: Unpin + 'static {
    /// What calls get: a cheap handle to the shared pool.
    type Client: Clone + Unpin + 'static;
    /// One generation's own probe connection; dropped when the generation ends.
    type Probe: Unpin + 'static;
    /// Which database this driver talks to.
    const DATABASE: Database;

    /// The driver's time bounds. `connect_timeout` may be longer while one-time setup (such as
    /// migrations) is still pending.
    fn timings(&self) -> Timings;

    /// Opens a probe connection with one TCP attempt and proves it with one round trip
    /// (drivers connect lazily, so creating a client alone proves nothing); creates the shared
    /// pool the first time. The caller bounds it by `connect_timeout`.
    fn connect(&self) -> ConnectFuture<Self::Client, Self::Probe>;

    /// One liveness round trip on the probe connection. The caller bounds it by
    /// `probe_timeout`.
    fn probe(&self, probe: &Self::Probe) -> LocalBoxFuture<'static, Result<(), WardenError>>;

    /// Closes the shared pool, at shutdown.
    fn close(&self) -> LocalBoxFuture<'static, ()>;
}

/// A shared pool that is created on the first successful connect and closed once, at
/// shutdown. Connect and close go through one lock, so a connect that finishes after shutdown
/// cannot open a pool that nobody would close.
pub(crate) struct PoolSlot<T>(std::sync::Mutex<Slot<T>>);

enum Slot<T> {
    Empty,
    Open(T),
    Closed,
}

impl<T: Clone> PoolSlot<T> {
    pub(crate) fn new() -> Self {
        Self(std::sync::Mutex::new(Slot::Empty))
    }

    /// The pool, opened by `open` the first time; `None` once closed.
    pub(crate) fn get_or_open(&self, open: impl FnOnce() -> T) -> Option<T> {
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*slot {
            Slot::Open(pool) => Some(pool.clone()),
            Slot::Closed => None,
            Slot::Empty => {
                let pool = open();
                *slot = Slot::Open(pool.clone());
                Some(pool)
            }
        }
    }

    /// The pool, if open, without opening it: for readers such as a metrics scrape (the lock
    /// is held for a clone, never across an await).
    pub(crate) fn peek(&self) -> Option<T> {
        match &*self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Slot::Open(pool) => Some(pool.clone()),
            Slot::Empty | Slot::Closed => None,
        }
    }

    /// Takes the pool out for closing; later connects get `None`.
    pub(crate) fn close(&self) -> Option<T> {
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match std::mem::replace(&mut *slot, Slot::Closed) {
            Slot::Open(pool) => Some(pool),
            Slot::Empty | Slot::Closed => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_slot_opens_once_and_stays_closed() {
        let slot = PoolSlot::new();
        assert_eq!(slot.peek(), None);
        assert_eq!(slot.get_or_open(|| 1), Some(1));
        assert_eq!(slot.get_or_open(|| 2), Some(1));
        assert_eq!(slot.peek(), Some(1));
        assert_eq!(slot.close(), Some(1));
        assert_eq!(slot.peek(), None);
        assert_eq!(slot.get_or_open(|| 3), None);
        assert_eq!(slot.close(), None);
    }
}
